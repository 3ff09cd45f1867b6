"""Inference: load a checkpoint once, then predict batches of patients."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from model._batch import assemble, has_numeric, has_text
from model.attribution import modality_contributions, select_background
from model.calibration import tier
from model.checkpoint import Checkpoint, file_sha256, load_checkpoint
from model.errors import IncompatibleCheckpointError, ModelInputError
from model.image_branch import prepare_volume
from model.image_quality import ImageReference, QualityRules, assess
from model.localise import Box, paste_logits
from model.mprtm import Network, build_network
from model.text_branch import (
    SegmentStore,
    TextEncoder,
    default_text_encoder_path,
    state_sha256,
    weights_sha256,
)
from model.types import MODALITIES, OUTCOMES, ImageFeatures, ModelInput, PatientPrediction

log = logging.getLogger("mprtm.model")

#: Slices per pass of the image network on CUDA (64 series of 12 slices).  On an H200,
#: batching the series gave the Predictor 4.46 (``small``) and 2.44 (``full``) times the
#: patients/s of one series per pass, in bf16 (``benchmarks/bench_gpu.py``,
#: docs/model-performance.md).
CUDA_IMAGE_BATCH_SLICES = 768


def load_text_encoder(ckpt: Checkpoint, path: str | None = None) -> TextEncoder:
    """Build the checkpoint's text encoder from a local folder and check its weights hash.

    Args:
        ckpt: the loaded checkpoint.
        path: folder to use instead of the one recorded (it must hold the same weights).
    """
    cfg = ckpt.config
    recorded = ckpt.text_encoder
    folder = path or recorded.get("path") or cfg.text_encoder
    if not folder or not Path(folder).is_dir():
        folder = cfg.text_encoder  # "" -> bundled MiniLM
    want = str(recorded.get("sha256") or "")
    if want and weights_sha256(folder or default_text_encoder_path()) != want:
        # checked before the encoder reads its weights
        raise IncompatibleCheckpointError(
            f"text encoder at {folder or 'the bundled MiniLM'} has other weights than the "
            f"checkpoint was trained with ({recorded.get('name')} sha256 {want[:12]}); "
            "pass the matching folder (text_encoder_path)"
        )
    enc = TextEncoder(
        folder,
        cfg.text_trainable_layers,
        cfg.text_window,
        cfg.text_max_segments,
        expected_sha256=want,
    )
    if enc.hidden_size != cfg.text_dim:
        raise IncompatibleCheckpointError(
            f"text encoder hidden size {enc.hidden_size} != checkpoint's {cfg.text_dim}"
        )
    if ckpt.text_encoder_state is not None:
        enc.bert.load_state_dict(ckpt.text_encoder_state)
        enc.state_sha256 = state_sha256(ckpt.text_encoder_state)
    return enc


def load_network(ckpt: Checkpoint) -> Network:
    """Build the network of a checkpoint and load its weights (strict)."""
    net = build_network(ckpt.config)
    try:
        net.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        raise IncompatibleCheckpointError(
            f"checkpoint weights do not fit the network its config describes: {exc}"
        ) from exc
    return net.eval()


class Predictor:
    """Calibrated M-PRTM predictions for batches of patients.

    Build it with :meth:`from_checkpoint`.

    Args:
        ckpt: a loaded checkpoint.
        network: its network.
        text_encoder: its text encoder.
        device: ``cpu`` or ``cuda``.
        batch_size: patients per forward pass.
        bf16: autocast to bfloat16 (CUDA only).
        version: the model version string.
        attribution: also compute each modality's Shapley contribution to every
            probability (``PatientPrediction.contributions``, against the typical
            patients stored in the checkpoint; 7 extra fusion passes over the batch
            times the background, the image network and the text encoder are not
            re-run).  Checkpoints without a background (format < 5) give none.
        image_batch_slices: most slices in one pass of the image network when several
            series are encoded (:meth:`encode_images`, and the series of a
            :meth:`predict` batch).  None: :data:`CUDA_IMAGE_BATCH_SLICES` on CUDA, one
            series per pass on the CPU (where batching gains little and costs memory).
        quality_rules: when a series' segmentation counts as readable
            (:mod:`model.image_quality`); an unreadable series is treated as a missing
            image.  None: the defaults.
    """

    def __init__(
        self,
        ckpt: Checkpoint,
        network: Network,
        text_encoder: TextEncoder,
        device: str = "cpu",
        batch_size: int = 32,
        bf16: bool = False,
        version: str = "",
        attribution: bool = True,
        image_batch_slices: int | None = None,
        quality_rules: QualityRules | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if image_batch_slices is not None and image_batch_slices < 0:
            raise ValueError(f"image_batch_slices must be >= 0, got {image_batch_slices}")
        self.checkpoint = ckpt
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.text_encoder = text_encoder.to(self.device).eval()
        #: segment embeddings kept beyond this process (set by the application), or None
        self.segment_store: SegmentStore | None = None
        self.batch_size = batch_size
        self.bf16 = bf16 and self.device.type == "cuda"
        if image_batch_slices is None:
            image_batch_slices = CUDA_IMAGE_BATCH_SLICES if self.device.type == "cuda" else 0
        self.image_batch_slices = image_batch_slices
        self.version = version
        self.background = ckpt.background
        self.attribution = attribution and self.background is not None
        if attribution and self.background is None:
            log.warning(
                "checkpoint has no attribution background (format < 5): predictions carry "
                "no modality contributions; retrain to get them"
            )
        self.model_name = "M-PRTM"
        self.thresholds: dict[str, tuple[float, float]] = dict(ckpt.thresholds)
        self.synthetic_training_data = ckpt.synthetic_training_data
        self.card_markdown = ckpt.card_markdown
        self.schema = ckpt.schema
        self.config = ckpt.config
        self.quality_rules = quality_rules or QualityRules()
        self.image_reference = (
            ImageReference.from_dict(ckpt.image_reference) if ckpt.image_reference else None
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "cpu",
        threads: int = 0,
        text_encoder_path: str | None = None,
        batch_size: int = 32,
        bf16: bool = True,
        attribution: bool = True,
        image_batch_slices: int | None = None,
        quality_rules: QualityRules | None = None,
    ) -> Predictor:
        """Load a checkpoint for inference.

        Args:
            path: the checkpoint file.
            device: ``cpu``, ``cuda`` or ``auto``.
            threads: CPU threads for torch (0 leaves torch's default).
            text_encoder_path: local folder of the text encoder, when it moved.
            batch_size: patients per forward pass.
            bf16: use bfloat16 autocast on CUDA.
            attribution: compute per-modality contributions (see the class).
            image_batch_slices: slices per pass of the image network (see the class).
            quality_rules: the image quality gate's thresholds (see the class).
        """
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu, cuda or auto, got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        if threads:
            torch.set_num_threads(threads)
        ckpt = load_checkpoint(path)
        net = load_network(ckpt)
        enc = load_text_encoder(ckpt, text_encoder_path)
        version = f"mprtm-{file_sha256(path)[:12]}"
        return cls(
            ckpt,
            net,
            enc,
            device,
            batch_size,
            bf16,
            version,
            attribution,
            image_batch_slices,
            quality_rules,
        )

    @torch.inference_mode()
    def build_background(self, inputs: Sequence[ModelInput], seed: int = 0) -> int:
        """Draw the attribution background from ``inputs`` (training patients) and use it.

        For checkpoints older than format 5, which do not store one: the same rule as
        training (up to ``config.attribution_background`` patients with all three
        modalities, drawn with ``seed``); only the drawn patients are encoded.  Returns
        the number of typical patients (0 leaves the attribution off).
        """
        present = torch.tensor(
            [[has_numeric(i, self.schema), has_text(i), i.image is not None] for i in inputs],
            dtype=torch.bool,
        ).reshape(-1, 3)
        pick = select_background(present, self.config.attribution_background, seed)
        if len(pick) == 0:
            return 0
        chosen = [inputs[int(i)] for i in pick]
        feats = self._batch_image_features(chosen, None)
        image = np.zeros((len(chosen), self.network.image.embed_dim + 1), dtype=np.float32)
        for r, f in enumerate(feats):
            assert f is not None
            image[r, :-1], image[r, -1] = f.embedding, f.fibrosis_burden
        text = self.encode_texts([i.text or "" for i in chosen])
        ones = np.ones(len(chosen), dtype=bool)
        t = assemble(chosen, self.schema, text, ones, image, ones)
        self.background = {m: t[m].float() for m in MODALITIES}
        self.attribution = True
        return len(chosen)

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def encode_image(self, volume: np.ndarray, spacing_mm: float | None = None) -> ImageFeatures:
        """Segment one LGE series, embed it and judge the segmentation's quality.

        Args:
            volume: (S, H, W) float32 slices, intensities about [0, 1].
            spacing_mm: in-plane pixel spacing of ``volume`` (None: size rules skipped).
        """
        return self.encode_images([volume], spacings=[spacing_mm])[0]

    @torch.inference_mode()
    def encode_images(
        self,
        volumes: Sequence[np.ndarray],
        names: Sequence[str] | None = None,
        spacings: Sequence[float | None] | None = None,
    ) -> list[ImageFeatures]:
        """:meth:`encode_image` of several series, in order.

        Up to ``image_batch_slices`` slices go through the image network in one pass
        (one series per pass when it is 0); each series is pooled on its own, so the
        result is each series' :meth:`encode_image` up to float rounding.

        Args:
            volumes: (S, H, W) float32 slices of each series.
            names: what to call each series in an error (default ``series <i>``; a
                single unnamed series' error is raised as it is).
            spacings: each volume's in-plane pixel spacing in mm (None: unknown).

        Raises:
            ModelInputError: a series that cannot be used, named.
        """
        cfg = self.config
        if spacings is None:
            spacings = [None] * len(volumes)
        if len(spacings) != len(volumes):
            raise ValueError(f"{len(spacings)} spacings for {len(volumes)} volumes")
        arrays, prepared, boxes = [], [], []
        for k, volume in enumerate(volumes):
            arr = np.asarray(volume)
            try:
                box = self.network.image.crop_box(arr)  # the heart's (or the centred) crop
                prepared.append(prepare_volume(arr, cfg.image_size, cfg.max_slices, box=box))
            except ModelInputError as exc:
                if names is None and len(volumes) == 1:
                    raise
                name = names[k] if names is not None else f"series {k}"
                raise ModelInputError(f"{name}: {exc}") from exc
            arrays.append(arr)
            boxes.append(box)
        out: list[ImageFeatures] = []
        start, used = 0, 0
        for k, x in enumerate(prepared):
            if k > start and used + len(x) > self.image_batch_slices:
                out.extend(
                    self._encode_group(
                        arrays[start:k], prepared[start:k], boxes[start:k], spacings[start:k]
                    )
                )
                start, used = k, 0
            used += len(x)
        if prepared:
            out.extend(
                self._encode_group(
                    arrays[start:], prepared[start:], boxes[start:], spacings[start:]
                )
            )
        return out

    def _encode_group(
        self,
        arrays: Sequence[np.ndarray],
        prepared: Sequence[torch.Tensor],
        boxes: Sequence[Box],
        spacings: Sequence[float | None],
    ) -> list[ImageFeatures]:
        rules = self.quality_rules
        series = [x.to(self.device) for x in prepared]
        if rules.flip:  # the mirrored series ride in the same pass
            series += [x.flip(-1) for x in series]
        with self._autocast():
            outs = self.network.image.forward_series(series)
        mirrored = outs[len(prepared) :] if rules.flip else [None] * len(prepared)
        feats = []
        for arr, box, out, mir, spacing in zip(
            arrays, boxes, outs, mirrored, spacings, strict=False
        ):
            logits = out["logits"].float()  # (S, K, h, w) over the crop at ``box``
            embedding = out["embedding"].float().cpu().numpy().astype(np.float32)
            verdict = assess(
                logits,
                spacing_mm=None if spacing is None else spacing * box[2] / logits.shape[-2],
                rules=rules,
                flipped_logits=None if mir is None else mir["logits"].float().flip(-1),
                ood_ratio=None
                if self.image_reference is None
                else self.image_reference.ratio(embedding),
            )
            seg = paste_logits(logits, box, arr.shape[-2:])  # (S, H, W)
            feats.append(
                ImageFeatures(
                    embedding=embedding,
                    fibrosis_burden=float(out["burden"]),
                    segmentation=seg,
                    quality=verdict.quality,
                    usable=verdict.usable,
                    quality_reason=verdict.reason,
                    quality_signals=verdict.signals,
                )
            )
        return feats

    def encode_texts(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Segment embeddings (N, text_max_segments, text_dim) float32."""
        with self._autocast():
            return self.text_encoder.embed(
                list(texts),
                batch_size=self.batch_size,
                progress=progress,
                store=self.segment_store,
                runtime="torch-cuda-bf16" if self.bf16 else "torch-fp32",
            )

    def _batches(self, n: int) -> Iterator[slice]:
        for s in range(0, n, self.batch_size):
            yield slice(s, min(s + self.batch_size, n))

    def _batch_image_features(
        self, batch: Sequence[ModelInput], cache: Mapping[str, ImageFeatures] | None
    ) -> list[ImageFeatures | None]:
        """Each patient's image features: from ``cache`` by fingerprint, else encoded
        (the misses together, :meth:`encode_images`)."""
        feats: list[ImageFeatures | None] = [None] * len(batch)
        todo = []
        for r, inp in enumerate(batch):
            if inp.image is None:
                continue
            if cache is not None and inp.image_fingerprint and inp.image_fingerprint in cache:
                feats[r] = cache[inp.image_fingerprint]
            else:
                todo.append(r)
        encoded = self.encode_images(
            [batch[r].image for r in todo],  # type: ignore[misc]
            names=[f"patient {batch[r].patient_id}" for r in todo],
            spacings=[batch[r].image_spacing_mm for r in todo],
        )
        for r, f in zip(todo, encoded, strict=True):
            feats[r] = f
        return feats

    @torch.inference_mode()
    def predict(
        self,
        inputs: Sequence[ModelInput],
        image_cache: Mapping[str, ImageFeatures] | None = None,
    ) -> list[PatientPrediction]:
        """Predict every patient, in order.

        Args:
            inputs: the patients; each needs at least one modality.
            image_cache: fingerprint -> ImageFeatures computed before; a hit skips the
                image network.  New features come back in ``prediction.image_features``.

        Raises:
            ModelInputError: naming the first patient whose inputs cannot be used (the
                whole call fails, so callers that must not lose a batch predict per chunk
                and retry per patient).
        """
        out: list[PatientPrediction] = []
        for sl in self._batches(len(inputs)):
            out.extend(self._predict_batch(inputs[sl], image_cache))
        return out

    def _predict_batch(
        self, batch: Sequence[ModelInput], cache: Mapping[str, ImageFeatures] | None
    ) -> list[PatientPrediction]:
        feats = self._batch_image_features(batch, cache)
        img_dim = self.network.image.embed_dim + 1
        image = np.zeros((len(batch), img_dim), dtype=np.float32)
        for r, f in enumerate(feats):
            if f is not None and f.usable:
                if f.embedding.shape != (img_dim - 1,):
                    raise ModelInputError(
                        f"patient {batch[r].patient_id}: cached image embedding has shape "
                        f"{f.embedding.shape}, this model needs ({img_dim - 1},)"
                    )
                image[r, :-1] = f.embedding
                image[r, -1] = f.fibrosis_burden
        text_present = np.array([has_text(i) for i in batch], dtype=bool)
        cfg = self.config
        text = np.zeros((len(batch), cfg.text_max_segments, cfg.text_dim), dtype=np.float32)
        if text_present.any():
            idx = np.flatnonzero(text_present)
            text[idx] = self.encode_texts([batch[int(i)].text or "" for i in idx])
        image_present = np.array([f is not None and f.usable for f in feats], dtype=bool)
        t = assemble(batch, self.schema, text, text_present, image, image_present)
        empty = ~t["present"].any(dim=1)
        if bool(empty.any()):
            r = int(empty.nonzero()[0, 0])
            f = feats[r]
            why = (
                "" if f is None or f.usable else f" (MRI could not be analysed: {f.quality_reason})"
            )
            raise ModelInputError(
                f"patient {batch[r].patient_id}: no usable modality (numeric, text or image){why}"
            )
        t = {k: v.to(self.device) for k, v in t.items()}
        with self._autocast():
            res = self.network(t["numeric"], t["text"], t["image"], t["present"])
        probs = self.network.calibrated_probabilities(res["logits"].float()).cpu().numpy()
        causes = res["cause_logits"].float().softmax(1).cpu().numpy()
        weights = res["weights"].float().cpu().numpy()
        present = t["present"].cpu().numpy()
        contrib = None
        if self.attribution:
            with self._autocast():
                assert self.background is not None
                reference, shares = modality_contributions(
                    self.network,
                    t["numeric"],
                    t["text"],
                    t["image"],
                    t["present"],
                    self.background,
                    full=torch.from_numpy(probs),
                )
            ref = reference.float().cpu().numpy()
            contrib = shares.float().cpu().numpy()  # (B, M, O)
        preds = []
        for r, inp in enumerate(batch):
            p = {o: float(probs[r, j]) for j, o in enumerate(OUTCOMES)}
            w = {
                m: (float(weights[r, j]) if present[r, j] else 0.0)
                for j, m in enumerate(MODALITIES)
            }
            f = feats[r]
            preds.append(
                PatientPrediction(
                    patient_id=inp.patient_id,
                    probabilities=p,
                    tiers={o: tier(p[o], self.thresholds[o]) for o in OUTCOMES},
                    modality_weights=w,
                    fibrosis_burden=None if f is None or not f.usable else float(f.fibrosis_burden),
                    cause_probabilities={
                        c: float(causes[r, j]) for j, c in enumerate(self.config.causes)
                    },
                    image_features=f,
                    contributions={}
                    if contrib is None
                    else {
                        o: {
                            "reference": float(ref[r, j]),
                            **{m: float(contrib[r, k, j]) for k, m in enumerate(MODALITIES)},
                        }
                        for j, o in enumerate(OUTCOMES)
                    },
                )
            )
        return preds
