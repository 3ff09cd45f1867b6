"""Case-mix shifts: one simulator playing several hospitals (``mprtm synth --shift``).

Each shift is ``KEY=VALUE`` (see ``docs/synthetic-cohort.md``):

* ``age=+10``: years added to every patient's age (the rest of the state then follows
  the older age: aetiology, kidney function, natriuretic peptides, risk);
* ``hfpef=0.6``: share of patients with HFpEF (HFrEF and HFmrEF share the rest in
  their usual proportion);
* ``lge=0.2``: share of patients with an LGE study;
* ``assay.nt_probnp=1.3``: the site's laboratory reports NT-proBNP this many times
  higher than the reference assay (the written value changes, the patient does not);
* ``risk.female=1.8``: every event hazard of women is multiplied by this, so a model
  trained elsewhere under-predicts their risk.

Without shifts the generator draws exactly what it drew before (same bytes): every
shift only changes a value after the random draw that it replaces.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cds.errors import UsageError

KEYS = ("age", "hfpef", "lge", "assay.nt_probnp", "risk.female")


@dataclass(frozen=True)
class Shifts:
    """The case-mix shifts of one simulated site (defaults: none).

    Args:
        age: years added to every age.
        hfpef: share of HFpEF, or None for the registry mix.
        lge: share of patients with an LGE study, or None for the default 0.85.
        assay_nt_probnp: factor on every reported NT-proBNP value.
        risk_female: hazard multiplier of women.
    """

    age: float = 0.0
    hfpef: float | None = None
    lge: float | None = None
    assay_nt_probnp: float = 1.0
    risk_female: float = 1.0

    @property
    def any(self) -> bool:
        return self != Shifts()

    def as_dict(self) -> dict[str, float]:
        """The shifts that differ from the default, by their ``--shift`` key."""
        out: dict[str, float] = {}
        if self.age:
            out["age"] = self.age
        if self.hfpef is not None:
            out["hfpef"] = self.hfpef
        if self.lge is not None:
            out["lge"] = self.lge
        if self.assay_nt_probnp != 1.0:
            out["assay.nt_probnp"] = self.assay_nt_probnp
        if self.risk_female != 1.0:
            out["risk.female"] = self.risk_female
        return out


def _share(key: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"--shift {key}={value}: a share must be between 0 and 1")
    return value


def _factor(key: str, value: float) -> float:
    if not 0.05 <= value <= 20.0:
        raise UsageError(f"--shift {key}={value}: a factor must be between 0.05 and 20")
    return value


def parse_shifts(items: Iterable[str]) -> Shifts:
    """``KEY=VALUE`` strings -> :class:`Shifts` (UsageError naming the item)."""
    values: dict[str, float] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in KEYS:
            raise UsageError(f"--shift {item!r}: expected KEY=VALUE with KEY one of {KEYS}")
        if key in values:
            raise UsageError(f"--shift {key} given twice")
        try:
            values[key] = float(raw)
        except ValueError:
            raise UsageError(f"--shift {key}: {raw!r} is not a number") from None
    age = values.get("age", 0.0)
    if not -40.0 <= age <= 40.0:
        raise UsageError(f"--shift age={age}: at most 40 years either way")
    return Shifts(
        age=age,
        hfpef=_share("hfpef", values["hfpef"]) if "hfpef" in values else None,
        lge=_share("lge", values["lge"]) if "lge" in values else None,
        assay_nt_probnp=_factor("assay.nt_probnp", values.get("assay.nt_probnp", 1.0)),
        risk_female=_factor("risk.female", values.get("risk.female", 1.0)),
    )
