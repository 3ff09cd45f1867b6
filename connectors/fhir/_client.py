"""FHIR R4 REST interactions: capabilities, read, search with paging, and writes.

Write-back helpers (used for RiskAssessment and Device):

* :meth:`FhirRestClient.conditional_update` -- ``PUT Type?identifier=system|value``:
  creates the resource the first time and updates that same resource afterwards, so a
  rerun never duplicates.
* :meth:`FhirRestClient.conditional_create` -- ``POST`` with ``If-None-Exist``.
* :meth:`FhirRestClient.transaction` -- a transaction (all or nothing) or batch Bundle.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.resource import Resource

from connectors.errors import FhirError, FhirInvalidResource
from connectors.fhir._http import FhirHttp, outcome_text
from connectors.fhir._parse import parse_resource, to_json

log = logging.getLogger("connectors.fhir.rest")


@dataclass
class SearchPage:
    """Resources of a search (all pages), typed, plus warnings for what was skipped."""

    matches: list[Resource] = field(default_factory=list)
    included: list[Resource] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pages: int = 0


@dataclass(frozen=True)
class EntryResult:
    """Outcome of one transaction/batch entry: HTTP status, ``Type/id`` and diagnostics."""

    status: int
    location: str
    diagnostics: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class WriteResult:
    """Outcome of a conditional write: the resource's id and whether it was created."""

    resource_type: str
    id: str
    created: bool


