"""Turn ModelInputs plus cached per-modality features into network tensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model.numeric_branch import FeatureSchema
from model.types import ModelInput


def has_numeric(inp: ModelInput, schema: FeatureSchema) -> bool:
    """True when at least one schema feature is present."""
    names = set(schema.names)
    return any(k in names and v is not None and np.isfinite(v) for k, v in inp.numeric.items())


def has_text(inp: ModelInput) -> bool:
    return inp.text is not None and inp.text.strip() != ""


def assemble(
    inputs: Sequence[ModelInput],
    schema: FeatureSchema,
    text_emb: np.ndarray,
    text_present: np.ndarray,
    image_emb: np.ndarray,
    image_present: np.ndarray,
) -> dict[str, torch.Tensor]:
    """Stack the network inputs of a batch.

    Args:
        inputs: the patients.
        schema: numeric feature schema.
        text_emb: (B, S, H) segment embeddings (rows of absent texts are ignored).
        text_present: (B,) bool.
        image_emb: (B, 2*C_3 + 1) image embeddings with burden last.
        image_present: (B,) bool.
    """
    numeric = torch.from_numpy(schema.transform([i.numeric for i in inputs]))
    num_present = np.array([has_numeric(i, schema) for i in inputs], dtype=bool)
    present = np.stack([num_present, text_present, image_present], axis=1)
    return {
        "numeric": numeric,
        "text": torch.from_numpy(np.ascontiguousarray(text_emb, dtype=np.float32)),
        "image": torch.from_numpy(np.ascontiguousarray(image_emb, dtype=np.float32)),
        "present": torch.from_numpy(present),
    }
