"""The pinned text encoder: the bundled MiniLM's weights hash is checked, and any expected
hash (a checkpoint's record) is checked before the weights are read."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model import text_branch
from model.text_branch import (
    BUNDLED_WEIGHTS_SHA256,
    TextEncoder,
    TextEncoderError,
    default_text_encoder_path,
    weights_sha256,
)


def test_the_installed_package_has_the_pinned_weights() -> None:
    assert weights_sha256(default_text_encoder_path()) == BUNDLED_WEIGHTS_SHA256


def test_bundled_encoder_with_other_weights_is_refused(
    tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the package folder replaced by other weights (a tampered or different release)
    monkeypatch.setattr(text_branch, "default_text_encoder_path", lambda: str(tiny_bert))
    with pytest.raises(TextEncoderError, match="expected 53aa51172d14; refusing"):
        TextEncoder("")


def test_expected_hash_is_checked_before_the_weights_are_read(
    tiny_bert: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "enc"
    shutil.copytree(tiny_bert, folder)
    weights = next(
        p for p in folder.iterdir() if p.name in ("model.safetensors", "pytorch_model.bin")
    )
    weights.write_bytes(b"not weights at all")  # loading would fail with another message
    with pytest.raises(TextEncoderError, match="refusing to load them"):
        TextEncoder(str(folder), expected_sha256=weights_sha256(tiny_bert))
    good = TextEncoder(str(tiny_bert), expected_sha256=weights_sha256(tiny_bert))
    assert good.sha256 == weights_sha256(tiny_bert)
