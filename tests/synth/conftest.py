"""Fixtures of the synthetic-cohort tests: one small cohort per session (20 patients, 64 px)."""

from __future__ import annotations

from pathlib import Path

import pytest
from synth_helpers import SEED, SIZE, N

from cds.synth.generate import generate


@pytest.fixture(scope="session")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    generate(N, SEED, out, images=True, image_size=SIZE, progress=False)
    return out
