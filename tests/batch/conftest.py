"""Fixtures of the batch tests: a small synthetic cohort, a tiny trained checkpoint, and
settings that point the batch at them (NDJSON folder, DICOM folder, SQLite)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from cds.config import Settings, load_settings
from cds.db.migrate import upgrade
from cds.model_data import cause_classes, load_model_examples
from cds.synth.generate import generate
from model.train import train_mprtm
from tests.model.helpers import tiny_config, write_tiny_bert

N_PATIENTS = 16
AS_OF = dt.datetime(2026, 11, 2, 23, 0, tzinfo=dt.UTC)
#: a Group member with no Patient resource, and a patient whose Patient resource is broken
GHOST = "ghost-patient"


@pytest.fixture(scope="session")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("batch-cohort") / "cohort"
    generate(N_PATIENTS, 11, out, image_size=32, n_slices=4, progress=False)
    return out


@pytest.fixture(scope="session")
def broken_cohort_dir(cohort_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cohort plus a ghost Group member and one patient whose Patient does not parse."""
    import shutil

    out = tmp_path_factory.mktemp("broken") / "cohort"
    shutil.copytree(cohort_dir, out)
    fhir = out / "fhir"
    group = json.loads((fhir / "Group.ndjson").read_text().splitlines()[0])
    group["member"].append({"entity": {"reference": f"Patient/{GHOST}"}})
    (fhir / "Group.ndjson").write_text(json.dumps(group) + "\n")
    lines = (fhir / "Patient.ndjson").read_text().splitlines()
    bad = json.loads(lines[0])
    bad["birthDate"] = "not-a-date"
    lines[0] = json.dumps(bad)
    (fhir / "Patient.ndjson").write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="session")
def broken_patient_id(broken_cohort_dir: Path) -> str:
    first = (broken_cohort_dir / "fhir" / "Patient.ndjson").read_text().splitlines()[0]
    return str(json.loads(first)["id"])


@pytest.fixture(scope="session")
def checkpoint(cohort_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny M-PRTM trained (seconds) on the cohort as the pipeline maps it."""
    root = tmp_path_factory.mktemp("batch-model")
    bert = write_tiny_bert(root / "bert")
    examples = load_model_examples(cohort_dir, 32, load_settings(environ={}), progress=False)
    cfg = tiny_config(bert, max_slices=4, causes=cause_classes(examples))
    res = train_mprtm(
        examples, cfg, seed=3, out=root / "m.pt", progress=False, synthetic=True, baselines=False
    )
    return Path(res.path)


#: ``[model] image_*`` thresholds that pass every series.  The tiny test model, trained for
#: seconds on 32-px phantoms, segments no ring the quality gate would accept; the tests of
#: what the batch does with an image use these, and tests/batch/test_image_gate.py runs the
#: default gate against them.
OPEN_GATE: dict[str, object] = dict(
    model__image_min_quality=0.0,
    model__image_min_ring_fraction=0.0,
    model__image_max_entropy=1.0,
    model__image_min_flip_agreement=0.0,
    model__image_max_outside_enhancement=1.0,
    model__image_max_ood_ratio=1e9,
    model__image_wall_min_mm=0.0,
    model__image_wall_max_mm=1e9,
    model__image_lv_diameter_min_mm=0.0,
    model__image_lv_diameter_max_mm=1e9,
    model__image_flip_check=False,
)


def batch_settings(
    tmp_path: Path, cohort: Path, checkpoint: Path, *, gate: str = "open", **extra: object
) -> Settings:
    """Settings for a batch over ``cohort``; ``gate="default"`` keeps the image quality
    gate's default thresholds instead of :data:`OPEN_GATE`."""
    base = load_settings(environ={})
    values: dict[str, object] = dict(
        database__url=f"sqlite:///{tmp_path / 'batch.db'}",
        fhir__ndjson_dir=str(cohort / "fhir"),
        fhir__writeback_path=str(tmp_path / "out" / "RiskAssessment.ndjson"),
        pacs__folder=str(cohort / "dicom"),
        pacs__cache_dir=str(tmp_path / "cache"),
        model__checkpoint=str(checkpoint),
        batch__lock_file=str(tmp_path / "batch.lock"),
        batch__cohort="group:hf-followup",
        batch__chunk_size=4,
    )
    if gate == "open":
        values.update(OPEN_GATE)
    values.update(extra)
    s = base.replace(**values)
    upgrade(s.database.url)
    return s


def write_config(path: Path, settings: Settings) -> Path:
    """The settings as a TOML file, for subprocesses (``--config``)."""
    from cds.config import as_dict

    lines = []
    for section, values in as_dict(settings).items():
        if section == "source_file" or not isinstance(values, dict):
            continue
        lines.append(f"[{section}]")
        for key, value in values.items():
            if key == "trusted_issuers":
                continue
            lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
