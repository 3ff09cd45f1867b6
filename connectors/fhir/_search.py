"""The subset of FHIR search that the NDJSON folder evaluates for ``search:`` cohorts.

A query is ``[Type?]name=value&...`` with FHIR semantics (parameters AND-ed, commas in a
value OR-ed).  ``Type`` is ``Patient`` (the default), ``Condition`` or ``Encounter``; for
the latter two the cohort is the patients having at least one matching resource.

Supported parameters:

- Patient: ``_id``, ``gender``, ``birthdate`` (prefixes eq/gt/ge/lt/le), ``identifier``
  (``[system|]value``), ``active``, and reverse chaining
  ``_has:Condition:patient:<param>`` / ``_has:Encounter:patient:<param>`` (``subject``
  works in place of ``patient``); each ``_has`` is evaluated on its own, as FHIR says.
- Condition: ``code`` (``[system|]code``; ``code:below`` matches code prefixes, e.g.
  ICD-10 ``I50`` below which ``I50.22`` lies), ``clinical-status``,
  ``verification-status``, ``recorded-date``, ``onset-date``.
- Encounter: ``date`` (the encounter's period; ``ge2026-11-01`` = ongoing or discharged on
  or after that day), ``class``, ``status``, ``type``.
- ``_count``, ``_sort``, ``_elements`` and ``_summary`` are ignored (they shape results,
  not membership).

Anything else raises :class:`Unsupported` naming the parameter.  Dates are absolute; the
application expands ``{as_of-30d}``-style placeholders before calling a source.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from urllib.parse import parse_qsl

IGNORED = frozenset({"_count", "_sort", "_elements", "_summary", "_format"})
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le")

Predicate = Callable[[dict[str, Any]], bool]


class Unsupported(ValueError):
    """The query uses something the folder cannot evaluate."""


class _Folder(Protocol):
    def cohort_patient_ids(self, cohort: str) -> list[str]: ...
    def patient_json(self, patient_id: str) -> dict[str, Any]: ...
    def patient_resources(self, patient_id: str, rtype: str) -> Iterable[dict[str, Any]]: ...


# -- value helpers -----------------------------------------------------------------------


def _date_range(value: str, *, what: str) -> tuple[dt.date, dt.date]:
    """The first and last day a (possibly partial) FHIR date covers."""
    try:
        if len(value) == 4:
            return dt.date(int(value), 1, 1), dt.date(int(value), 12, 31)
        if len(value) == 7:
            y, m = int(value[:4]), int(value[5:7])
            first = dt.date(y, m, 1)
            return first, dt.date(y + m // 12, m % 12 + 1, 1) - dt.timedelta(days=1)
        day = dt.date.fromisoformat(value[:10])
        return day, day
    except ValueError:
        raise Unsupported(f"{what}: {value!r} is not a FHIR date") from None


def _date_pred(
    value: str, name: str, get: Callable[[dict[str, Any]], tuple[str | None, str | None]]
) -> Predicate:
    prefix = value[:2] if value[:2] in _PREFIXES else "eq"
    raw = value[2:] if value[:2] in _PREFIXES else value
    lo, hi = _date_range(raw, what=name)

    def pred(res: dict[str, Any]) -> bool:
        start_s, end_s = get(res)
        if start_s is None and end_s is None:
            return False
        start = _date_range(start_s, what=name)[0] if start_s else dt.date.min
        end = _date_range(end_s, what=name)[1] if end_s else dt.date.max
        if prefix == "ge":
            return end >= lo
        if prefix == "gt":
            return end > hi
        if prefix == "le":
            return start <= hi
        if prefix == "lt":
            return start < lo
        if prefix == "ne":
            return not (lo <= start and end <= hi)
        return lo <= start and end <= hi

    return pred


def _token_match(codings: Iterable[dict[str, Any]], value: str, *, below: bool) -> bool:
    for alt in value.split(","):
        system, code = alt.split("|", 1) if "|" in alt else (None, alt)
        for c in codings:
            if system is not None and (c.get("system") or "") != system:
                continue
            have = str(c.get("code") or "")
            if have == code or (below and have.replace(".", "").startswith(code.replace(".", ""))):
                return True
    return False


def _codings(element: Any) -> list[dict[str, Any]]:
    if isinstance(element, list):
        return [c for e in element for c in _codings(e)]
    if isinstance(element, dict):
        if "coding" in element:
            return list(element.get("coding") or [])
        if "code" in element:
            return [element]
    return []


def _period(res: dict[str, Any]) -> tuple[str | None, str | None]:
    p = res.get("period") or {}
    return p.get("start"), p.get("end")


def _single(key: str) -> Callable[[dict[str, Any]], tuple[str | None, str | None]]:
    def get(res: dict[str, Any]) -> tuple[str | None, str | None]:
        v = res.get(key)
        return (v, v) if isinstance(v, str) else (None, None)

    return get


# -- per-type predicates -----------------------------------------------------------------


def _condition_pred(name: str, value: str) -> Predicate:
    base, _, modifier = name.partition(":")
    if base == "code" and modifier in ("", "below"):
        return lambda r: _token_match(_codings(r.get("code")), value, below=modifier == "below")
    if modifier:
        raise Unsupported(f"Condition search parameter '{name}' is not supported")
    if base in ("clinical-status", "verification-status"):
        key = "clinicalStatus" if base == "clinical-status" else "verificationStatus"
        return lambda r: _token_match(_codings(r.get(key)), value, below=False)
    if base == "recorded-date":
        return _date_pred(value, name, _single("recordedDate"))
    if base == "onset-date":
        return _date_pred(value, name, _single("onsetDateTime"))
    raise Unsupported(
        f"Condition search parameter '{name}' is not supported by the NDJSON folder "
        "(supported: code, code:below, clinical-status, verification-status, recorded-date, "
        "onset-date)"
    )


def _encounter_pred(name: str, value: str) -> Predicate:
    if name == "date":
        return _date_pred(value, name, _period)
    if name == "class":
        return lambda r: _token_match(_codings(r.get("class")), value, below=False)
    if name == "type":
        return lambda r: _token_match(_codings(r.get("type")), value, below=False)
    if name == "status":
        return lambda r: (r.get("status") or "") in value.split(",")
    raise Unsupported(
        f"Encounter search parameter '{name}' is not supported by the NDJSON folder "
        "(supported: date, class, type, status)"
    )


def _patient_pred(name: str, value: str) -> Predicate:
    if name == "_id":
        return lambda r: r.get("id") in value.split(",")
    if name == "gender":
        return lambda r: (r.get("gender") or "") in value.split(",")
    if name == "active":
        want = value.lower() == "true"
        return lambda r: bool(r.get("active", True)) == want
    if name == "birthdate":
        return _date_pred(value, name, _single("birthDate"))
    if name == "identifier":

        def ident(r: dict[str, Any]) -> bool:
            ids = [
                {"system": i.get("system"), "code": i.get("value")}
                for i in r.get("identifier") or []
            ]
            return _token_match(ids, value, below=False)

        return ident
    raise Unsupported(
        f"Patient search parameter '{name}' is not supported by the NDJSON folder "
        "(supported: _id, gender, birthdate, identifier, active, _has:Condition:patient:*, "
        "_has:Encounter:patient:*)"
    )


_TYPE_PREDS = {"Condition": _condition_pred, "Encounter": _encounter_pred}


def run(folder: _Folder, query: str) -> list[str]:
    """Patient ids matching ``query`` (see the module docstring), in folder order."""
    rtype, _, qs = query.partition("?") if "?" in query else ("Patient", "", query)
    rtype = rtype.strip() or "Patient"
    params = parse_qsl(qs, keep_blank_values=True)
    if not params:
        raise Unsupported(f"search query {query!r} has no parameters")
    patient_preds: list[Predicate] = []
    # each entry: (resource type, predicates that must hold for one resource)
    has_preds: list[tuple[str, list[Predicate]]] = []
    if rtype in _TYPE_PREDS:
        preds = [_TYPE_PREDS[rtype](n, v) for n, v in params if n not in IGNORED]
        has_preds.append((rtype, preds))
    elif rtype == "Patient":
        for name, value in params:
            if name in IGNORED:
                continue
            if name.startswith("_has:"):
                parts = name.split(":", 3)
                if len(parts) != 4 or parts[1] not in _TYPE_PREDS:
                    raise Unsupported(
                        f"search parameter '{name}': only _has:Condition:patient:<param> and "
                        "_has:Encounter:patient:<param> are supported by the NDJSON folder"
                    )
                if parts[2] not in ("patient", "subject"):
                    raise Unsupported(f"search parameter '{name}': use :patient: or :subject:")
                has_preds.append((parts[1], [_TYPE_PREDS[parts[1]](parts[3], value)]))
            else:
                patient_preds.append(_patient_pred(name, value))
    else:
        raise Unsupported(
            f"search on {rtype} is not supported by the NDJSON folder "
            "(use Patient, Condition or Encounter)"
        )
    out = []
    for pid in folder.cohort_patient_ids("all"):
        if patient_preds:
            pat = folder.patient_json(pid)
            if not all(p(pat) for p in patient_preds):
                continue
        ok = True
        for htype, preds in has_preds:
            if not any(all(p(res) for p in preds) for res in folder.patient_resources(pid, htype)):
                ok = False
                break
        if ok:
            out.append(pid)
    return out
