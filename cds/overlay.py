"""The fibrosis overlay shown on the inbox's patient page.

Format (agreed with the batch): ``ImageFeatureCache.overlay_png`` holds a ready PNG,
8-bit RGB, made by :func:`render_overlay` from one LGE short-axis slice and its
segmentation (0 background, 1 myocardium, 2 enhancement, as in
:class:`model.types.ImageFeatures`).  The slice is shown in grey (windowed to its 1st-99th
percentile); the myocardium is tinted and outlined in cyan; the enhancement (scar or
fibrosis) is filled in red-orange with a solid edge.  Small slices are enlarged by an
integer factor (nearest neighbour) so that outlines stay sharp.  The scoring core calls
:func:`series_overlay` on the whole series: it picks the slice with the largest enhanced
area (else the largest myocardium) and crops it to the heart (:func:`heart_box`: the
segmented myocardium with half its size as margin on each side).

The PNG is encoded here with :mod:`zlib` (filter type 0, one IDAT chunk): deterministic
bytes for the same input and no imaging library needed.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from model.types import ImageFeatures

MYOCARDIUM_RGB = (0, 200, 255)
ENHANCEMENT_RGB = (255, 69, 0)
MIN_SIDE = 384
MAX_SCALE = 8


def _png(rgb: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 array as PNG."""
    h, w, _ = rgb.shape
    raw = np.zeros((h, 1 + w * 3), dtype=np.uint8)  # each row: filter byte 0, then pixels
    raw[:, 1:] = rgb.reshape(h, w * 3)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def _edge(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (a one-pixel inner outline)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def _blend(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], alpha: float) -> None:
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(colour, dtype=np.float32)


