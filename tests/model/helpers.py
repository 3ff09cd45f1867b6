"""Builders of small test inputs for the model tests: a tiny random BERT folder and a
tiny labelled cohort with a learnable signal in every modality."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model.config import ModelConfig
from model.image_quality import QualityRules
from model.types import OUTCOMES, LabelledExample, ModelInput

WORDS = [
    "furosemide", "bisoprolol", "sacubitril", "valsartan", "spironolactone", "dapagliflozin",
    "digoxin", "warfarin", "aspirin", "statin", "mg", "daily", "twice", "patient", "dyspnea",
    "edema", "stable", "worsening", "admitted", "discharged", "syncope", "angina", "no",
]  # fmt: skip


#: A quality gate that passes every series: tiny test models, trained for a few steps on a
#: few phantoms, segment no gate-worthy ring, and the tests that use this are about what
#: the predictor does with an image, not about the gate (tests/model/test_image_quality.py).
OPEN_GATE = QualityRules(
    min_quality=0.0,
    min_ring_fraction=0.0,
    max_entropy=1.0,
    min_flip_agreement=0.0,
    max_outside_enhancement=1.0,
    max_ood_ratio=1e9,
    wall_mm=(0.0, 1e9),
    lv_diameter_mm=(0.0, 1e9),
    flip=False,
)


def write_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A random 2-layer BERT (hidden 32) with a word-level vocabulary, saved to ``folder``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *WORDS,
        *"abcdefghijklmnopqrstuvwxyz0123456789",
    ]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(folder)
    return folder


def ring_phantom(
    rng: np.random.Generator, slices: int, size: int, burden: float
) -> tuple[np.ndarray, np.ndarray]:
    """LGE-like slices: a myocardial ring with a bright enhanced sector; and its masks."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.zeros((slices, size, size), dtype=np.float32)
    mask = np.zeros((slices, size, size), dtype=np.uint8)
    for s in range(slices):
        cy, cx = size / 2 + rng.normal(0, 1), size / 2 + rng.normal(0, 1)
        r = np.hypot(yy - cy, xx - cx)
        r_in, r_out = size * 0.18, size * 0.3
        myo = (r >= r_in) & (r <= r_out)
        ang = (np.arctan2(yy - cy, xx - cx) + np.pi) / (2 * np.pi)
        start = rng.random()
        enh = myo & (((ang - start) % 1.0) < burden)
        mask[s][myo] = 1
        mask[s][enh] = 2
        img[s] = 0.15 + 0.25 * (r < r_in) + 0.05 * rng.standard_normal((size, size))
        img[s][myo] = 0.1
        img[s][enh] = 0.9
    return np.clip(img, 0, 1), mask


def tiny_cohort(
    n: int, seed: int = 0, size: int = 32, slices: int = 3, p_missing: float = 0.15
) -> list[LabelledExample]:
    """``n`` patients; death risk rises with age, NT-proBNP, burden and 'worsening' notes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        age = float(rng.normal(68, 10))
        bnp = float(np.exp(rng.normal(7, 1)))
        burden = float(rng.uniform(0.02, 0.35))
        worse = bool(rng.random() < 0.4)
        logit = (
            -1.0 + 0.05 * (age - 68) + 0.8 * (np.log(bnp) - 7) + 6 * (burden - 0.18) + 1.2 * worse
        )
        p = 1 / (1 + np.exp(-logit))
        y = float(rng.random() < p)
        numeric = {"age": age, "nt_probnp": bnp, "sex_male": float(rng.random() < 0.6)}
        if rng.random() < 0.5:
            numeric["lvef"] = float(rng.normal(40, 10))
        text = (
            "patient worsening dyspnea admitted" if worse else "patient stable discharged"
        ) + " furosemide 40 mg daily"
        img, mask = ring_phantom(rng, slices, size, burden)
        drop = rng.random() < p_missing
        out.append(
            LabelledExample(
                input=ModelInput(
                    patient_id=f"p{i:04d}",
                    numeric=numeric,
                    text=None if drop and i % 2 else text,
                    image=None if drop and not i % 2 else img,
                    image_fingerprint=f"fp{i:04d}",
                ),
                labels={
                    o: y if o in ("death", "macce") else float(rng.random() < 0.3) for o in OUTCOMES
                },
                cause="heart_failure" if y else "none",
                masks=mask,
                fibrosis_burden=float((mask == 2).sum() / max((mask >= 1).sum(), 1)),
                oracle_risk={"death": float(p)},
            )
        )
    return out


def tiny_config(text_encoder: Path | str, **overrides: Any) -> ModelConfig:
    """The ``small`` preset shrunk to train in seconds (32 px, narrow widths, few epochs);
    ``overrides`` change any field.  Shared by the model, batch and CDS Hooks tests."""
    from model.config import preset

    fields: dict[str, Any] = {
        "image_size": 32,
        "max_slices": 3,
        "enc_dims": (8, 16, 16),
        "embed_dim": 32,
        "fusion_heads": 2,
        "numeric_hidden": 16,
        "text_encoder": str(text_encoder),
        "text_window": 32,
        "seg_epochs": 1,
        "fusion_epochs": 2,
        "seg_batch": 8,
        "fusion_batch": 16,
        "ensemble": 1,  # one network unless a test asks for more (the presets use 2)
    }
    fields.update(overrides)
    return preset("small", **fields)
