"""Training of M-PRTM on in-memory examples (no FHIR or DICOM here).

Stage 1 trains DAE-Former on slices with masks; stage 2 trains the numeric MLP, the text
projection, the fusion and the heads on cached embeddings with the image encoder and a
frozen text encoder held fixed.  Optionally the text encoder's top layers are fine-tuned
(``cfg.text_trainable_layers``) and/or the image branch is trained jointly in stage 2
(``cfg.joint``); embeddings are then recomputed per batch (slow on CPU).
With ``cfg.ensemble`` > 1 further stage-2 networks are trained with other seeds on the
same embeddings and held as one :class:`MPRTMEnsemble`.  Three single-modality networks
are trained in stage 2 as well (baselines for evaluation).  Probabilities are calibrated
on the validation split and tier thresholds are set there; typical training patients
are drawn for the attribution background.  Everything is seeded: on CPU the same seed and
data give the same checkpoint weights.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model._batch import assemble, has_text
from model._fusion_train import predict_logits, train_fusion
from model._live import LiveEncoders
from model._plots import plot_training_curves
from model._seg_train import embed_images, train_segmentation
from model.attribution import select_background
from model.calibration import fit_temperature, tier_thresholds
from model.checkpoint import Checkpoint, save_checkpoint
from model.config import ModelConfig
from model.errors import TrainingError
from model.image_quality import ImageReference
from model.metrics import binary_metrics
from model.mprtm import IMAGE, MPRTM, TEXT, MPRTMEnsemble, build_model
from model.numeric_branch import FeatureSchema
from model.text_branch import SegmentStore, TextEmbeddingCache, TextEncoder
from model.types import MODALITIES, OUTCOMES, LabelledExample
from model.validation import training_reference

log = logging.getLogger("mprtm.train")
#: State-dict prefixes of the text transforms fitted before stage 2 (shared with baselines).
_FITTED_TEXT = ("text_pool.white_", "note_concepts.")

#: Fractions of patients in train / validation / test.
SPLIT = (0.6, 0.15, 0.25)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def split_patients(ids: Sequence[str], seed: int) -> dict[str, list[str]]:
    """Patient-level split into ``train``, ``val`` and ``test`` (fractions :data:`SPLIT`)."""
    unique = sorted(set(ids))
    if len(unique) < 10:
        raise TrainingError(f"need at least 10 patients to split, got {len(unique)}")
    order = np.random.default_rng(seed).permutation(len(unique))
    n_tr = int(round(SPLIT[0] * len(unique)))
    n_va = max(1, int(round(SPLIT[1] * len(unique))))
    pick = [unique[i] for i in order]
    return {"train": pick[:n_tr], "val": pick[n_tr : n_tr + n_va], "test": pick[n_tr + n_va :]}


def data_fingerprint(examples: Sequence[LabelledExample]) -> str:
    """sha256 over ids, numeric values, text, image fingerprints/shapes and labels."""
    h = hashlib.sha256()
    for ex in sorted(examples, key=lambda e: e.input.patient_id):
        inp = ex.input
        h.update(inp.patient_id.encode())
        h.update(repr(sorted(inp.numeric.items())).encode())
        h.update(hashlib.sha256((inp.text or "").encode()).digest())
        if inp.image is not None:
            h.update((inp.image_fingerprint or repr(inp.image.shape)).encode())
        h.update(repr(sorted(ex.labels.items())).encode())
    return h.hexdigest()


def label_tensors(
    examples: Sequence[LabelledExample], causes: Sequence[str]
) -> dict[str, torch.Tensor]:
    """``y`` (N, 5) with NaN unknown, ``cause`` (N,) with -1 unknown, ``burden`` (N,)."""
    y = np.full((len(examples), len(OUTCOMES)), np.nan, dtype=np.float32)
    cause = np.full(len(examples), -1, dtype=np.int64)
    burden = np.full(len(examples), np.nan, dtype=np.float32)
    index = {c: i for i, c in enumerate(causes)}
    for r, ex in enumerate(examples):
        for j, o in enumerate(OUTCOMES):
            if o in ex.labels and ex.labels[o] is not None:
                y[r, j] = float(ex.labels[o])
        if ex.cause is not None and ex.cause in index:
            cause[r] = index[ex.cause]
        if ex.fibrosis_burden is not None and ex.input.image is not None:
            burden[r] = float(ex.fibrosis_burden)
    return {
        "y": torch.from_numpy(y),
        "cause": torch.from_numpy(cause),
        "burden": torch.from_numpy(burden),
    }


def text_embeddings(
    examples: Sequence[LabelledExample], cache: TextEmbeddingCache, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    present = np.array([has_text(e.input) for e in examples], dtype=bool)
    enc = cache.encoder
    emb = np.zeros((len(examples), enc.max_segments, enc.hidden_size), dtype=np.float32)
    idx = np.flatnonzero(present)
    if len(idx):
        emb[idx] = cache.get_many(
            [examples[int(i)].input.text or "" for i in idx], progress=progress
        )
    return emb, present


@dataclass
class TrainResult:
    """What :func:`train_mprtm` produced."""

    checkpoint: Checkpoint
    path: Path | None
    seconds: float


def _calibrate(
    net: MPRTM | MPRTMEnsemble, data: dict[str, torch.Tensor], only: int | None
) -> np.ndarray:
    """Fit per-outcome scale/bias on validation logits; return calibrated probabilities."""
    logits = predict_logits(net, data, only)["logits"].cpu().numpy()
    y = data["y"].cpu().numpy()
    scale = np.ones(len(OUTCOMES), dtype=np.float32)
    bias = np.zeros(len(OUTCOMES), dtype=np.float32)
    for j in range(len(OUTCOMES)):
        ok = ~np.isnan(y[:, j]) & ~np.isnan(logits[:, j])
        if ok.sum() >= 10:
            scale[j], bias[j] = fit_temperature(logits[ok, j].astype(np.float64), y[ok, j])
    net.calib_scale.copy_(torch.from_numpy(scale))
    net.calib_bias.copy_(torch.from_numpy(bias))
    with torch.inference_mode():
        dev = net.calib_scale.device
        return net.calibrated_probabilities(torch.from_numpy(logits).to(dev)).cpu().numpy()


def train_mprtm(
    examples: Sequence[LabelledExample],
    cfg: ModelConfig,
    seed: int = 0,
    device: str = "cpu",
    out: str | Path | None = None,
    progress: bool = True,
    text_cache_dir: str | Path | None = None,
    synthetic: bool = False,
    baselines: bool = True,
    segment_store: SegmentStore | None = None,
) -> TrainResult:
    """Train M-PRTM end to end and (optionally) write the checkpoint.

    Args:
        examples: labelled patients (the test split is set aside and never used).
        cfg: model config; ``numeric_features`` and ``text_dim`` are filled in here.
        seed: seeds the split, initialisation, shuffling and augmentation.
        device: ``cpu`` or ``cuda``.
        out: checkpoint path (a model card and ``<stem>.curves.png`` go beside it).
        progress: tqdm progress bars.
        text_cache_dir: folder for cached frozen-text embeddings.
        synthetic: mark the checkpoint as trained on simulated data.
        baselines: also train the single-modality networks.
        segment_store: frozen-text segment embeddings shared with inference (the
            application database's cache), read and filled.
    """
    t0 = time.perf_counter()
    seed_everything(seed)
    dev = torch.device(device)
    if not examples:
        raise TrainingError("no training examples")
    if cfg.ensemble > 1 and (cfg.text_trainable_layers > 0 or cfg.joint):
        raise TrainingError(
            "ensemble > 1 needs a frozen text encoder (text_trainable_layers = 0) and "
            "joint = false: the members share the encoders, so they cannot each tune them"
        )
    split = split_patients([e.input.patient_id for e in examples], seed)
    by_id = {e.input.patient_id: e for e in examples}
    train = [by_id[i] for i in split["train"]]
    val = [by_id[i] for i in split["val"]]
    if not any(e.labels for e in train):
        raise TrainingError("no outcome labels in the training split")
    schema = FeatureSchema.fit([e.input.numeric for e in train])
    encoder = TextEncoder(
        cfg.text_encoder, cfg.text_trainable_layers, cfg.text_window, cfg.text_max_segments
    )
    cfg = dataclasses.replace(cfg, numeric_features=schema.names, text_dim=encoder.hidden_size)
    net = build_model(cfg).to(dev)
    encoder.to(dev)
    rng = np.random.default_rng(seed)
    hist = train_segmentation(net.image, train, val, cfg, rng, dev, cfg.seg_epochs, progress)
    frozen = (
        encoder
        if encoder.frozen
        else TextEncoder(cfg.text_encoder, 0, cfg.text_window, cfg.text_max_segments)
    )
    cache = TextEmbeddingCache(frozen, text_cache_dir, segment_store)
    tensors = {}
    for name, part in (("train", train), ("val", val)):
        temb, tpres = text_embeddings(part, cache, progress)
        iemb, ipres = embed_images(net.image, part, cfg, dev, progress)
        t = assemble([e.input for e in part], schema, temb, tpres, iemb, ipres)
        t.update(label_tensors(part, cfg.causes))
        tensors[name] = {k: v.to(dev) for k, v in t.items()}
    has_txt = tensors["train"]["present"][:, TEXT]
    if cfg.text_whiten > 0 and bool(has_txt.any()):
        net.text_pool.fit_whitening(tensors["train"]["text"][has_txt], cfg.text_whiten)
    if net.note_concepts is not None and bool(has_txt.any()):
        found = net.note_concepts.fit(tensors["train"]["text"][has_txt].cpu(), seed)
        net.note_concepts.to(dev)
        log.info(
            "note concepts: %d components from %d of %d sentence types (%d segments)",
            found["components"],
            found["kept"],
            found["clusters"],
            found["segments"],
        )
    live = None
    if not encoder.frozen or cfg.joint:
        live = LiveEncoders(
            {"train": train, "val": val},
            cfg,
            dev,
            text=None if encoder.frozen else encoder,
            image=net.image if cfg.joint else None,
        )
    hist.update(
        train_fusion(
            net,
            tensors["train"],
            tensors["val"],
            cfg,
            seed,
            cfg.fusion_epochs,
            None,
            progress,
            live=live,
        )
    )
    image_state = copy.deepcopy(net.image.state_dict())
    fitted_text = {  # the transforms fitted on the training text, not learned weights
        k: v.clone() for k, v in net.state_dict().items() if k.startswith(_FITTED_TEXT)
    }
    val_probs = _calibrate(net, tensors["val"], None)
    y_val = tensors["val"]["y"].cpu().numpy()
    member_metrics = [_val_metrics(val_probs, y_val)]
    network: MPRTM | MPRTMEnsemble = net
    if cfg.ensemble > 1:
        members = [net]
        for k in range(1, cfg.ensemble):
            member_seed = seed + 1000 * k  # clear of the baselines' seed + 1..3
            seed_everything(member_seed)
            m_net = build_model(cfg).to(dev)
            m_net.image.load_state_dict(image_state)
            m_net.load_state_dict(fitted_text, strict=False)
            h = train_fusion(
                m_net,
                tensors["train"],
                tensors["val"],
                cfg,
                member_seed,
                cfg.fusion_epochs,
                None,
                progress,
                f"stage 2: fusion member {k + 1}/{cfg.ensemble}",
            )
            hist[f"member{k + 1}_val_loss"] = h["val_loss"]
            member_metrics.append(_val_metrics(_calibrate(m_net, tensors["val"], None), y_val))
            members.append(m_net)
        network = MPRTMEnsemble(cfg, members).to(dev)
        val_probs = _calibrate(network, tensors["val"], None)
    thresholds = {
        o: tier_thresholds(val_probs[~np.isnan(val_probs[:, j]), j]) for j, o in enumerate(OUTCOMES)
    }
    metrics: dict[str, Any] = {"val": {"fusion": _val_metrics(val_probs, y_val)}}
    metrics["training_reference"] = training_reference(
        [e.input.numeric for e in train], tensors["train"]["present"].cpu().numpy(), MODALITIES
    )
    tr = tensors["train"]
    pick = select_background(tr["present"], cfg.attribution_background, seed).to(dev)
    if len(pick) == 0:
        log.warning("no training patient has all three modalities: no contributions")
    background = {m: tr[m][pick].float().cpu().clone() for m in MODALITIES} if len(pick) else None
    image_reference = _image_reference(net, tensors, {"train": train, "val": val}, cfg, dev)
    if cfg.ensemble > 1:
        metrics["val"]["ensemble_members"] = member_metrics
    if hist.get("seg_val_dice_enhancement"):
        best = int(
            np.nanargmax(np.add(hist["seg_val_dice_myocardium"], hist["seg_val_dice_enhancement"]))
        )
        metrics["val"]["segmentation"] = {
            "dice_myocardium": hist["seg_val_dice_myocardium"][best],
            "dice_enhancement": hist["seg_val_dice_enhancement"][best],
        }
    base_states: dict[str, dict[str, torch.Tensor]] = {}
    if baselines:
        for j, m in enumerate(MODALITIES):
            seed_everything(seed + 1 + j)
            b = build_model(cfg).to(dev)
            b.image.load_state_dict(image_state)
            b.load_state_dict(fitted_text, strict=False)
            tr_j, va_j = (
                _without_text(tensors[k]) if j != TEXT else tensors[k] for k in ("train", "val")
            )
            h = train_fusion(
                b,
                tr_j,
                va_j,
                cfg,
                seed + 1 + j,
                cfg.fusion_epochs,
                j,
                progress,
                f"baseline {m}_only",
            )
            hist[f"{m}_only_val_loss"] = h["val_loss"]
            probs = _calibrate(b, va_j, j)
            metrics["val"][f"{m}_only"] = _val_metrics(probs, y_val)
            base_states[f"{m}_only"] = {
                k: v.cpu() for k, v in b.state_dict().items() if not k.startswith("image.")
            }
    ckpt = Checkpoint(
        config=cfg,
        state_dict={k: v.cpu() for k, v in network.state_dict().items()},
        schema=schema,
        text_encoder=encoder.identity(),
        text_encoder_state=None
        if encoder.frozen
        else {k: v.cpu() for k, v in encoder.bert.state_dict().items()},
        thresholds=thresholds,
        metrics=metrics,
        data_fingerprint=data_fingerprint(examples),
        synthetic_training_data=synthetic,
        split={"train": split["train"], "val": split["val"]},
        baselines=base_states,
        history=hist,
        background=background,
        image_reference=None if image_reference is None else image_reference.to_dict(),
    )
    path = None
    if out is not None:
        path = save_checkpoint(ckpt, out)
        plot_training_curves(hist, path.with_suffix(".curves.png"))
    return TrainResult(ckpt, path, time.perf_counter() - t0)


def _image_reference(
    net: MPRTM,
    tensors: dict[str, dict[str, torch.Tensor]],
    parts: dict[str, Sequence[LabelledExample]],
    cfg: ModelConfig,
    dev: torch.device,
) -> ImageReference | None:
    """The training series' embedding distribution, scaled by the validation series'
    distances (the image quality gate's familiarity signal).  Joint training moved the
    image branch after the embeddings were taken, so they are taken again then."""
    emb = {}
    for name in ("train", "val"):
        if cfg.joint:
            e, present = embed_images(net.image, parts[name], cfg, dev, progress=False)
            emb[name] = e[present, :-1]
        else:
            t = tensors[name]
            rows = t["present"][:, IMAGE].cpu().numpy()
            emb[name] = t["image"].cpu().numpy()[rows, :-1]
    ref = ImageReference.fit(emb["train"], emb["val"])
    if ref is None:
        log.warning("fewer than 8 training series: no image familiarity reference")
    return ref


def _without_text(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of a baseline that never sees the text: one padding segment instead
    of all of them (the text is masked anyway; the pooling over 48 segments was most of
    a numeric- or image-only epoch)."""
    return {**t, "text": t["text"][:, :1]}


def _val_metrics(probs: np.ndarray, y: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    for j, o in enumerate(OUTCOMES):
        ok = ~np.isnan(y[:, j]) & ~np.isnan(probs[:, j])
        if ok.sum() and 0 < y[ok, j].sum() < ok.sum():
            m = binary_metrics(y[ok, j], probs[ok, j], n_boot=0)
            out[o] = {k: float(m[k]) for k in ("auroc", "brier", "ece")}  # type: ignore[arg-type]
    return out
