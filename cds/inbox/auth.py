"""Log-in, log-out, the demo log-in and the role rules of the inbox.

A request is made by a :class:`Principal`: a local account (``clinician`` or ``admin``,
argon2id password hashes from :mod:`cds.users`) or a clinician launched from the EHR by
SMART App Launch, whose session is bound to the one patient of the launch.  Sessions are
Flask's signed cookies (HttpOnly, SameSite=Lax, Secure when ``server.secure_cookies``)
and last at most :data:`SESSION_HOURS`; the account is re-read on every request, so a
deactivated user or a changed role takes effect at once.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from cds.db.models import LoginFailure, User
from cds.inbox import csrf
from cds.inbox._db import db, safe_next, settings
from cds.users import hash_password, verify_password

log = logging.getLogger("mprtm.inbox.auth")

SESSION_HOURS = 12
DEMO_USER = "demo-clinician"
_DUMMY_HASH = hash_password(secrets.token_hex(16))

F = TypeVar("F", bound=Callable[..., Any])

bp = Blueprint("auth", __name__, url_prefix="/inbox")


@dataclass(frozen=True)
class Principal:
    """Who makes the request.

    Args:
        name: the actor written into the audit trail (user name, or ``smart:<fhirUser>``).
        role: ``clinician`` or ``admin``.
        user_id: the local account's id; None for an EHR-launched session.
        patient_scope: the FHIR id of the only patient an EHR-launched session may see.
    """

    name: str
    role: str
    user_id: int | None = None
    patient_scope: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin" and self.patient_scope is None

    def may_see(self, patient_fhir_id: str) -> bool:
        return self.patient_scope is None or self.patient_scope == patient_fhir_id


class LoginThrottle:
    """Failed log-ins counted per user name in a sliding window, in the application
    database (table ``login_failures``), so that every server process counts the same
    failures.  Names are compared case-insensitively and stored only as a hash (people
    sometimes type their password into the name field).

    Args:
        sessions: the application's session factory.
        max_failures: failures within ``window_s`` after which the name is locked.
        window_s: length of the window in seconds.
    """

    def __init__(
        self, sessions: sessionmaker[Session], max_failures: int = 5, window_s: float = 900.0
    ) -> None:
        if max_failures < 1 or window_s <= 0:
            raise ValueError("max_failures must be >= 1 and window_s > 0")
        self._sessions = sessions
        self.max_failures = max_failures
        self.window_s = window_s

    @staticmethod
    def _key(username: str) -> str:
        return hashlib.sha256(username.strip().casefold()[:100].encode()).hexdigest()

    @contextmanager
    def _session(self, session: Session | None) -> Iterator[Session]:
        if session is not None:
            yield session
            return
        with self._sessions() as own:
            yield own

    def _recent(self, session: Session, key: str, now: float) -> list[float]:
        return list(
            session.scalars(
                select(LoginFailure.at)
                .where(LoginFailure.name_key == key, LoginFailure.at > now - self.window_s)
                .order_by(LoginFailure.at.desc())
            )
        )

    def _wait(self, recent: list[float], now: float) -> float:
        if len(recent) < self.max_failures:
            return 0.0
        return max(0.0, self.window_s - (now - recent[self.max_failures - 1]))

    def locked_for(
        self, username: str, now: float | None = None, session: Session | None = None
    ) -> float:
        """Seconds until ``username`` may try again (0 when it may try now)."""
        now = time.time() if now is None else now
        with self._session(session) as s:
            return self._wait(self._recent(s, self._key(username), now), now)

    def attempt(
        self, username: str, now: float | None = None, session: Session | None = None
    ) -> float:
        """Count a log-in attempt *before* its password is checked.

        The attempt is stored as a failure and committed first, then the failures in the
        window are counted: of any number of concurrent attempts (threads or processes),
        at most ``max_failures`` see a count within the limit and get their password
        checked.  Returns 0 when the password may be checked (call :meth:`success` if it
        is right; the stored row then counts as the failure it is if it is wrong), else
        the seconds to wait (the attempt is then not counted).
        """
        now = time.time() if now is None else now
        key = self._key(username)
        with self._session(session) as s:
            row = LoginFailure(name_key=key, at=now)
            s.add(row)
            s.execute(delete(LoginFailure).where(LoginFailure.at < now - self.window_s))
            s.commit()
            recent = self._recent(s, key, now)
            if len(recent) <= self.max_failures:
                return 0.0
            s.delete(row)
            s.commit()
            return self._wait([t for t in recent if t != now] or recent, now)

    def failure(
        self, username: str, now: float | None = None, session: Session | None = None
    ) -> None:
        now = time.time() if now is None else now
        with self._session(session) as s:
            s.add(LoginFailure(name_key=self._key(username), at=now))
            # failures older than the window count for nobody: drop them as we go
            s.execute(delete(LoginFailure).where(LoginFailure.at < now - self.window_s))
            s.commit()

    def success(self, username: str, session: Session | None = None) -> None:
        with self._session(session) as s:
            s.execute(delete(LoginFailure).where(LoginFailure.name_key == self._key(username)))
            s.commit()


def throttle() -> LoginThrottle:
    return current_app.extensions["mprtm.login_throttle"]


def load_principal() -> None:
    """``before_request`` hook: set ``g.principal`` from the session (or None)."""
    g.principal = None
    auth_at = session.get("auth_at")
    if not isinstance(auth_at, int | float) or time.time() - auth_at > SESSION_HOURS * 3600:
        if "auth_at" in session:
            session.clear()
        return
    uid = session.get("uid")
    smart = session.get("smart")
    if isinstance(uid, int):
        user = db().get(User, uid)
        if user is None or not user.active:
            session.clear()
            return
        g.principal = Principal(name=user.username, role=user.role, user_id=user.id)
    elif isinstance(smart, dict) and isinstance(smart.get("patient"), str):
        actor = str(smart.get("actor") or "ehr-user")
        g.principal = Principal(
            name=f"smart:{actor}"[:100], role="clinician", patient_scope=smart["patient"]
        )


def start_session(*, uid: int | None = None, smart: dict[str, str] | None = None) -> None:
    """A fresh session for a new identity (old contents, CSRF token included, dropped)."""
    session.clear()
    session.permanent = True
    session["auth_at"] = time.time()
    if uid is not None:
        session["uid"] = uid
    if smart is not None:
        session["smart"] = smart
    csrf.rotate()


def current() -> Principal:
    principal: Principal | None = g.get("principal")
    if principal is None:  # the decorators run first; this is a programming error
        abort(401)
    return principal


def login_required(view: F) -> F:
    """Any signed-in principal; else redirect to the log-in page (back here afterwards)."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.get("principal") is None:
            target = request.full_path if request.method == "GET" else request.path
            return redirect(url_for("auth.login", next=target.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def account_required(view: F) -> F:
    """A local account (the whole inbox); an EHR-launched session gets 403."""

    @login_required
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current().patient_scope is not None:
            abort(
                403,
                description="This session was opened from the EHR for one patient. "
                "Sign in with an inbox account to see the whole inbox.",
            )
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def admin_required(view: F) -> F:
    """The ``admin`` role; any other principal gets 403."""

    @login_required
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not current().is_admin:
            abort(403, description="This page is for administrators.")
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    nxt = safe_next(request.values.get("next"), url_for("inbox.index"))
    if request.method == "GET":
        if g.get("principal") is not None and g.principal.patient_scope is None:
            return redirect(nxt)
        return render_template("inbox/login.html", next=nxt, error=None)
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    s = db()  # one session for the whole log-in: a burst cannot exhaust the pool
    wait = throttle().attempt(username, session=s)
    if wait > 0:
        log.warning("log-in refused: too many failures for one user name")
        minutes = int(wait // 60) + 1
        error = f"Too many failed attempts for this user name. Try again in {minutes} min."
        return render_template("inbox/login.html", next=nxt, error=error, username=username), 429
    user = s.scalar(select(User).where(User.username == username, User.active.is_(True)))
    if user is None:
        verify_password(_DUMMY_HASH, password)  # same time whether the name exists or not
        ok = False
    else:
        ok = bool(password) and verify_password(user.password_hash, password)
    if not ok or user is None:  # the attempt stored above is the failure
        error = "Unknown user name or wrong password."
        return render_template("inbox/login.html", next=nxt, error=error, username=username), 401
    throttle().success(username, session=s)
    user.last_login = dt.datetime.now(dt.UTC)
    db().commit()
    start_session(uid=user.id)
    log.info("user %s signed in", user.id)
    return redirect(nxt)


@bp.post("/demo-login")
def demo_login() -> Any:
    """Sign in as the demo clinician without a password (only when ``server.demo_login``)."""
    if not settings().server.demo_login:
        abort(404)
    user = db().scalar(select(User).where(User.username == DEMO_USER))
    if user is None:
        user = User(
            username=DEMO_USER,
            role="clinician",
            active=True,
            password_hash=hash_password(secrets.token_urlsafe(32)),  # no usable password
        )
        db().add(user)
    if not user.active:
        abort(403, description="The demo account is deactivated.")
    user.last_login = dt.datetime.now(dt.UTC)
    db().commit()
    start_session(uid=user.id)
    return redirect(safe_next(request.form.get("next"), url_for("inbox.index")))


@bp.post("/logout")
def logout() -> Any:
    session.clear()
    csrf.rotate()
    return redirect(url_for("auth.login"))
