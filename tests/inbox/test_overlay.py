"""cds.overlay: the fibrosis overlay PNG the batch stores and the inbox shows."""

from __future__ import annotations

import dataclasses
import io

import matplotlib.image as mpimg
import numpy as np
import pytest

from cds.overlay import (
    ENHANCEMENT_RGB,
    MYOCARDIUM_RGB,
    pick_slice,
    render_overlay,
    render_series_overlay,
)


def ring(size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    seg = np.zeros((size, size), dtype=np.uint8)
    seg[(r > size * 0.2) & (r < size * 0.32)] = 1
    seg[(r > size * 0.2) & (r < size * 0.32) & (xx > size * 0.65)] = 2
    img = np.full((size, size), 0.2, dtype=np.float32)
    img[seg == 2] = 1.0
    return img, seg


def decode(png: bytes) -> np.ndarray:
    return np.round(mpimg.imread(io.BytesIO(png)) * 255).astype(int)


def test_png_decodes_with_masks_in_colour() -> None:
    img, seg = ring()
    png = render_overlay(img, seg)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    rgb = decode(png)
    scale = rgb.shape[0] // seg.shape[0]
    assert scale == 8 and rgb.shape == (384, 384, 3)
    big = np.repeat(np.repeat(seg, scale, 0), scale, 1)
    background = rgb[big == 0]
    assert np.all(background[:, 0] == background[:, 1])  # grey stays grey
    enh = rgb[big == 2].mean(axis=0)
    myo = rgb[big == 1].mean(axis=0)
    assert enh[0] > 200 and enh[2] < 120  # red-orange
    assert myo[2] > myo[0] + 40  # cyan tint
    assert any(np.array_equal(px, MYOCARDIUM_RGB) for px in rgb[big == 1][:2000])
    assert any(np.array_equal(px, ENHANCEMENT_RGB) for px in rgb[big == 2])


def test_deterministic_and_handles_nan_and_flat_images() -> None:
    img, seg = ring()
    assert render_overlay(img, seg) == render_overlay(img.copy(), seg.copy())
    img[0, 0] = np.nan
    render_overlay(img, seg)
    flat = render_overlay(np.zeros((500, 400)), np.zeros((500, 400), dtype=int))
    assert decode(flat).shape == (500, 400, 3)  # large slices are not enlarged


@pytest.mark.parametrize(
    "img, seg",
    [
        (np.zeros((4, 4)), np.zeros((4, 5))),
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 4))),
        (np.zeros((0, 0)), np.zeros((0, 0))),
    ],
)
def test_bad_shapes(img: np.ndarray, seg: np.ndarray) -> None:
    with pytest.raises(ValueError, match="render_overlay"):
        render_overlay(img, seg)


def test_pick_slice_prefers_enhancement_then_myocardium() -> None:
    _, seg = ring()
    only_myo = np.where(seg == 2, 1, seg)
    stack = np.stack([np.zeros_like(seg), only_myo, seg, only_myo])
    assert pick_slice(stack) == 2
    assert pick_slice(np.stack([np.zeros_like(seg), only_myo])) == 1
    assert pick_slice(np.zeros((3, 4, 4))) == 0
    with pytest.raises(ValueError):
        pick_slice(np.zeros((4, 4)))


def test_series_overlay() -> None:
    img, seg = ring()
    vol = np.stack([img, img])
    segs = np.stack([np.zeros_like(seg), seg])
    assert render_series_overlay(vol, segs) == render_overlay(img, seg)
    with pytest.raises(ValueError, match="differ"):
        render_series_overlay(vol, segs[:1])


def test_series_overlay_is_cropped_to_the_heart_and_skips_unusable_series() -> None:
    import struct

    from cds.overlay import heart_box, series_overlay
    from model.types import ImageFeatures

    yy, xx = np.mgrid[:128, :128]
    r = np.hypot(yy - 40, xx - 90)  # a small heart off centre in a large field of view
    seg = np.zeros((128, 128), dtype=np.uint8)
    seg[(r > 6) & (r < 10)] = 1
    seg[(r > 6) & (r < 10) & (xx > 93)] = 2
    vol = np.random.default_rng(2).normal(0.3, 0.05, (3, 128, 128))
    rows, cols = heart_box(seg)
    assert rows.start <= 30 and rows.stop >= 50 and cols.start <= 80 and cols.stop >= 100
    assert rows.stop - rows.start == cols.stop - cols.start < 64
    feats = ImageFeatures(
        embedding=np.zeros(4, dtype=np.float32),
        fibrosis_burden=0.2,
        segmentation=np.stack([np.zeros_like(seg), seg, np.zeros_like(seg)]),
    )
    png = series_overlay(vol, feats)
    assert png is not None
    width, height = struct.unpack(">II", png[16:24])
    side = rows.stop - rows.start
    assert (width, height) == (side * 8, side * 8)  # the crop, enlarged (at most 8x)
    assert png == render_overlay(vol[1][rows, cols], seg[rows, cols])
    unusable = dataclasses.replace(feats, usable=False, quality_reason="no ring")
    assert series_overlay(vol, unusable) is None
