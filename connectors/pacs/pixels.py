"""DICOM slices -> the model's image input.

Each slice: stored values -> modality values (RescaleSlope/RescaleIntercept; MONOCHROME1
inverted), padded to a square (centred, with the slice minimum) so the aspect ratio is
kept, then resampled to ``size`` x ``size`` (separable linear interpolation whose kernel
widens by the shrink factor, so shrinking averages instead of aliasing; nearest neighbour
for label masks, on the very same grid).  The volume is
normalised robustly: the 1st..99th percentile of the whole series maps to 0..1, clipped.

The fingerprint is a sha256 over the SeriesInstanceUID, then each slice's SOPInstanceUID
and the sha256 of its PixelData bytes, in slice order: it changes when any pixel or the
slice set changes, and is the key of the model's embedding cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pydicom import Dataset

from connectors.errors import DicomInvalid
from connectors.pacs._frames import frame_value, is_multiframe, n_frames, split_frames

LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.0


@dataclass(frozen=True)
class SeriesVolume:
    """A series as model input.

    Args:
        image: float32 (S, size, size), about [0, 1].
        fingerprint: sha256 hex digest (see module docstring).
        series_instance_uid: the series.
        sop_instance_uids: the slices, in the order of ``image``.
        pixel_spacing_mm: in-plane spacing of ``image`` in mm (the first slice's
            PixelSpacing times the resampling factor), or None when the series has none.
    """

    image: np.ndarray
    fingerprint: str
    series_instance_uid: str
    sop_instance_uids: tuple[str, ...]
    pixel_spacing_mm: float | None = None


def _uid(ds: Dataset) -> str:
    return str(ds.get("SOPInstanceUID", "?"))


def _decode(ds: Dataset) -> np.ndarray:
    try:
        return np.asarray(ds.pixel_array)
    except (ValueError, AttributeError, RuntimeError, NotImplementedError, KeyError) as exc:
        raise DicomInvalid(
            f"instance {_uid(ds)}: pixel data cannot be decoded ({type(exc).__name__})"
        ) from None


def expand_frames(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Single-frame datasets as they are; each frame of an Enhanced or Legacy Converted
    Enhanced MR instance as its own single-frame Dataset (decoded, with the frame's plane
    position, orientation, pixel spacing and rescale from the functional groups).

    Raises:
        DicomInvalid: a multi-frame instance without pixel data, with colour samples or
            with undecodable pixel data (names the SOPInstanceUID).
    """
    out: list[Dataset] = []
    for ds in datasets:
        if not is_multiframe(ds):
            out.append(ds)
            continue
        if "PixelData" not in ds:
            raise DicomInvalid(f"instance {_uid(ds)}: no PixelData")
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise DicomInvalid(f"instance {_uid(ds)}: not a greyscale image")
        arr = _decode(ds)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[0] != n_frames(ds):
            raise DicomInvalid(f"instance {_uid(ds)}: pixel array has shape {arr.shape}")
        out.extend(split_frames(ds, arr))
    return out


