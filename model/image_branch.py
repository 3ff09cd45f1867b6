"""Image branch: DAE-Former segmentation of LGE slices and the series embedding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.daeformer import DAEFormer
from model.errors import ModelInputError
from model.localise import Box, HeartLocaliser, box_from_probability, crop

#: Segmentation labels.
BACKGROUND, MYOCARDIUM, ENHANCEMENT = 0, 1, 2


def select_slices(n: int, max_slices: int) -> np.ndarray:
    """Indices of at most ``max_slices`` slices spread evenly over ``n``."""
    if n <= max_slices:
        return np.arange(n)
    return np.round(np.linspace(0, n - 1, max_slices)).astype(np.int64)


def crop_box(h: int, w: int, crop: float) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the centred square-ish crop keeping ``crop`` of each side."""
    if not 0.0 < crop <= 1.0:
        raise ValueError(f"crop must be in (0, 1], got {crop}")
    ch, cw = max(1, round(h * crop)), max(1, round(w * crop))
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def prepare_volume(
    volume: np.ndarray,
    size: int,
    max_slices: int,
    crop: float = 1.0,
    box: Box | None = None,
) -> torch.Tensor:
    """Check, subsample, crop and resize a series to (S, 1, size, size) float32.

    Args:
        volume: (S, H, W) slices, intensities about [0, 1].
        size: output side.
        max_slices: slices kept at most (evenly spaced).
        crop: without ``box``: fraction of each side kept around the centre.
        box: (top, left, height, width) crop (the heart's, :mod:`model.localise`);
            zero-padded where it reaches outside the slices.
    """
    arr = np.asarray(volume)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] == 0 or min(arr.shape[1:]) < 8:
        raise ModelInputError(f"image must be (S, H, W) with S >= 1, H, W >= 8; got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ModelInputError("image contains NaN or infinite values")
    idx = select_slices(arr.shape[0], max_slices)
    if box is None:
        box = crop_box(arr.shape[1], arr.shape[2], crop)
    x = _crop_array(arr[idx], box, np.float32)[:, None]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    return x  # (S, 1, size, size)


def _crop_array(arr: np.ndarray, box: Box, dtype: type) -> torch.Tensor:
    top, left, h, w = box
    H, W = arr.shape[-2:]
    if top >= 0 and left >= 0 and top + h <= H and left + w <= W:  # inside: no copy of it all
        return torch.from_numpy(
            np.ascontiguousarray(arr[..., top : top + h, left : left + w], dtype)
        )
    return crop(torch.from_numpy(np.ascontiguousarray(arr, dtype)), box)


def prepare_mask(
    mask: np.ndarray, size: int, crop: float = 1.0, box: Box | None = None
) -> torch.Tensor:
    """Crop and resize label masks (S, H, W) to (S, size, size), nearest neighbour.

    Args:
        mask: labels.
        size: output side.
        crop: without ``box``: fraction of each side kept around the centre.
        box: (top, left, height, width) crop, as for :func:`prepare_volume`.
    """
    arr = np.asarray(mask)
    if arr.ndim == 2:
        arr = arr[None]
    if box is None:
        box = crop_box(arr.shape[1], arr.shape[2], crop)
    m = _crop_array(arr, box, np.int64)
    if m.shape[-2:] != (size, size):
        m = F.interpolate(m[:, None].float(), size=(size, size), mode="nearest-exact")[:, 0].long()
    return m


def burden_from_labels(labels: torch.Tensor) -> torch.Tensor:
    """Fibrosis burden: enhanced area / myocardial area (enhancement counts as myocardium).

    Args:
        labels: (..., S, H, W) integer labels; the last three dimensions are pooled.
    """
    enh = (labels == ENHANCEMENT).flatten(-3).sum(-1).float()
    myo = (labels >= MYOCARDIUM).flatten(-3).sum(-1).float()
    return torch.where(myo > 0, enh / myo.clamp(min=1.0), torch.zeros_like(myo))


class ImageBranch(nn.Module):
    """DAE-Former plus pooling of its bottleneck over space and slices.

    The embedding of a series is ``[mean over slices, max over slices]`` of the
    spatially averaged bottleneck tokens (2 * C_3 values); the fibrosis burden is
    measured on the predicted segmentation.

    Args:
        image_size: side of the network input.
        max_slices: slices used per series.
        crop: fraction of each side kept around the centre before resizing (the crop
            without a localiser, and its fallback when no heart is found).
        num_classes: segmentation classes.
        dims, depths, first_stride, mlp_ratio: DAE-Former sizes.
        localiser: side of the heart localiser's coarse input; 0: no localiser (the
            centred crop).
        margin: side of the localised crop over the heart's extent.
    """

    def __init__(
        self,
        image_size: int,
        max_slices: int,
        num_classes: int,
        dims: tuple[int, int, int],
        depths: tuple[int, int, int],
        first_stride: int,
        mlp_ratio: int,
        crop: float = 1.0,
        localiser: int = 0,
        margin: float = 1.5,
    ) -> None:
        super().__init__()
        if image_size <= 0 or max_slices <= 0:
            raise ValueError(f"image_size ({image_size}) and max_slices ({max_slices}) > 0")
        if not 0.0 < crop <= 1.0:
            raise ValueError(f"crop must be in (0, 1], got {crop}")
        self.crop = crop
        self.image_size = image_size
        self.max_slices = max_slices
        self.segmenter = DAEFormer(1, num_classes, dims, depths, first_stride, 1, mlp_ratio)
        self.embed_dim = 2 * dims[2]
        self.margin = margin
        self.localiser = HeartLocaliser(localiser) if localiser else None

    def crop_box(self, volume: np.ndarray) -> Box:
        """The crop of a series (S, H, W): around the heart the localiser finds, else
        the centred ``crop``."""
        vol = volume[None] if volume.ndim == 2 else volume
        h, w = vol.shape[-2:]
        if self.localiser is not None and vol.ndim == 3 and vol.shape[0] and min(h, w) >= 8:
            prob = self.localiser.probability(vol)
            box = box_from_probability(prob, (h, w), self.margin, 0.15 * min(h, w))
            if box is not None:
                return box
        return crop_box(h, w, self.crop)

    def forward_features(self, slices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Segment one series and pool its bottleneck.

        Args:
            slices: (S, 1, H, W) prepared slices of one series.

        Returns:
            ``embedding`` (2*C_3,), ``burden`` (), ``logits`` (S, K, H, W).
        """
        logits, tokens = self.segmenter.forward_with_features(slices)  # (S,K,H,W), (S,N,C)
        return _pool_series(logits, tokens)

    def forward_series(self, series: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """:meth:`forward_features` of several series in one pass of the segmenter.

        The slices of all series go through DAE-Former together (one launch of each kernel
        instead of one per series: on a GPU the per-series passes are launch-bound); the
        pooling is per series, so each result is that series' ``forward_features``.

        Args:
            series: prepared slices (S_i, 1, H, W) of each series.
        """
        if not series:
            return []
        counts = [int(x.shape[0]) for x in series]
        logits, tokens = self.segmenter.forward_with_features(torch.cat(list(series)))
        return [
            _pool_series(lg, tk)
            for lg, tk in zip(logits.split(counts), tokens.split(counts), strict=True)
        ]

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        return self.forward_features(slices)["embedding"]


def _pool_series(logits: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Embedding ``[mean, max]`` over slices of the spatially pooled bottleneck tokens
    (S, N, C), and the burden of the segmentation ``logits`` (S, K, H, W)."""
    pooled = tokens.mean(dim=1)  # (S, C)
    embedding = torch.cat([pooled.mean(0), pooled.max(0).values])  # (2C,)
    burden = burden_from_labels(logits.argmax(1))  # ()
    return {"embedding": embedding, "burden": burden, "logits": logits}
