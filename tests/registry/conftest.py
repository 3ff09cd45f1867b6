"""Fixtures of the registry tests: two tiny trained checkpoints (different seeds) on the
batch tests' synthetic cohort, and ``validation.json`` reports in the documented layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cds.config import load_settings
from cds.model_data import cause_classes, load_model_examples
from model.checkpoint import file_sha256
from model.train import train_mprtm
from tests.batch.conftest import checkpoint, cohort_dir  # noqa: F401  (shared fixtures)
from tests.model.helpers import tiny_config, write_tiny_bert


@pytest.fixture(scope="session")
def other_checkpoint(cohort_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A second tiny M-PRTM (another seed, fewer epochs' worth of luck): the shadow."""
    root = tmp_path_factory.mktemp("registry-model")
    bert = write_tiny_bert(root / "bert")
    examples = load_model_examples(cohort_dir, 32, load_settings(environ={}), progress=False)
    cfg = tiny_config(bert, max_slices=4, causes=cause_classes(examples))
    res = train_mprtm(
        examples, cfg, seed=7, out=root / "other.pt", progress=False, synthetic=True,
        baselines=False,
    )  # fmt: skip
    return Path(res.path)


def validation_report(
    ckpt: Path, *, auroc_low: float = 0.8, ece: float = 0.04, ratio: float = 1.1
) -> dict[str, Any]:
    """A ``validation.json`` as ``mprtm validate`` writes it (docs/local-validation.md),
    with the figures the gate reads set to the given values."""
    overall = {
        o: {"n": 200, "auroc": 0.85, "auroc_ci": [0.83, 0.88], "ece": 0.03}
        for o in ("death", "cv_death", "rehosp", "cardio_rehosp", "macce")
    }
    overall["death"]["auroc_ci"] = [auroc_low, 0.9]
    overall["rehosp"]["ece"] = ece
    return {
        "overall": overall,
        "subgroups": [
            {
                "outcome": "death",
                "variable": "sex",
                "level": "female",
                "n": 90,
                "flag_rate": 0.2,
                "flag_rate_ratio": ratio,
                "flagged": False,
            },
            {
                "outcome": "death",
                "variable": "sex",
                "level": "male",
                "n": 110,
                "flag_rate": 0.2,
                "flag_rate_ratio": 1.0,
                "flagged": False,
            },
            {
                "outcome": "rehosp",
                "variable": "age",
                "level": ">=75",
                "n": 40,
                "flag_rate": 0.9,
                "flag_rate_ratio": 9.0,
                "flagged": True,
            },
        ],  # fmt: skip
        "limits": {"flag_rate_ratio": [0.8, 1.25], "citl": 0.3},
        "checkpoint": {"sha256": file_sha256(ckpt)},
        "n_patients": 200,
        "as_of": "2026-11-02",
    }
