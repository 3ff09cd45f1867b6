"""Cross-site request forgery protection for the inbox's forms.

One random token per session (the synchronizer-token pattern).  Every form carries it
in a hidden ``csrf_token`` field (or a script sends it as the ``X-CSRF-Token`` header);
:func:`protect` refuses every state-changing request whose token is missing or differs,
comparing in constant time.  The token is replaced at log-in and log-out, so a token
seen before authentication is worthless afterwards.  SameSite=Lax session cookies are a
second, independent layer.
"""

from __future__ import annotations

import hmac
import secrets

from flask import abort, request, session

SESSION_KEY = "_csrf"
FORM_FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def csrf_token() -> str:
    """The session's token, created on first use (also a Jinja global)."""
    token = session.get(SESSION_KEY)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session[SESSION_KEY] = token
    return token


def rotate() -> str:
    """Replace the session's token (call after the session's identity changes)."""
    session.pop(SESSION_KEY, None)
    return csrf_token()


def is_valid(sent: str | None) -> bool:
    """Whether ``sent`` equals the session's token (constant-time comparison)."""
    expected = session.get(SESSION_KEY)
    if not isinstance(expected, str) or not expected or not sent:
        return False
    return hmac.compare_digest(sent.encode("utf-8"), expected.encode("utf-8"))


def protect() -> None:
    """``before_request`` hook: abort with 400 when an unsafe request lacks a valid token."""
    if request.method in SAFE_METHODS:
        return
    sent = request.form.get(FORM_FIELD) or request.headers.get(HEADER)
    if not is_valid(sent):
        abort(
            400,
            description="The form's security token is missing or has expired. "
            "Reload the page and try again.",
        )
