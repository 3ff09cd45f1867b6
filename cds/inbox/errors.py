"""Errors of the alert inbox (the web boundary of ``cds.inbox``).

Messages name alert ids, user names and URLs only, never patient data.
"""

from __future__ import annotations

from cds.errors import MprtmError


class InboxError(MprtmError):
    """Base class of errors raised by the alert inbox."""


class ActionError(InboxError):
    """An alert action cannot be applied (bad input or a state that forbids it).

    Args:
        message: what is wrong, naming the alert id and the field.
        status: the HTTP status a view answers with (400 bad input, 404 unknown alert,
            409 the alert's state forbids the action).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class SmartLaunchError(InboxError):
    """A SMART App Launch step failed (unknown issuer, bad state, token exchange refused).

    Args:
        message: which step failed and why, naming the issuer URL, never a token.
        status: the HTTP status the launch view answers with.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