class FhirRestClient:
    """Typed REST interactions over one :class:`FhirHttp`.

    Args:
        http: the configured HTTP layer (auth, retries, concurrency).
        page_size: ``_count`` asked for on searches.
    """

    def __init__(self, http: FhirHttp, *, page_size: int = 200) -> None:
        self.http = http
        self.page_size = page_size
        self._capabilities: CapabilityStatement | None = None
        self.searchable: dict[str, set[str]] = {}

    # -------------------------------------------------------------- capabilities
    def capabilities(self) -> CapabilityStatement:
        """Read and keep the CapabilityStatement (``GET [base]/metadata``).

        Raises:
            FhirError: the server does not answer one, or it is not FHIR R4 (4.0.x).
        """
        if self._capabilities is None:
            data = self.http.get_json("metadata", what="GET metadata (CapabilityStatement)")
            resource, warning = parse_resource(data, "CapabilityStatement")
            if resource is None:
                raise FhirError(f"server metadata is not a usable CapabilityStatement: {warning}")
            assert isinstance(resource, CapabilityStatement)
            version = str(resource.fhirVersion or "")
            if not version.startswith("4."):
                raise FhirError(f"server speaks FHIR {version or '?'}; FHIR R4 (4.0.x) is needed")
            for rest in resource.rest or []:
                if rest.mode != "server":
                    continue
                for res in rest.resource or []:
                    codes = {str(i.code) for i in res.interaction or []}
                    self.searchable[str(res.type)] = codes
            self._capabilities = resource
            log.info(
                "FHIR server %s: FHIR %s, %d resource types",
                self.http.base_url,
                version,
                len(self.searchable),
            )
        return self._capabilities

    def supports(self, resource_type: str, interaction: str = "search-type") -> bool:
        """Whether the CapabilityStatement lists ``interaction`` for ``resource_type``
        (True when the statement lists no resources at all)."""
        self.capabilities()
        if not self.searchable:
            return True
        return interaction in self.searchable.get(resource_type, set())

    # -------------------------------------------------------------- read / search
    def read(self, resource_type: str, rid: str) -> Resource:
        """``GET Type/id`` as an R4B object.

        Raises:
            ResourceNotFound: 404/410.
            FhirInvalidResource: the answer does not parse as that resource type.
        """
        what = f"{resource_type}/{rid}"
        data = self.http.get_json(f"{resource_type}/{rid}", what=f"read {what}")
        resource, warning = parse_resource(data, resource_type)
        if resource is None:
            raise FhirInvalidResource(warning or f"{what}: does not parse")
        return resource

    def iter_search_pages(
        self, resource_type: str, params: Mapping[str, str | list[str]], *, what: str = ""
    ) -> Iterator[dict[str, Any]]:
        """Raw searchset Bundles, first page then every ``next`` link (internal)."""
        query: dict[str, str | list[str]] = {"_count": str(self.page_size), **params}
        label = what or f"{resource_type} search"
        bundle = self.http.get_json(resource_type, params=query, what=label)
        seen: set[str] = set()
        while True:
            if bundle.get("resourceType") != "Bundle":
                raise FhirError(f"{label}: answer is a {bundle.get('resourceType')}, not a Bundle")
            yield bundle
            nxt = next(
                (ln.get("url") for ln in bundle.get("link") or [] if ln.get("relation") == "next"),
                None,
            )
            if not nxt:
                return
            if nxt in seen:
                raise FhirError(f"{label}: the server's next link repeats itself")
            seen.add(nxt)
            bundle = self.http.get_json(nxt, what=f"{label} (page {len(seen) + 1})")

    def search(
        self, resource_type: str, params: Mapping[str, str | list[str]], *, what: str = ""
    ) -> SearchPage:
        """Every match of a search over all pages, as R4B objects; entries that do not
        parse are skipped with a warning naming their type/id."""
        result = SearchPage()
        for bundle in self.iter_search_pages(resource_type, params, what=what):
            result.pages += 1
            for entry in bundle.get("entry") or []:
                mode = (entry.get("search") or {}).get("mode", "match")
                data = entry.get("resource")
                if mode == "outcome":
                    text = outcome_text(data)
                    if text:
                        result.warnings.append(f"{resource_type} search: server said {text}")
                    continue
                expected = resource_type if mode == "match" else None
                resource, warning = parse_resource(data, expected)
                if resource is None:
                    result.warnings.append(str(warning))
                    log.warning("%s", warning)
                elif mode == "match":
                    result.matches.append(resource)
                else:
                    result.included.append(resource)
        return result

    def count(self, resource_type: str, params: Mapping[str, str] | None = None) -> int:
        """Number of matches (``_summary=count``)."""
        query = {**(params or {}), "_summary": "count"}
        bundle = self.http.get_json(resource_type, params=query, what=f"{resource_type} count")
        total = bundle.get("total")
        if not isinstance(total, int):
            raise FhirError(f"{resource_type} count: server gave no Bundle.total")
        return total

    def search_ids(self, resource_type: str, params: Mapping[str, str]) -> list[str]:
        """Logical ids of every match (``_elements=id`` keeps the pages small)."""
        ids: list[str] = []
        for bundle in self.iter_search_pages(resource_type, {**params, "_elements": "id"}):
            for entry in bundle.get("entry") or []:
                res = entry.get("resource") or {}
                if (entry.get("search") or {}).get("mode", "match") != "match":
                    continue
                if res.get("resourceType") == resource_type and res.get("id"):
                    ids.append(str(res["id"]))
        return ids

    # -------------------------------------------------------------- writes
    def conditional_update(
        self, resource: Resource | Mapping[str, Any], system: str, value: str
    ) -> WriteResult:
        """``PUT Type?identifier=system|value``: create once, then update the same one.

        Raises:
            FhirInvalidResource: the server rejected the resource (its diagnostics quoted).
            FhirError: 412 when several resources already carry that identifier.
        """
        body = to_json(resource)
        body.pop("id", None)
        rtype = str(body.get("resourceType"))
        resp = self.http.request(
            "PUT",
            rtype,
            params={"identifier": f"{system}|{value}"},
            json_body=body,
            what=f"conditional update {rtype} identifier {value}",
        )
        data = self.http.decode(resp, f"{rtype} conditional update")
        return WriteResult(rtype, str(data.get("id", "")), resp.status_code == 201)

    def conditional_create(
        self, resource: Resource | Mapping[str, Any], if_none_exist: str
    ) -> WriteResult:
        """``POST Type`` with ``If-None-Exist: <query>``; an existing match is kept as is."""
        body = to_json(resource)
        rtype = str(body.get("resourceType"))
        resp = self.http.request(
            "POST",
            rtype,
            json_body=body,
            headers={"If-None-Exist": if_none_exist},
            what=f"conditional create {rtype}",
        )
        data = self.http.decode(resp, f"{rtype} conditional create")
        return WriteResult(rtype, str(data.get("id", "")), resp.status_code == 201)

    def transaction(
        self,
        entries: Sequence[Mapping[str, Any]],
        *,
        kind: str = "transaction",
    ) -> list[EntryResult]:
        """Send a ``transaction`` (all or nothing) or ``batch`` Bundle.

        ``entries`` are Bundle.entry objects: ``{"fullUrl": "urn:uuid:...", "resource":
        <R4B object or dict>, "request": {"method": "PUT", "url": "Type?identifier=..."}}``.
        Returns one :class:`EntryResult` per entry.  A rejected transaction raises
        :class:`FhirInvalidResource` with the server's diagnostics.
        """
        if kind not in ("transaction", "batch"):
            raise ValueError("kind must be 'transaction' or 'batch'")
        bundle_entries = []
        for entry in entries:
            e = dict(entry)
            if "resource" in e and e["resource"] is not None:
                e["resource"] = to_json(e["resource"])
            bundle_entries.append(e)
        bundle = {"resourceType": "Bundle", "type": kind, "entry": bundle_entries}
        resp = self.http.request(
            "POST", "", json_body=bundle, what=f"{kind} of {len(bundle_entries)} entries"
        )
        data = self.http.decode(resp, kind)
        results = []
        for e in data.get("entry") or []:
            response = e.get("response") or {}
            status_text = str(response.get("status", "0")).strip()
            try:
                status = int(status_text.split()[0])
            except (ValueError, IndexError):
                status = 0
            results.append(
                EntryResult(
                    status=status,
                    location=str(response.get("location", "")),
                    diagnostics=outcome_text(response.get("outcome")),
                )
            )
        if len(results) != len(bundle_entries):
            raise FhirError(
                f"{kind}: server answered {len(results)} entries for {len(bundle_entries)}"
            )
        return results