def render_overlay(slice_2d: np.ndarray, seg_2d: np.ndarray) -> bytes:
    """A PNG of one LGE slice with the myocardium and enhancement masks drawn over it.

    Args:
        slice_2d: (H, W) image intensities, any real dtype; NaN counts as 0.
        seg_2d: (H, W) integer labels: 0 background, 1 myocardium, 2 enhancement.

    Returns:
        PNG bytes (RGB, at least :data:`MIN_SIDE` pixels on the longer side when the
        enlargement factor allows).

    Raises:
        ValueError: when the arrays are not 2-D, differ in shape, or are empty.
    """
    shape = np.shape(slice_2d)
    scale = 1  # a bad shape is refused by overlay_rgb
    if len(shape) == 2 and min(shape) > 0:
        scale = int(min(MAX_SCALE, max(1, -(-MIN_SIDE // max(shape)))))
    return _png(overlay_rgb(slice_2d, seg_2d, scale=scale))


def overlay_rgb(slice_2d: np.ndarray, seg_2d: np.ndarray, *, scale: int = 1) -> np.ndarray:
    """The overlay of :func:`render_overlay` as an (H*scale, W*scale, 3) uint8 array
    (also the pixels of the secondary-capture overlay sent to the PACS).

    Raises:
        ValueError: when the arrays are not 2-D, differ in shape, are empty, or
            ``scale`` is below 1.
    """
    img = np.asarray(slice_2d, dtype=np.float32)
    seg = np.asarray(seg_2d)
    if img.ndim != 2 or seg.ndim != 2:
        raise ValueError(f"render_overlay: need 2-D arrays, got {img.shape} and {seg.shape}")
    if img.shape != seg.shape:
        raise ValueError(f"render_overlay: slice {img.shape} and mask {seg.shape} differ")
    if img.size == 0:
        raise ValueError("render_overlay: empty slice")
    if scale < 1:
        raise ValueError(f"render_overlay: scale must be >= 1, got {scale}")
    img = np.nan_to_num(img, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = np.percentile(img, [1, 99])
    grey = np.clip((img - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(img)
    if scale > 1:
        grey = np.repeat(np.repeat(grey, scale, axis=0), scale, axis=1)
        seg = np.repeat(np.repeat(seg, scale, axis=0), scale, axis=1)
    rgb = np.repeat((grey * 255.0)[:, :, None], 3, axis=2).astype(np.float32)
    myo = seg >= 1
    enh = seg == 2
    _blend(rgb, myo & ~enh, MYOCARDIUM_RGB, 0.25)
    _blend(rgb, enh, ENHANCEMENT_RGB, 0.6)
    thick = scale >= 3
    for mask, colour in ((myo, MYOCARDIUM_RGB), (enh, ENHANCEMENT_RGB)):
        edge = _edge(mask)
        if thick:
            edge |= _edge(mask & ~edge)
        rgb[edge] = colour
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def pick_slice(segmentation: np.ndarray) -> int:
    """Index of the slice with the most enhancement (ties and no enhancement: most myocardium).

    Raises:
        ValueError: when ``segmentation`` is not (S, H, W) with S >= 1.
    """
    seg = np.asarray(segmentation)
    if seg.ndim != 3 or seg.shape[0] == 0:
        raise ValueError(f"pick_slice: need a (S, H, W) segmentation, got {seg.shape}")
    enhanced = (seg == 2).reshape(seg.shape[0], -1).sum(axis=1)
    myocardium = (seg >= 1).reshape(seg.shape[0], -1).sum(axis=1)
    order = np.lexsort((-np.arange(seg.shape[0]), myocardium, enhanced))
    return int(order[-1])


def render_series_overlay(volume: np.ndarray, segmentation: np.ndarray) -> bytes:
    """:func:`render_overlay` of the most informative slice of a series.

    Args:
        volume: (S, H, W) LGE slices.
        segmentation: (S, H, W) labels as in :func:`render_overlay`.

    Raises:
        ValueError: when the shapes differ or are not 3-D.
    """
    vol = np.asarray(volume)
    if vol.shape != np.asarray(segmentation).shape:
        raise ValueError(
            f"render_series_overlay: volume {vol.shape} and segmentation "
            f"{np.asarray(segmentation).shape} differ"
        )
    index = pick_slice(segmentation)
    return render_overlay(vol[index], np.asarray(segmentation)[index])


def heart_box(seg_2d: np.ndarray, margin: float = 0.5, min_side: int = 24) -> tuple[slice, slice]:
    """A square around the segmented heart (labels >= 1) with ``margin`` of its size on
    each side, at least ``min_side`` pixels, inside the image; the whole image when
    nothing is segmented."""
    seg = np.asarray(seg_2d)
    h, w = seg.shape
    ys, xs = np.nonzero(seg >= 1)
    if ys.size == 0:
        return slice(0, h), slice(0, w)
    cy, cx = (ys.min() + ys.max()) / 2.0, (xs.min() + xs.max()) / 2.0
    extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
    side = min(max(h, w), max(min_side, int(round(extent * (1.0 + 2.0 * margin)))))
    top = int(np.clip(round(cy - side / 2.0), 0, max(0, h - side)))
    left = int(np.clip(round(cx - side / 2.0), 0, max(0, w - side)))
    return slice(top, min(h, top + side)), slice(left, min(w, left + side))


def series_overlay(volume: np.ndarray, features: ImageFeatures) -> bytes | None:
    """The overlay of an encoded series, cropped to the heart, or None when there is
    nothing to show (no segmentation, or a series the quality gate found unusable).

    Args:
        volume: (S, H, W) the series as the image branch received it.
        features: the image branch's output; its segmentation covers the slices the
            branch kept (:func:`model.image_branch.select_slices`), in that order.
    """
    if features.segmentation is None or not features.usable:
        return None
    from model.image_branch import select_slices

    seg = np.asarray(features.segmentation)
    kept = select_slices(volume.shape[0], seg.shape[0])
    index = pick_slice(seg)
    rows, cols = heart_box(seg[index])
    image = np.asarray(volume)[kept[index]]
    return render_overlay(image[rows, cols], seg[index][rows, cols])
