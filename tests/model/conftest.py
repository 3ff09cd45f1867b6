"""Fixtures of the model tests: a tiny random BERT folder and a tiny config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.config import ModelConfig
from tests.model.helpers import tiny_config, write_tiny_bert


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """Tiny tensors run fastest on one thread, and CI machines are shared."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture()
def tiny_cfg(tiny_bert: Path) -> ModelConfig:
    return tiny_config(
        tiny_bert,
        crop=1.0,
        text_dim=32,
        text_max_segments=8,
        numeric_features=("age", "nt_probnp", "sex_male", "lvef"),
        seg_epochs=2,
        fusion_epochs=3,
    )
