"""Value sets: which codes set each condition flag and each medication class.

Every ``cond_<name>`` flag and every ``med_<class>`` class is defined by a FHIR ValueSet
in ``cds/data/valuesets/`` (id ``cond-<name>`` / ``med-<class>``) with its expansion; each
records its sources and their versions.  ``mprtm terminology refresh`` expands them again
through a terminology server and caches the result in the application database
(:mod:`cds.terminology.refresh`); :func:`activate` puts the cached expansions in force,
and without a cache the shipped expansions are used.

Matching (:class:`Terminology`):

- SNOMED CT and RxNorm: the code is in the expansion;
- ICD-10 (every national variant): the code, dots ignored, equals an expansion code or
  lies below one (``I48`` covers ``I48.91``);
- ATC: the code equals an expansion code or lies below one (``C07`` covers ``C07AB07``).

A code of one of these systems that no value set holds is *not recognised*; the mapping
lists it instead of dropping it silently.
"""

from cds.terminology.valuesets import (
    ATC,
    ICD10_SYSTEMS,
    RXNORM,
    SNOMED,
    Terminology,
    activate,
    active,
    is_icd10,
    shipped_terminology,
    shipped_valuesets,
    use,
)

__all__ = [
    "ATC",
    "ICD10_SYSTEMS",
    "RXNORM",
    "SNOMED",
    "Terminology",
    "activate",
    "active",
    "is_icd10",
    "shipped_terminology",
    "shipped_valuesets",
    "use",
]