def slice_pixels(ds: Dataset) -> np.ndarray:
    """One slice in modality units (float64, 2-D), whatever the transfer syntax: compressed
    pixel data (JPEG, JPEG-LS, JPEG 2000, RLE) are decoded by pydicom's pixel-data
    handlers (GDCM, from the ``python-gdcm`` dependency, covers them all).

    Raises:
        DicomInvalid: no pixel data, more than one sample per pixel, several frames, or
            undecodable pixel data; names the SOPInstanceUID.
    """
    if "PixelData" not in ds:
        raise DicomInvalid(f"instance {_uid(ds)}: no PixelData")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomInvalid(f"instance {_uid(ds)}: not a greyscale image")
    if n_frames(ds) != 1:
        raise DicomInvalid(
            f"instance {_uid(ds)}: multi-frame instance; split it with expand_frames first"
        )
    arr = np.asarray(_decode(ds), dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise DicomInvalid(f"instance {_uid(ds)}: pixel array has shape {arr.shape}")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    arr = arr * slope + intercept
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        arr = arr.max() + arr.min() - arr
    return arr


def _pad_square(arr: np.ndarray, fill: float) -> np.ndarray:
    h, w = arr.shape
    n = max(h, w)
    if h == w:
        return arr
    out = np.full((n, n), fill, dtype=arr.dtype)
    top, left = (n - h) // 2, (n - w) // 2
    out[top : top + h, left : left + w] = arr
    return out


def _centres(n: int, size: int) -> np.ndarray:
    """Input coordinate sampled by each output pixel (pixel centres aligned)."""
    return (np.arange(size) + 0.5) * (n / size) - 0.5


@lru_cache(maxsize=64)
def _taps(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Separable resampling taps: (size, k) input indices and weights.

    A triangle (linear) kernel, widened by the shrink factor when shrinking so that it
    also averages (anti-aliasing); weights of each output pixel sum to 1, so edges are
    renormalised rather than padded.  Gathers instead of a dense matrix product: BLAS
    thread start-up costs more than the arithmetic at these sizes.
    """
    scale = max(n / size, 1.0)
    centres = _centres(n, size)
    k = int(np.ceil(2 * scale)) + 1
    first = np.floor(centres - scale).astype(int) + 1
    idx = first[:, None] + np.arange(k)[None, :]
    w = np.clip(1.0 - np.abs(idx - centres[:, None]) / scale, 0.0, None)
    w[(idx < 0) | (idx >= n)] = 0.0
    idx = np.clip(idx, 0, n - 1)
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total > 0, w / np.where(total > 0, total, 1.0), 0.0)
    for arr in (idx, w):
        arr.setflags(write=False)
    return idx, w


def resample_slice(arr: np.ndarray, size: int, *, nearest: bool = False) -> np.ndarray:
    """A 2-D array padded to a square and resampled to (size, size).

    Pixel centres are aligned (output pixel i samples input coordinate
    ``(i + 0.5) * n / size - 0.5``), so images and masks resampled with this function
    stay registered.

    Args:
        arr: (H, W) array.
        size: output side in pixels (> 0).
        nearest: nearest neighbour (label masks); otherwise linear interpolation that
            averages over the shrink factor when shrinking (anti-aliased).
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    fill = 0.0 if nearest else float(arr.min())
    sq = _pad_square(arr, fill)
    n = sq.shape[0]
    if n == size:
        return sq.copy()
    if nearest:
        idx = np.clip(np.floor(_centres(n, size) + 0.5).astype(int), 0, n - 1)
        return sq[np.ix_(idx, idx)]
    idx, w = _taps(n, size)
    rows = (sq[idx].astype(np.float64) * w[:, :, None]).sum(axis=1)  # (size, n)
    return np.asarray((rows[:, idx] * w[None, :, :]).sum(axis=2))  # (size, size)


def resample_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """(S, H, W) label mask -> (S, size, size) uint8 by nearest neighbour."""
    if mask.ndim != 3:
        raise ValueError(f"mask must be (S, H, W), got shape {mask.shape}")
    return np.stack([resample_slice(m, size, nearest=True) for m in mask]).astype(np.uint8)


def restore_mask(mask: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The inverse of :func:`resample_mask`: (S, size, size) labels on the model grid ->
    (S, rows, cols) on the slices' own grid, by nearest neighbour.

    Each native pixel takes the label of the grid pixel whose area covers its centre in the
    padded square (the geometry of :func:`resample_slice`), so a mask resampled with
    :func:`resample_mask` and restored is the original up to the grid's resolution.
    """
    if mask.ndim != 3 or mask.shape[1] != mask.shape[2]:
        raise ValueError(f"mask must be (S, size, size), got shape {mask.shape}")
    if rows <= 0 or cols <= 0:
        raise ValueError(f"rows and cols must be positive, got {rows} x {cols}")
    size, n = mask.shape[1], max(rows, cols)
    top, left = (n - rows) // 2, (n - cols) // 2
    grid = np.clip(np.floor((np.arange(n) + 0.5) * size / n).astype(int), 0, size - 1)
    return np.ascontiguousarray(
        mask[:, grid[top : top + rows]][:, :, grid[left : left + cols]], dtype=np.uint8
    )


def normalise(volume: np.ndarray) -> np.ndarray:
    """Robust [0, 1] scaling by the series' 1st and 99th percentiles, clipped."""
    lo, hi = np.percentile(volume, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo <= 1e-9:
        return np.zeros_like(volume, dtype=np.float32)
    out = (volume - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def fingerprint(series_uid: str, datasets: Sequence[Dataset]) -> str:
    """sha256 over the series UID, SOP UIDs and pixel-data hashes (slice order)."""
    h = hashlib.sha256(series_uid.encode())
    for ds in datasets:
        h.update(b"\x00" + _uid(ds).encode() + b"\x00")
        data = ds.get("PixelData")
        raw = data if isinstance(data, bytes) else b""
        h.update(hashlib.sha256(raw).digest())
    return h.hexdigest()


def volume_spacing_mm(ds: Dataset, size: int) -> float | None:
    """In-plane spacing (mm) of ``ds`` after :func:`resample_slice` to ``size``: the mean
    of its PixelSpacing (row, column; from the functional groups of a multi-frame
    instance) times ``max(Rows, Columns) / size``; None when the
    attribute is absent or not positive."""
    try:
        row, col = (float(v) for v in frame_value(ds, 0, "PixelSpacing"))
        n = max(int(ds.Rows), int(ds.Columns))
    except (AttributeError, TypeError, ValueError):
        return None
    if row <= 0 or col <= 0 or n <= 0 or size <= 0:
        return None
    return (row + col) / 2.0 * n / size


def series_volume(ordered: Sequence[Dataset], size: int) -> SeriesVolume:
    """The model's image input from slices already in spatial order.

    Args:
        ordered: the series' datasets, ordered (see :func:`series.order_slices`).
        size: in-plane side in pixels (the model preset decides: 64, 96, 224, ...).

    Raises:
        DicomInvalid: empty series or a slice that cannot be decoded (names the UID).
    """
    if not ordered:
        raise DicomInvalid("series has no instances")
    series_uid = str(ordered[0].get("SeriesInstanceUID", "") or "")
    slices = [resample_slice(slice_pixels(ds), size) for ds in ordered]
    volume = normalise(np.stack(slices))
    return SeriesVolume(
        image=volume,
        fingerprint=fingerprint(series_uid, ordered),
        series_instance_uid=series_uid,
        sop_instance_uids=tuple(_uid(ds) for ds in ordered),
        pixel_spacing_mm=volume_spacing_mm(ordered[0], size),
    )
