"""Same seed, same bytes; another seed, other bytes; the CLI front end."""

from __future__ import annotations

import json
from pathlib import Path

from synth_helpers import SEED, SIZE, N, tree_digest

from cds.cli import main
from cds.synth.generate import generate


def test_same_seed_gives_identical_bytes(cohort_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate(N, SEED, again, images=True, image_size=SIZE, progress=False)
    a, b = tree_digest(cohort_dir), tree_digest(again)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_other_seed_gives_other_bytes(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    generate(5, 1, one, images=False, progress=False)
    generate(5, 2, two, images=False, progress=False)
    a, b = tree_digest(one), tree_digest(two)
    assert all(a[k] != b[k] for k in a.keys() & b.keys())


def test_no_images_keeps_fhir_and_labels(cohort_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "noimg"
    generate(N, SEED, out, images=False, progress=False)
    a, b = tree_digest(cohort_dir), tree_digest(out)
    assert not (out / "dicom").exists() and "fhir/ImagingStudy.ndjson" not in b
    for name in (
        "truth/labels.csv",
        "truth/risk.csv",
        "fhir/Observation.ndjson",
        "fhir/Patient.ndjson",
    ):
        assert a[name] == b[name]


def test_cli_writes_and_reports(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    rc = main(
        ["synth", "--patients", "4", "--seed", "3", "--out", str(out), "--no-images", "--quiet"]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "AUROC" in text and "death" in text
    assert (out / "truth" / "modality_signal.json").is_file()
    meta = json.loads((out / "truth" / "meta.json").read_text())
    assert meta["reference_date"] == "2026-11-01" and meta["seed"] == 3 and meta["images"] is False
    # a folder that already holds a cohort is refused (usage error, exit 2)
    assert main(["synth", "--patients", "4", "--out", str(out), "--no-images", "--quiet"]) == 2
