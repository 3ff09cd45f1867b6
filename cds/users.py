"""Local accounts of the alert inbox (argon2id password hashes)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from cds.db.models import ROLES, User
from cds.errors import UsageError

_hasher = PasswordHasher()
MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def add_user(session: Session, username: str, role: str, password: str) -> User:
    """Create a user, or raise :class:`UsageError` naming what is wrong."""
    if role not in ROLES:
        raise UsageError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not username or len(username) > 100 or not username.isprintable():
        raise UsageError("user name must be 1-100 printable characters")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UsageError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise UsageError(f"user {username!r} already exists")
    user = User(username=username, role=role, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user
