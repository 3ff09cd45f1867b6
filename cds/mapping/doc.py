"""``docs/fhir-mapping.md`` generated from the clinical tables, so it never drifts.

Regenerate with ``mprtm mapping doc --out docs/fhir-mapping.md``; a test fails when the
committed file differs from :func:`render`.
"""

from __future__ import annotations

from typing import Any

from cds.clinical_tables import (
    condition_specs,
    drug_class_specs,
    feature_specs,
    nyha_answers,
    unit_synonyms,
)
from cds.mapping._written_doc import written_section
from cds.mapping.conditions import ACTIVE, ICD10_SYSTEMS
from cds.mapping.observations import ACCEPTED_STATUS
from cds.terminology import shipped_valuesets
from cds.terminology.valuesets import expansion_codes

_INTRO = """\
# FHIR to model inputs

This file is generated from `cds/data/*.csv` by `mprtm mapping doc --out
docs/fhir-mapping.md`; do not edit it by hand (a test checks it is current).

One patient becomes a `model.types.ModelInput` in `cds.pipeline.pull`: the FHIR source
returns the patient's resources (`connectors.fhir.base.PatientRecord`), the mapping
(`cds.mapping`) turns them into numeric features, flags and text, and the imaging step
picks the LGE series and turns it into an image volume.  `mprtm patient features
PATIENT_ID` shows the result for one patient, with the date and source id of every value.

## Observations: latest plausible value in a window

For each feature below, among the patient's Observations (and Observation components, so
a blood-pressure panel's systolic and diastolic parts count):

1. status must be one of: {statuses};
2. one of its codings has the system `http://loinc.org` (or none) and a LOINC code of the
   feature (the preferred code or an alternate);
3. its date (effectiveDateTime, effectiveInstant, effectivePeriod end/start, else issued)
   lies within `fhir.observation_window_days` (default 365) days before the as-of date
   and not after it; later values are ignored, so a past as-of date never sees the future;
4. its unit (the UCUM `code` when the system is UCUM, else the `unit` text; the synonyms
   table turns spellings such as `mmHg` into UCUM; a case-only difference is accepted
   when unambiguous) must be known for that LOINC code; the value is multiplied by the
   factor to the canonical unit.  An unknown unit drops the value with a warning naming
   the Observation and the unit;
5. the converted value must lie within the plausible range (inclusive); otherwise it is
   dropped with a warning naming the Observation.

The latest remaining value wins (ties: the later time, then the higher id).  A feature
with no value is absent from the model input (the model adds missingness indicators).

NYHA class (88020-3) is read from valueCodeableConcept (coded answers below, else the
text: "Class III", "NYHA II", "3"), valueInteger, valueQuantity or valueString.
"""

_CONDITIONS = """\
## Conditions: `cond_<name>` flags

Each flag is defined by a FHIR ValueSet, `cds/data/valuesets/cond-<name>.json`, with its
expansion and its sources (published VSAC value sets, the table's SNOMED CT roots with an
`is-a` filter, ICD-10 categories).  A Condition sets the flag when one of its codings is a
SNOMED CT code of the expansion, or an ICD-10 code at or below an ICD-10 code of the
expansion (dots ignored: `I48.91` and `I4891` lie below `I48`).  ICD-10 code systems:
{icd}, or any system whose URL contains `icd-10`.  `mprtm terminology refresh` expands the
value sets again through `[terminology] url` (every SNOMED CT descendant of the roots that
the server knows) and caches the result in the database; without it the shipped
expansions apply.  A present Condition coded in SNOMED CT or ICD-10 that no value set holds
is listed by `mprtm patient features` under "Codes not recognised".

It counts when its clinicalStatus is {active} (a missing clinicalStatus counts as
active), its verificationStatus is not entered-in-error or refuted, and its onset (or
recordedDate) is not after the as-of date.  Every flag is in the model input: 1.0 or 0.0.
"""

_MEDICATIONS = """\
## Medications: `med_<class>` flags and the medication text

A MedicationRequest counts when it is `active` or `on-hold` and was authored on or before
the as-of date, or is `completed`/`stopped` with a dispenseRequest.validityPeriod that
covers the as-of date.  A MedicationStatement counts when it is `active` or `intended`
with an effective date on or before the as-of date (and a period not ended before it), or
`completed`/`stopped` with an effectivePeriod that covers the as-of date.

The medication's name is medicationCodeableConcept.text, else a coding display (RxNorm
first); for medicationReference the contained or referenced Medication's code (or its
ingredients), else the reference's display.  A class is set by the codes first: an
RxNorm code (ingredient, SCD, SBD) in the class's value set `cds/data/valuesets/med-<class>.json`
(RxNorm codes of published VSAC medication value sets naming one of the class's
ingredients), or an ATC code at or below one of the class's ATC groups.  Only when no code
gives a class, one of the class's keywords in the name (case-insensitive) sets it; RxNorm
or ATC codes in no value set are listed as not recognised.  The text input starts with
`Medications: <name> (<dosage text>); ...` in alphabetical order (just the dosage text
when it already starts with the name).
"""

