"""Fixtures of the model tests: a tiny random BERT folder and a tiny config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.config import ModelConfig, preset
from tests.model.helpers import write_tiny_bert


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """Tiny tensors run fastest on one thread, and CI machines are shared."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture()
def tiny_cfg(tiny_bert: Path) -> ModelConfig:
    return preset(
        "small",
        image_size=32,
        max_slices=3,
        crop=1.0,
        enc_dims=(8, 16, 16),
        embed_dim=32,
        fusion_heads=2,
        numeric_hidden=16,
        text_encoder=str(tiny_bert),
        text_dim=32,
        text_window=32,
        text_max_chunks=4,
        numeric_features=("age", "nt_probnp", "sex_male", "lvef"),
        seg_epochs=2,
        fusion_epochs=3,
        seg_batch=8,
        fusion_batch=16,
    )
