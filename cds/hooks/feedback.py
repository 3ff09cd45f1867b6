"""The feedback endpoint's body (CDS Hooks 2.0 "Feedback"), checked and made storable.

``{"feedback": [ {card, outcome, acceptedSuggestions?, overrideReason?, outcomeTimestamp} ]}``:
``outcome`` is ``accepted`` (then ``acceptedSuggestions`` is required) or ``overridden``
(optionally with ``overrideReason.reason``, a Coding, and ``overrideReason.userComment``).
Every card must have been issued by this service; the whole body is stored or nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from cds.hooks.cards import OVERRIDE_REASONS
from cds.hooks.errors import BadHookRequest, UnknownCard
from cds.hooks.store import as_utc, issued_cards

OUTCOMES = ("accepted", "overridden")
_DISPLAY = dict(OVERRIDE_REASONS)
#: Longest override display stored (the column's length) and longest user comment read.
MAX_DISPLAY = 300
MAX_COMMENT = 4000
#: Longest card uuid accepted (the column's length).
MAX_CARD_ID = 64


def _timestamp(value: Any, where: str) -> dt.datetime:
    if not isinstance(value, str) or "T" not in value:
        raise BadHookRequest(f"{where}.outcomeTimestamp must be an RFC 3339 date-time")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadHookRequest(f"{where}.outcomeTimestamp must be an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise BadHookRequest(f"{where}.outcomeTimestamp needs a time zone (UTC 'Z')")
    try:
        return as_utc(parsed)
    except OverflowError:
        raise BadHookRequest(f"{where}.outcomeTimestamp is out of range") from None


def _accepted(item: dict[str, Any], where: str) -> list[str]:
    value = item.get("acceptedSuggestions")
    if not isinstance(value, list) or not value:
        raise BadHookRequest(f"{where}.acceptedSuggestions is required for outcome 'accepted'")
    ids = []
    for i, s in enumerate(value):
        sid = s.get("id") if isinstance(s, dict) else None
        if not isinstance(sid, str) or not sid:
            raise BadHookRequest(f"{where}.acceptedSuggestions[{i}].id must be a string")
        ids.append(sid)
    return ids


def _override(
    item: dict[str, Any], where: str, own_system: str
) -> tuple[str | None, str | None, str | None]:
    value = item.get("overrideReason")
    if value is None:
        return None, None, None
    if not isinstance(value, dict):
        raise BadHookRequest(f"{where}.overrideReason must be an object")
    comment = value.get("userComment")
    if comment is not None and not isinstance(comment, str):
        raise BadHookRequest(f"{where}.overrideReason.userComment must be a string")
    if comment is not None and len(comment) > MAX_COMMENT:
        raise BadHookRequest(
            f"{where}.overrideReason.userComment is longer than {MAX_COMMENT} characters"
        )
    reason = value.get("reason")
    if reason is None:
        return None, None, comment
    if not isinstance(reason, dict):
        raise BadHookRequest(f"{where}.overrideReason.reason must be a Coding")
    code, system = reason.get("code"), reason.get("system")
    if not isinstance(code, str) or not code or not isinstance(system, str) or not system:
        raise BadHookRequest(f"{where}.overrideReason.reason needs code and system")
    display = reason.get("display")
    if isinstance(display, str) and len(display) > MAX_DISPLAY:
        raise BadHookRequest(
            f"{where}.overrideReason.reason.display is longer than {MAX_DISPLAY} characters"
        )
    if not isinstance(display, str) or not display:
        display = _DISPLAY.get(code) if system == own_system else None
    stored_code = code if system == own_system else f"{system}|{code}"
    return stored_code[:100], (display or None), comment


def parse_feedback(
    body: Any, service_id: str, session: Session, override_system: str
) -> list[dict[str, Any]]:
    """Validated rows for :class:`cds.db.models.CardFeedback`; raises 400/404 errors.

    ``override_system`` is the system of the service's own override reasons (their code is
    stored alone; any other system's as ``system|code``).
    """
    if not isinstance(body, dict) or not isinstance(body.get("feedback"), list):
        raise BadHookRequest("the body must be an object with a 'feedback' array")
    items = body["feedback"]
    if not items:
        raise BadHookRequest("feedback must not be empty")
    rows: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"feedback[{i}]"
        if not isinstance(item, dict):
            raise BadHookRequest(f"{where} must be an object")
        card = item.get("card")
        if not isinstance(card, str) or not card or len(card) > MAX_CARD_ID:
            raise BadHookRequest(f"{where}.card must be the card's uuid")
        outcome = item.get("outcome")
        if outcome not in OUTCOMES:
            raise BadHookRequest(f"{where}.outcome must be 'accepted' or 'overridden'")
        when = _timestamp(item.get("outcomeTimestamp"), where)
        accepted = _accepted(item, where) if outcome == "accepted" else []
        code, display, comment = (
            _override(item, where, override_system)
            if outcome == "overridden"
            else (
                None,
                None,
                None,
            )
        )
        rows.append(
            {
                "service_id": service_id,
                "card_uuid": card,
                "outcome": outcome,
                "override_reason_code": code,
                "override_reason_display": display,
                "override_comment": comment,
                "accepted_suggestions": accepted,
                "outcome_timestamp": when,
            }
        )
    issued = issued_cards(session, [r["card_uuid"] for r in rows])
    for r in rows:
        card = issued.get(r["card_uuid"])
        if card is None:
            raise UnknownCard(f"card {r['card_uuid']} was not issued by this server")
        if card.service_id != service_id:
            raise BadHookRequest(
                f"card {r['card_uuid']} was issued by service {card.service_id}, not {service_id}"
            )
        r["patient_fhir_id"] = card.patient_fhir_id
    return rows