_REST = """\
## Notes

The `fhir.max_notes` (default 3) most recent DocumentReferences with status `current`
(or none) and a docStatus other than entered-in-error, dated (date, else context period)
on or before the as-of date and within `fhir.notes_window_days` (default 365), newest
first, appended to the text as `Note <date>: <text>`.  Attachments are read inline
(`data`), or by `url` (`Binary/<id>` or an absolute URL) from the FHIR server itself, in the
batch and in CDS Hooks calls (same origin as the FHIR server only, with its token, within the
request's time budget).  Content types: `text/plain` in any declared charset, `text/html`
and XHTML (reduced to text), `application/pdf` (text layer, via pypdf) and C-CDA documents
(`text/xml`, `application/xml`, `application/hl7-v3+xml`: the narrative `section/text`
blocks).  An attachment that cannot be read is a warning naming the DocumentReference.

## Demographics

`age`: completed years on the as-of date from Patient.birthDate (a partial date counts as
its first day; 0-120 plausible).  `sex_male`: 1.0 for gender male, 0.0 for female, absent
otherwise.

## Basis

The RiskAssessment basis lists `Patient/<id>`, then every Observation, Condition,
MedicationRequest/MedicationStatement and DocumentReference whose content reached the
model input, then the ImagingStudy of the LGE series when the record has it.

## LGE series and pixels

A series is LGE when its SeriesDescription or ProtocolName contains one of
`pacs.lge_patterns` and neither contains one of `pacs.exclude_patterns`
(case-insensitive substrings; localizers, scouts and cine are excluded by default).
The most recent study on or before the as-of date wins (`pacs.lge_max_age_days` > 0
limits its age), then the series with the most instances.  The DICOM PatientID searched
is the identifier of `pacs.patient_id_system`, else the MR-typed identifier, the other
identifiers, then the logical id.  Slices are ordered by ImagePositionPatient projected
on the normal of ImageOrientationPatient (InstanceNumber when either is missing);
pixels get RescaleSlope/Intercept, are padded to a square, resampled to the model's
size and scaled by the series' 1st-99th percentiles to [0, 1].

## How to add a code

- A lab or vital sign: add an alternate to the feature's `alternates` in
  `cds/data/features.csv` (`unit:factor` for another unit of the same LOINC code,
  `LOINC@unit:factor` for another LOINC code; value x factor = canonical value).  A new
  feature is a new row (the model must be retrained to use it).
- A unit spelling: add `written,ucum` to `cds/data/unit_synonyms.csv`.
- A condition code: add the ICD-10 code (`;`-separated) to `cds/data/conditions.csv`.
- A drug: add its ingredient keyword to the class in `cds/data/medications.csv`.
- Then run `mprtm mapping doc --out docs/fhir-mapping.md` and the tests
  (`pytest tests/mapping`).
"""


def _fmt(x: float) -> str:
    return f"{x:.10g}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _n_codes(sets: dict[str, Any], name: str, only: str = "") -> int:
    vs = sets.get(name) or {}
    codes = expansion_codes(vs)
    return len([c for c in codes if only in c[0]]) if only else len(codes)


def _sources(sets: dict[str, Any], name: str) -> str:
    params = ((sets.get(name) or {}).get("expansion") or {}).get("parameter") or []
    uris = [str(p.get("valueUri", "")).rsplit("/", 1)[-1] for p in params]
    return ", ".join(f"`{u}`" for u in uris if u) or "table only"


def render() -> str:
    """The whole document."""
    parts = [_INTRO.format(statuses=", ".join(f"`{s}`" for s in sorted(ACCEPTED_STATUS)))]
    rows = []
    for f in feature_specs():
        alts = [
            (f"`{c}` " if c != f.loinc else "") + f"`{u}` x {_fmt(k)}"
            for c, u, k in f.conversions[1:]
        ]
        rows.append(
            [
                f"`{f.name}`",
                f.label,
                f"`{f.loinc}`",
                f"`{f.unit}`",
                "<br>".join(alts) or "-",
                f"{_fmt(f.min)} - {_fmt(f.max)}",
            ]
        )
    parts.append("\n### Features\n\n")
    parts.append(
        _table(["feature", "label", "LOINC", "unit", "alternates (x factor)", "plausible"], rows)
    )
    parts.append("\n### Unit spellings\n\n")
    parts.append(
        _table(["written", "UCUM"], [[f"`{k}`", f"`{v}`"] for k, v in unit_synonyms().items()])
    )
    parts.append("\n### NYHA coded answers\n\n")
    parts.append(
        _table(
            ["system", "code", "class"],
            [[s, f"`{c}`", str(v)] for (s, c), v in nyha_answers().items()],
        )
    )
    parts.append(
        "\n"
        + _CONDITIONS.format(
            icd=", ".join(f"`{s}`" for s in sorted(ICD10_SYSTEMS)),
            active=", ".join(f"`{s}`" for s in sorted(ACTIVE)),
        )
        + "\n"
    )
    sets = {str(vs["name"]): vs for vs in shipped_valuesets()}
    parts.append(
        _table(
            ["flag", "label", "SNOMED CT roots", "ICD-10", "codes", "sources (VSAC OID|version)"],
            [
                [
                    f"`cond_{c.name}`",
                    c.label,
                    ", ".join(f"`{x}`" for x in c.snomed_codes) or "-",
                    ", ".join(f"`{x}`" for x in c.icd10) or "-",
                    str(_n_codes(sets, f"cond_{c.name}")),
                    _sources(sets, f"cond_{c.name}"),
                ]
                for c in condition_specs()
            ],
        )
    )
    parts.append("\n" + _MEDICATIONS + "\n")
    parts.append(
        _table(
            ["flag", "label", "ATC", "RxNorm codes", "keywords"],
            [
                [
                    f"`med_{d.name}`",
                    d.label,
                    ", ".join(f"`{x}`" for x in d.atc),
                    str(_n_codes(sets, f"med_{d.name}", "rxnorm")),
                    ", ".join(d.keywords),
                ]
                for d in drug_class_specs()
            ],
        )
    )
    parts.append(
        "\nRxNorm sources (VSAC OID|version): " + _sources(sets, "med_beta_blocker") + "\n"
    )
    parts.append("\n" + _REST)
    parts.append("\n" + written_section())
    return "".join(parts)
