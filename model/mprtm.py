"""The M-PRTM network and ``build_model(cfg)``, its only constructor."""

from __future__ import annotations

import torch
from torch import nn

from model.config import ModelConfig
from model.fusion import ModalityFusion
from model.heads import PrognosisHeads
from model.image_branch import ImageBranch
from model.note_concepts import NoteConcepts
from model.numeric_branch import NumericEncoder
from model.text_branch import SentencePooling
from model.types import MODALITIES, OUTCOMES

#: Burden above which enhancement counts as present (an explicit input of the image token).
BURDEN_PRESENT = 0.01
NUMERIC, TEXT, IMAGE = (MODALITIES.index(m) for m in ("numeric", "text", "image"))


def _projector(in_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, out_dim),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(out_dim, out_dim),
        nn.LayerNorm(out_dim),
    )


class SharedRiskLinear(nn.Module):
    """A reduced-rank linear map: ``inputs -> rank`` shared risk scores ``-> outputs``.

    The outcomes of one patient are driven by the same few risk factors, so the five
    linear models are estimated jointly through ``rank`` shared directions (reduced-rank
    regression, Izenman 1975; multi-task learning with shared structure, Caruana 1997)
    instead of independently.  ``down`` starts small and random and ``up`` at zero, so
    the output starts at zero, as the full-rank path does.

    Args:
        in_dim: number of wide inputs.
        out_dim: number of outcomes.
        rank: number of shared scores.
    """

    def __init__(self, in_dim: int, out_dim: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(in_dim, rank, bias=False)
        self.up = nn.Linear(rank, out_dim)
        nn.init.normal_(self.down.weight, std=0.01)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    @property
    def weight(self) -> torch.Tensor:
        """The effective (out_dim, in_dim) weight matrix."""
        return self.up.weight @ self.down.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


class MPRTM(nn.Module):
    """Numeric MLP + text segment pooling + DAE-Former image branch, attention fusion, heads.

    The text encoder itself (a BERT) lives outside this module (:class:`TextEncoder`), so
    a frozen encoder's weights are not duplicated in checkpoints; this module takes its
    segment embeddings and pools them (:class:`SentencePooling`).  Each modality token
    also has its own outcome head (``aux_logits``), trained with weight
    ``cfg.aux_weight`` so that every token carries prognostic information of its own
    and the fusion has something to weigh.  Calibration (per-outcome scale and bias on
    the logits) is stored in buffers and applied by :meth:`calibrated_probabilities`.

    Args:
        cfg: the model config; ``cfg.numeric_features`` must be set.
    """

    calib_scale: torch.Tensor
    calib_bias: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if not cfg.numeric_features:
            raise ValueError("cfg.numeric_features is empty: fit a FeatureSchema first")
        self.cfg = cfg
        d = cfg.embed_dim
        self.image = ImageBranch(
            cfg.image_size,
            cfg.max_slices,
            cfg.num_classes,
            cfg.enc_dims,
            cfg.enc_depths,
            cfg.first_stride,
            cfg.mlp_ratio,
            cfg.crop,
            cfg.localiser,
            cfg.localiser_margin,
        )
        self.numeric = NumericEncoder(
            2 * len(cfg.numeric_features), cfg.numeric_hidden, d, cfg.dropout
        )
        self.text_pool = SentencePooling(cfg.text_dim, d, cfg.dropout, cfg.text_concepts)
        self.image_proj = _projector(self.image.embed_dim + 3, d, cfg.dropout)
        self.fusion = ModalityFusion(d, cfg.fusion_heads, len(MODALITIES), TEXT, cfg.dropout)
        self.heads = PrognosisHeads(d, len(OUTCOMES), len(cfg.causes), cfg.dropout)
        self.aux_heads = nn.ModuleList(nn.Linear(d, len(OUTCOMES)) for _ in MODALITIES)
        #: False while training the linear path alone (phase A): logits come from it only.
        self.use_deep = True
        self.numeric_width = 2 * len(cfg.numeric_features)
        self.note_concepts: NoteConcepts | None = None
        if cfg.note_concepts > 0:
            self.note_concepts = NoteConcepts(cfg.text_dim, cfg.note_clusters, cfg.note_concepts)
        self.shortcut: nn.Linear | SharedRiskLinear | None = None
        if cfg.linear_shortcut:
            wide = 2 * len(cfg.numeric_features) + 2 + cfg.text_concepts + cfg.note_concepts
            if cfg.shortcut_rank > 0:
                self.shortcut = SharedRiskLinear(wide, len(OUTCOMES), cfg.shortcut_rank)
            else:
                self.shortcut = nn.Linear(wide, len(OUTCOMES))
                nn.init.zeros_(self.shortcut.weight)
                nn.init.zeros_(self.shortcut.bias)
        self.register_buffer("calib_scale", torch.ones(len(OUTCOMES)))
        self.register_buffer("calib_bias", torch.zeros(len(OUTCOMES)))

    def text_features(self, text: torch.Tensor, notes: bool = True) -> dict[str, torch.Tensor]:
        """What the network derives from the text alone, per row: ``token`` (B, D), the
        segment ``attention`` (B, S), the sentence-detector scores ``concepts`` (B, K)
        and, with a note-concept layer, its scores ``notes`` (B, C) (zeros when
        ``notes`` is False).  Each row depends on that row's text only, so a caller that
        scores the same texts in many combinations (:mod:`model.attribution`) computes
        them once and passes rows of them to :meth:`forward`.

        Args:
            text: (B, S, text_dim) segment embeddings, zero rows for padding.
            notes: compute the note-concept scores (False skips them for a batch
                without text, e.g. a numeric- or image-only baseline).
        """
        token, attention, concepts = self.text_pool(text)  # (B, D), (B, S), (B, K)
        feats = {"token": token, "attention": attention, "concepts": concepts}
        if self.note_concepts is not None:
            if notes:
                feats["notes"] = self.note_concepts(text)
            else:
                feats["notes"] = text.new_zeros(len(text), self.note_concepts.components)
        return feats

    def forward(
        self,
        numeric: torch.Tensor,
        text: torch.Tensor,
        image: torch.Tensor,
        present: torch.Tensor,
        text_feats: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Fuse the three modalities.

        Args:
            numeric: (B, 2F) standardised values and missingness indicators.
            text: (B, S, text_dim) segment embeddings, zero rows for padding (any values
                where the text is missing).
            image: (B, 2*C_3 + 1) image embedding with the burden last.
            present: (B, 3) bool mask in :data:`MODALITIES` order.
            text_feats: :meth:`text_features` of ``text``, already computed (then
                ``text`` itself is not read).

        Returns:
            ``logits`` (B, 5), ``cause_logits`` (B, K), ``burden`` (B,), ``weights`` (B, 3),
            ``embedding`` (B, D), ``aux_logits`` (B, 3, 5) of the per-modality heads and
            ``text_attention`` (B, S), each text segment's share of the text token.
        """
        burden = image[:, -1:]  # (B, 1) measured on the segmentation
        image = torch.cat([image, 10.0 * burden, (burden > BURDEN_PRESENT).to(image.dtype)], 1)
        if not self.use_deep:
            return self._linear_only(numeric, text, image, present)
        if text_feats is None:
            text_feats = self.text_features(text, notes=bool(present[:, TEXT].any()))
        tokens = torch.stack(
            [self.numeric(numeric), text_feats["token"], self.image_proj(image)], dim=1
        )  # (B, 3, D)
        fused, weights = self.fusion(tokens, present)  # (B, D), (B, 3)
        out = self.heads(fused)
        if self.shortcut is not None:
            linear = self.shortcut(
                self._wide(numeric, image, present, text_feats["concepts"], text_feats.get("notes"))
            )
            out["logits"] = out["logits"] + linear
        out["weights"] = weights
        out["embedding"] = fused
        out["aux_logits"] = torch.stack(
            [head(tokens[:, j]) for j, head in enumerate(self.aux_heads)], dim=1
        )  # (B, 3, O)
        out["text_attention"] = text_feats["attention"]
        return out

    def _linear_only(
        self, numeric: torch.Tensor, text: torch.Tensor, image: torch.Tensor, present: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Phase A of training: the linear path alone, without running the deep branches
        (several times faster); the other outputs are zeros of the usual shapes."""
        if self.shortcut is None:
            raise RuntimeError("use_deep=False needs the linear path (cfg.linear_shortcut)")
        notes = None
        if self.note_concepts is not None:
            notes = self.text_features(text, notes=bool(present[:, TEXT].any()))["notes"]
        wide = self._wide(numeric, image, present, self.text_pool.detector_scores(text), notes)
        b = len(numeric)
        zeros = numeric.new_zeros
        return {
            "logits": self.shortcut(wide),
            "cause_logits": zeros(b, len(self.cfg.causes)),
            "burden": zeros(b),
            "weights": zeros(b, len(MODALITIES)),
            "embedding": zeros(b, self.cfg.embed_dim),
            "text_attention": zeros(b, text.shape[1]),
        }

    def _wide(
        self,
        numeric: torch.Tensor,
        image: torch.Tensor,
        present: torch.Tensor,
        detectors: torch.Tensor,
        notes: torch.Tensor | None,
    ) -> torch.Tensor:
        """Inputs of the linear path: numeric values and flags, LGE burden and presence,
        sentence-detector scores and note-concept scores; zero for a missing modality."""
        p = present.to(numeric.dtype)  # (B, 3): missing modalities contribute nothing
        parts = [numeric * p[:, :1], image[:, -2:] * p[:, 2:], detectors * p[:, 1:2]]
        if notes is not None:
            parts.append(notes * p[:, 1:2])
        return torch.cat(parts, dim=1)

    def calibrated_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """sigmoid(scale * logit + bias) per outcome: (B, 5)."""
        return torch.sigmoid(logits * self.calib_scale + self.calib_bias)


class MPRTMEnsemble(nn.Module):
    """``cfg.ensemble`` stage-2 networks over one shared image branch.

    The members differ only in the seed of their stage-2 training (initialisation,
    shuffling, modality dropout); they share the segmentation network, the feature
    schema and the text transforms fitted on the training split.  Each member keeps its
    own calibration; the ensemble's ``logits`` are the mean of the members' calibrated
    logits (averaging in log-odds space), and the ensemble's own scale and bias,
    fitted on the validation split, re-calibrate that mean (averaging shrinks the
    spread of the scores).  Cause probabilities, burden, modality weights, auxiliary
    logits and text attention are member means, so a missing modality's weight is still
    exactly 0.  Deep ensembles: Lakshminarayanan et al., NeurIPS 2017.

    It takes and returns what :class:`MPRTM` does, so the predictor, the evaluation and
    the Shapley attribution use it unchanged.

    Args:
        cfg: the model config (``cfg.ensemble`` members are built).
        members: trained members to hold (their image branches are dropped; the first
            member's becomes the shared one); None builds untrained members.
    """

    calib_scale: torch.Tensor
    calib_bias: torch.Tensor

    def __init__(self, cfg: ModelConfig, members: list[MPRTM] | None = None) -> None:
        super().__init__()
        nets = members if members is not None else [MPRTM(cfg) for _ in range(cfg.ensemble)]
        if len(nets) != cfg.ensemble or len(nets) < 2:
            raise ValueError(f"an ensemble needs cfg.ensemble >= 2 members, got {len(nets)}")
        self.cfg = cfg
        self.image = nets[0].image
        for net in nets:
            del net.image  # the members' forward never runs it; one shared copy is kept
        self.members = nn.ModuleList(nets)
        self.register_buffer("calib_scale", torch.ones(len(OUTCOMES)))
        self.register_buffer("calib_bias", torch.zeros(len(OUTCOMES)))

    def forward(
        self,
        numeric: torch.Tensor,
        text: torch.Tensor,
        image: torch.Tensor,
        present: torch.Tensor,
        text_feats: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """As :meth:`MPRTM.forward`; ``logits`` are the mean calibrated member logits."""
        if text_feats is None:
            outs = [m(numeric, text, image, present) for m in self.members]
        else:
            outs = [
                m(numeric, text, image, present, self._member_feats(text_feats, k))
                for k, m in enumerate(self.members)
            ]
        n = float(len(outs))

        def mean(key: str) -> torch.Tensor:
            return torch.stack([o[key] for o in outs]).mean(0)

        logits = torch.stack(
            [
                o["logits"] * m.calib_scale + m.calib_bias
                for m, o in zip(self.members, outs, strict=True)
            ]
        ).mean(0)
        causes = torch.stack([o["cause_logits"].log_softmax(-1) for o in outs])
        res = {
            "logits": logits,
            "cause_logits": torch.logsumexp(causes, 0) - torch.log(causes.new_tensor(n)),
        }
        for key in ("burden", "weights", "embedding", "aux_logits", "text_attention"):
            if key in outs[0]:
                res[key] = mean(key)
        return res

    def text_features(self, text: torch.Tensor, notes: bool = True) -> dict[str, torch.Tensor]:
        """Every member's :meth:`MPRTM.text_features`, keys prefixed ``"<member>."``."""
        feats: dict[str, torch.Tensor] = {}
        for k, member in enumerate(self.members):
            assert isinstance(member, MPRTM)
            for name, value in member.text_features(text, notes).items():
                feats[f"{k}.{name}"] = value
        return feats

    @staticmethod
    def _member_feats(feats: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
        prefix = f"{k}."
        return {key[len(prefix) :]: v for key, v in feats.items() if key.startswith(prefix)}

    def calibrated_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """sigmoid(scale * logit + bias) per outcome: (B, 5)."""
        return torch.sigmoid(logits * self.calib_scale + self.calib_bias)


#: What a checkpoint's network is: one M-PRTM or an ensemble of them.
Network = MPRTM | MPRTMEnsemble


def build_model(cfg: ModelConfig) -> MPRTM:
    """Build one M-PRTM network described by ``cfg`` (random weights; nothing is
    downloaded).  ``cfg.ensemble`` is ignored here: see :func:`build_network`."""
    cfg.validate()
    return MPRTM(cfg)


def build_network(cfg: ModelConfig) -> Network:
    """The network a checkpoint with ``cfg`` holds: :class:`MPRTM`, or
    :class:`MPRTMEnsemble` when ``cfg.ensemble`` > 1 (random weights)."""
    cfg.validate()
    return MPRTM(cfg) if cfg.ensemble == 1 else MPRTMEnsemble(cfg)
