"""The scoring core's one fingerprint, one rounding, one tier function and one label table,
and the stored inputs: written in one shape, old shapes still read."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import pytest

from cds.config import RiskSettings
from cds.labels import (
    INPUT_GROUP_LABELS,
    MODALITY_LABELS,
    OUTCOME_LABELS,
    input_label,
    lower_first,
    modality_label,
    outcome_label,
)
from cds.mapping import FeatureValue, MappedPatient
from cds.scoring import (
    StoredInput,
    StoredInputs,
    input_fingerprint,
    round_probabilities,
    tiers_for,
)
from connectors.pacs.base import SeriesRef
from model.types import MODALITIES, OUTCOMES, ModelInput

REPO = Path(__file__).resolve().parents[2]


def _mapped() -> MappedPatient:
    day = dt.date(2026, 11, 1)
    m = MappedPatient(
        patient_id="p1",
        as_of=dt.date(2026, 11, 2),
        model_input=ModelInput(
            patient_id="p1",
            numeric={"nt_probnp": 2450.0, "age": 71.0, "med_statin": 1.0},
            text="atorvastatin 20 mg",
            image_fingerprint="abc",
        ),
        features={
            "nt_probnp": FeatureValue("nt_probnp", 2450.0, "pg/mL", day, "Observation/o7"),
            "age": FeatureValue("age", 71.0, "a", None, "Patient/p1"),
            "med_statin": FeatureValue("med_statin", 1.0, "", day, "MedicationRequest/m1"),
        },
        notes=["DocumentReference/d1"],
        note_dates={"DocumentReference/d1": dt.date(2026, 10, 30)},
        lge_series=SeriesRef(
            patient_id="MRN1",
            study_instance_uid="1.2",
            series_instance_uid="1.2.3",
            modality="MR",
            series_description="PSIR LGE SAX",
            protocol_name="LGE",
            n_instances=9,
            study_date="20260301",
        ),
        n_slices=9,
    )
    return m


def test_fingerprint_depends_on_every_input_and_nothing_else() -> None:
    m = _mapped()
    fp = input_fingerprint(m.model_input)
    assert fp == input_fingerprint(_mapped().model_input)
    for change in (
        lambda mi: mi.numeric.update(age=72.0),
        lambda mi: setattr(mi, "text", "atorvastatin 40 mg"),
        lambda mi: setattr(mi, "image_fingerprint", "abd"),
    ):
        other = _mapped().model_input
        change(other)
        assert input_fingerprint(other) != fp
    # the numeric order does not matter
    shuffled = _mapped().model_input
    shuffled.numeric = dict(reversed(list(shuffled.numeric.items())))
    assert input_fingerprint(shuffled) == fp


def test_rounding_and_tiers() -> None:
    probs = round_probabilities({"death": 0.199996, "macce": 0.0512345})
    assert probs == {"death": 0.2, "macce": 0.0512}
    risk = RiskSettings(moderate=0.1, high=0.2)
    # tiers are taken from the rounded value the clinician sees (20.0% is high)
    assert tiers_for(probs, risk, {}) == {"death": "high", "macce": "low"}
    # no thresholds configured: the checkpoint's own tiers stand
    own = {"death": "moderate", "macce": "low"}
    assert tiers_for(probs, RiskSettings(moderate=-1, high=-1), own) == own


def test_stored_inputs_round_trip_with_groups_units_dates_and_sources() -> None:
    stored = StoredInputs.from_mapped(_mapped())
    raw = stored.to_json()
    assert raw["version"] == 2
    back = StoredInputs.from_json(raw)
    assert back == stored
    groups = dict(back.grouped())
    assert list(dict(back.grouped())) == ["demographics", "lab", "medication", "note", "lge"]
    [bnp] = groups["lab"]
    assert (bnp.value, bnp.unit, bnp.date, bnp.source) == (
        2450.0,
        "pg/mL",
        "2026-11-01",
        "Observation/o7",
    )
    [note] = groups["note"]
    assert note.date == "2026-10-30" and note.source == "DocumentReference/d1"
    [lge] = groups["lge"]
    assert (lge.value, lge.unit, lge.date, lge.source) == (9.0, "slices", "2026-03-01", "1.2.3")
    assert back.freshness() == {
        "measurements": "2026-11-01",
        "medication": "2026-11-01",
        "note": "2026-10-30",
        "lge": "2026-03-01",
    }


def test_old_shapes_are_read() -> None:
    batch_old = {
        "features": {
            "lvef": {"value": 35, "unit": "%", "date": "2026-10-02", "source": "Observation/o1"}
        },
        "medications": ["bisoprolol 5 mg"],
        "notes": ["DocumentReference/d1"],
        "lge_series": {"series_instance_uid": "1.2.3", "study_date": "20260301", "n_slices": 9},
    }
    old = StoredInputs.from_json(batch_old)
    lvef = old.get("lvef")
    assert lvef is not None and (lvef.group, lvef.value, lvef.unit) == ("echo", 35.0, "%")
    assert old.freshness()["lge"] == "2026-03-01"
    on_demand_old = {**batch_old, "freshness": {"clinical indicators": "2026-10-02"}}
    assert StoredInputs.from_json(on_demand_old).get("lvef") == lvef
    fresh_only = StoredInputs.from_json({"freshness": {"clinical indicators": "2026-01-10"}})
    assert fresh_only.freshness() == {"measurements": "2026-01-10"}
    flat = StoredInputs.from_json(
        {"nt_probnp": {"value": 2450.0, "unit": "pg/mL", "effective": "2026-11-01"}, "age": 71}
    )
    assert flat.get("nt_probnp") == StoredInput(
        "nt_probnp", "lab", 2450.0, "pg/mL", "2026-11-01", ""
    )
    assert flat.get("age") is not None and flat.get("age").group == "demographics"  # type: ignore[union-attr]
    assert StoredInputs.from_json(None) == StoredInputs()
    assert StoredInputs.from_json(["junk"]) == StoredInputs()


def test_one_label_table() -> None:
    assert set(OUTCOME_LABELS) == set(OUTCOMES) and set(MODALITY_LABELS) == set(MODALITIES)
    assert outcome_label("death", lower=True) == "all-cause death"
    assert modality_label("image", lower=True) == "LGE cardiac MRI"
    assert lower_first("MACCE") == "MACCE"
    assert input_label("nt_probnp") != "nt_probnp"
    assert {"vital", "lab", "echo", "condition", "medication", "note", "lge"} <= set(
        INPUT_GROUP_LABELS
    )


#: names that must be defined once, in their one home
ONE_HOME = {
    "input_fingerprint": "cds/scoring/core.py",
    "tiers_for": "cds/scoring/core.py",
    "round_probabilities": "cds/scoring/core.py",
    "OUTCOME_LABELS": "cds/labels.py",
    "MODALITY_LABELS": "cds/labels.py",
    "file_sha256": "model/checkpoint.py",
}


@pytest.mark.parametrize("name", sorted(ONE_HOME))
def test_defined_once(name: str) -> None:
    """No second fingerprint, tier function, rounding or label table in cds/ or model/."""
    homes = []
    for path in sorted([*REPO.glob("cds/**/*.py"), *REPO.glob("model/**/*.py")]):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in (name, f"_{name}"):
                homes.append(path.relative_to(REPO).as_posix())
        for node in tree.body:  # module-level tables
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    homes.append(path.relative_to(REPO).as_posix())
    assert homes == [ONE_HOME[name]]


def test_batch_and_hooks_call_the_core() -> None:
    """Both callers reach scoring through the core's names (no private copies)."""
    for caller in ("cds/batch/_scoring.py", "cds/hooks/model_scorer.py"):
        text = (REPO / caller).read_text()
        assert "ScoringCore" in text and ".scored(" in text and ".predict(" in text
        for copy in ("def _tier", "def _fingerprint", "def input_fingerprint", "hashlib.sha256(p"):
            assert copy not in text


def test_one_wording_of_the_two_times() -> None:
    from cds.labels import when_text

    as_of = dt.datetime(2026, 11, 1, 23, 0, tzinfo=dt.UTC)
    scored = dt.datetime(2026, 12, 5, 2, 14, tzinfo=dt.UTC)
    assert when_text(as_of, scored) == "data as of 2026-11-01 · scored 2026-12-05 02:14 UTC"
    assert when_text(None, scored.replace(tzinfo=None)) == "scored 2026-12-05 02:14 UTC"
