"""Stage 2 with trainable encoders: a fine-tuned text encoder and/or joint image training.

When the text encoder's top layers are fine-tuned, or ``cfg.joint`` trains the image
branch together with the fusion, embeddings cannot be cached: every training batch
recomputes them with gradients, and the validation embeddings are recomputed after each
epoch.  In joint mode the segmentation loss on the batch's masks is added so the
segmenter keeps segmenting.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from model._seg_train import segmentation_loss
from model.config import ModelConfig
from model.image_branch import ImageBranch, prepare_mask, prepare_volume
from model.text_branch import TextEncoder
from model.types import LabelledExample

Tensors = dict[str, torch.Tensor]


class LiveEncoders:
    """Recompute text and/or image embeddings inside stage 2.

    Args:
        splits: split name -> examples, in the row order of that split's tensors.
        cfg: model config.
        device: where the encoders run.
        text: the text encoder to fine-tune, or None (cached embeddings are used).
        image: the image branch to train jointly, or None.
    """

    def __init__(
        self,
        splits: dict[str, Sequence[LabelledExample]],
        cfg: ModelConfig,
        device: torch.device,
        text: TextEncoder | None = None,
        image: ImageBranch | None = None,
    ) -> None:
        if text is None and image is None:
            raise ValueError("LiveEncoders needs a text encoder or an image branch")
        self.text, self.image, self.device = text, image, device
        self.texts = {k: [(e.input.text or "").strip() for e in v] for k, v in splits.items()}
        self.volumes: dict[str, list[torch.Tensor | None]] = {}
        self.masks: dict[str, list[torch.Tensor | None]] = {}
        if image is not None:
            for k, v in splits.items():
                boxes = [
                    None if e.input.image is None else image.crop_box(e.input.image) for e in v
                ]
                self.volumes[k] = [
                    None
                    if e.input.image is None
                    else prepare_volume(e.input.image, cfg.image_size, cfg.max_slices, box=b)
                    for e, b in zip(v, boxes, strict=True)
                ]
                self.masks[k] = [
                    None
                    if e.masks is None or e.input.image is None or e.masks.shape[0] > cfg.max_slices
                    else prepare_mask(e.masks, cfg.image_size, box=b)
                    for e, b in zip(v, boxes, strict=True)
                ]

    def parameters(self) -> list[torch.nn.Parameter]:
        out: list[torch.nn.Parameter] = []
        if self.text is not None:
            out += [p for p in self.text.parameters() if p.requires_grad]
        if self.image is not None:
            for p in self.image.parameters():
                p.requires_grad = True
            out += list(self.image.parameters())
        return out

    def train(self, mode: bool = True) -> None:
        for m in (self.text, self.image):
            if m is not None:
                m.train(mode)

    def batch(self, split: str, rows: torch.Tensor, b: Tensors) -> tuple[Tensors, torch.Tensor]:
        """``b`` with fresh embeddings of ``rows`` (with gradients) and an extra loss."""
        b = dict(b)
        extra = torch.zeros((), device=self.device)
        idx = [int(r) for r in rows]
        if self.text is not None:
            has = [i for i, r in enumerate(idx) if self.texts[split][r]]
            if has:
                emb = self.text([self.texts[split][idx[i]] for i in has])
                t = b["text"].clone()
                t[torch.tensor(has, device=t.device)] = emb.to(t.dtype)
                b["text"] = t
        if self.image is not None:
            img = b["image"].clone()
            seg_terms = []
            for i, r in enumerate(idx):
                vol = self.volumes[split][r]
                if vol is None:
                    continue
                f = self.image.forward_features(vol.to(self.device))
                img[i] = torch.cat([f["embedding"], f["burden"][None]])
                m = self.masks[split][r]
                if m is not None:
                    seg_terms.append(segmentation_loss(f["logits"], m.to(self.device)))
            b["image"] = img
            if seg_terms:
                extra = extra + torch.stack(seg_terms).mean()
        return b, extra

    @torch.inference_mode()
    def refresh(self, split: str, data: Tensors) -> None:
        """Recompute every row's embeddings of ``split`` in place (inference mode)."""
        self.train(False)
        if self.text is not None:
            rows = [i for i, t in enumerate(self.texts[split]) if t]
            for s in range(0, len(rows), 32):
                part = rows[s : s + 32]
                emb = self.text([self.texts[split][i] for i in part])
                data["text"][torch.tensor(part)] = emb.to(data["text"].dtype)
        if self.image is not None:
            for i, vol in enumerate(self.volumes[split]):
                if vol is not None:
                    f = self.image.forward_features(vol.to(self.device))
                    data["image"][i] = torch.cat([f["embedding"], f["burden"][None]])

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        return {} if self.text is None else {"text": copy.deepcopy(self.text.state_dict())}

    def load_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        if self.text is not None and "text" in state:
            self.text.load_state_dict(state["text"])
