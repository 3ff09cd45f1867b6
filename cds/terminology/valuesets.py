"""The value sets in force: shipped expansions, or the cached ones of a terminology server.

See the package docstring for the matching rules.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cds.config import Settings

log = logging.getLogger("mprtm.terminology")

SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
#: code systems read as ICD-10 (WHO, ICD-10-CM, national modifications)
ICD10_SYSTEMS = frozenset(
    {
        "http://hl7.org/fhir/sid/icd-10",
        "http://hl7.org/fhir/sid/icd-10-cm",
        "http://hl7.org/fhir/sid/icd-10-gm",
        "http://hl7.org/fhir/sid/icd-10-ca",
        "http://hl7.org/fhir/sid/icd-10-nl",
        "http://fhir.de/CodeSystem/bfarm/icd-10-gm",
        "urn:oid:2.16.840.1.113883.6.90",
        "urn:oid:2.16.840.1.113883.6.3",
    }
)
_FAMILY = {
    SNOMED: "snomed",
    "urn:oid:2.16.840.1.113883.6.96": "snomed",
    RXNORM: "rxnorm",
    "urn:oid:2.16.840.1.113883.6.88": "rxnorm",
    ATC: "atc",
    "urn:oid:2.16.840.1.113883.6.73": "atc",
}
#: families whose codes are hierarchical by prefix
_PREFIX_FAMILIES = frozenset({"icd10", "atc"})


def is_icd10(system: str) -> bool:
    return system in ICD10_SYSTEMS or "icd-10" in system.lower()


def family(system: str) -> str | None:
    """``snomed``, ``rxnorm``, ``icd10``, ``atc`` or None for a system no value set uses."""
    if system in _FAMILY:
        return _FAMILY[system]
    return "icd10" if is_icd10(system) else None


def _norm(fam: str, code: str) -> str:
    code = code.strip()
    return code.replace(".", "").upper() if fam in _PREFIX_FAMILIES else code


@dataclass(frozen=True)
class Terminology:
    """An index of value sets: (system, code) -> the names of the sets that hold it.

    Args:
        members: value set name (``cond_diabetes``, ``med_statin``) -> its (system, code)
            pairs.
        origin: value set name -> where its expansion came from (``shipped 2026.1`` or
            ``<server> <date>``).
    """

    members: Mapping[str, tuple[tuple[str, str], ...]]
    origin: Mapping[str, str] = field(default_factory=dict)
    _index: dict[tuple[str, str], frozenset[str]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        index: dict[tuple[str, str], set[str]] = {}
        for name, pairs in self.members.items():
            for system, code in pairs:
                fam = family(system)
                if fam is not None and code:
                    index.setdefault((fam, _norm(fam, code)), set()).add(name)
        self._index.update({k: frozenset(v) for k, v in index.items()})

    def names_for(self, system: str, code: str) -> frozenset[str] | None:
        """The value sets holding the code; empty when none does (not recognised); None
        when the system is not one the value sets use."""
        fam = family(system)
        if fam is None or not code:
            return None
        index = self._index
        key = _norm(fam, code)
        if fam not in _PREFIX_FAMILIES:
            return index.get((fam, key), frozenset())
        found: set[str] = set()
        for n in range(1, len(key) + 1):
            found |= index.get((fam, key[:n]), frozenset())
        return frozenset(found)

    def codes(self, name: str) -> tuple[tuple[str, str], ...]:
        return tuple(self.members.get(name, ()))


def _contains(items: Iterable[Any]) -> Iterable[tuple[str, str, str]]:
    """(system, code, display) of an expansion's ``contains``, nested ones included."""
    for c in items or []:
        if not isinstance(c, dict):
            continue
        if c.get("code") and c.get("system") and not c.get("abstract"):
            yield str(c["system"]), str(c["code"]), str(c.get("display", ""))
        yield from _contains(c.get("contains") or [])


def expansion_codes(valueset: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(system, code, display) of every concept in a ValueSet's expansion."""
    return list(_contains((valueset.get("expansion") or {}).get("contains") or []))


@cache
def shipped_valuesets() -> tuple[dict[str, Any], ...]:
    """The ValueSet resources of ``cds/data/valuesets/`` (sorted by id)."""
    folder = resources.files("cds.data").joinpath("valuesets")
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            out.append(json.loads(entry.read_text(encoding="utf-8")))
    return tuple(out)


@cache
def shipped_terminology() -> Terminology:
    members = {}
    origin = {}
    for vs in shipped_valuesets():
        members[str(vs["name"])] = tuple((s, c) for s, c, _ in expansion_codes(vs))
        origin[str(vs["name"])] = f"shipped {vs.get('version', '')}"
    return Terminology(members, origin)


_active: list[Terminology] = []


def active() -> Terminology:
    """The value sets in force: what :func:`use` installed, else the shipped ones."""
    return _active[-1] if _active else shipped_terminology()


def use(terminology: Terminology | None) -> None:
    """Put ``terminology`` in force for this process (None: back to the shipped sets)."""
    _active.clear()
    if terminology is not None:
        _active.append(terminology)


def activate(settings: Settings) -> Terminology:
    """Put the expansions cached by ``mprtm terminology refresh`` in force (each one
    replaces the shipped expansion of the same value set and version); the shipped sets
    where the database holds none or cannot be read."""
    from cds.terminology.store import cached_expansions

    cached = cached_expansions(settings.database.url)
    if not cached:
        use(None)
        return shipped_terminology()
    base = shipped_terminology()
    members = dict(base.members)
    origin = dict(base.origin)
    for vs in shipped_valuesets():
        hit = cached.get((str(vs["url"]), str(vs.get("version", ""))))
        if hit is not None:
            pairs, where = hit
            members[str(vs["name"])] = pairs
            origin[str(vs["name"])] = where
    terminology = Terminology(members, origin)
    use(terminology)
    return terminology
