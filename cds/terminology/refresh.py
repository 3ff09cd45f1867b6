"""``ValueSet/$expand`` through a terminology server; expansions cached in the database.

Each shipped ValueSet is sent without its expansion as the ``valueSet`` parameter of
``POST [terminology.url]/ValueSet/$expand`` (FHIR R4 operation, "expand a value set
given in the request"), so the server need not know our value sets: it evaluates their
``compose`` (explicit concepts and SNOMED CT ``is-a`` filters) against the code-system
versions it holds.  Large expansions are paged with ``offset``/``count``.  A value set the
server cannot expand keeps its previous expansion (cached or shipped) and is reported.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import httpx

from cds.config import Settings
from cds.errors import TerminologyError
from cds.terminology.store import store_expansion
from cds.terminology.valuesets import expansion_codes, shipped_valuesets

#: concepts asked for per $expand request
PAGE = 1000
#: pages at most per value set
MAX_PAGES = 200


@dataclass(frozen=True)
class RefreshResult:
    """One value set's refresh: its id, codes shipped, codes now cached, or the error."""

    valueset_id: str
    shipped: int
    expanded: int
    error: str = ""


def _parameters(vs: dict[str, Any], offset: int) -> dict[str, Any]:
    body = copy.deepcopy(vs)
    body.pop("expansion", None)
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "valueSet", "resource": body},
            {"name": "offset", "valueInteger": offset},
            {"name": "count", "valueInteger": PAGE},
        ],
    }


def _diagnostics(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        texts = [
            str(i.get("diagnostics") or (i.get("details") or {}).get("text") or "")
            for i in body.get("issue") or []
            if isinstance(i, dict)
        ]
        return "; ".join(t for t in texts if t)[:300]
    return ""


def expand(client: httpx.Client, vs: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Every (system, code, display) of ``vs`` as the server expands it.

    Raises:
        TerminologyError: an HTTP error, a body that is not a ValueSet with an
            expansion, or an empty expansion; the message names the value set.
    """
    vid = str(vs.get("id"))
    codes: list[tuple[str, str, str]] = []
    for _ in range(MAX_PAGES):
        try:
            resp = client.post(
                "ValueSet/$expand",
                json=_parameters(vs, len(codes)),
                headers={
                    "Accept": "application/fhir+json",
                    "Content-Type": "application/fhir+json",
                },
            )
        except httpx.HTTPError as exc:
            raise TerminologyError(f"ValueSet/{vid}: {type(exc).__name__}") from None
        if resp.status_code >= 400:
            why = _diagnostics(resp)
            raise TerminologyError(
                f"ValueSet/{vid}: $expand answered HTTP {resp.status_code}"
                + (f" ({why})" if why else "")
            )
        try:
            body = resp.json()
        except ValueError:
            raise TerminologyError(f"ValueSet/{vid}: $expand did not answer JSON") from None
        if not isinstance(body, dict) or body.get("resourceType") != "ValueSet":
            raise TerminologyError(f"ValueSet/{vid}: $expand did not answer a ValueSet")
        page = expansion_codes(body)
        codes += page
        total = (body.get("expansion") or {}).get("total")
        if not page or not isinstance(total, int) or len(codes) >= total:
            break
    if not codes:
        raise TerminologyError(f"ValueSet/{vid}: the server's expansion is empty")
    return list(dict.fromkeys(codes))


def refresh(
    settings: Settings, *, transport: httpx.BaseTransport | None = None
) -> list[RefreshResult]:
    """Expand every shipped value set through ``terminology.url`` and cache the results.

    Raises:
        TerminologyError: ``terminology.url`` is not set.
    """
    base = settings.terminology.url.rstrip("/")
    if not base:
        raise TerminologyError("terminology.url is not set; the shipped expansions apply")
    results = []
    with httpx.Client(
        base_url=base + "/", timeout=settings.terminology.timeout_s, transport=transport
    ) as client:
        for vs in shipped_valuesets():
            shipped = len(expansion_codes(vs))
            try:
                codes = expand(client, vs)
            except TerminologyError as exc:
                results.append(RefreshResult(str(vs["id"]), shipped, 0, str(exc)))
                continue
            n = store_expansion(
                settings.database.url,
                url=str(vs["url"]),
                version=str(vs.get("version", "")),
                server=base,
                codes=codes,
            )
            results.append(RefreshResult(str(vs["id"]), shipped, n))
    return results
