"""Synthetic short-axis LGE cardiac MR series and their ground-truth masks (numpy only).

A series is a stack of short-axis slices from the LV base towards the apex, drawn from
an anatomical model (:mod:`cds.synth._anatomy`: LV and RV blood pools, LV myocardium of
patient-specific thickness with papillary muscles, RV free wall, epicardial fat,
mediastinum, chest wall, lungs, liver, descending aorta) placed anywhere in a field of
view of 300-400 mm at any rotation, and an inversion-recovery contrast model
(:mod:`cds.synth._mr`: tissue T1 after gadolinium, TI nulling, magnitude or PSIR).

Partial volume is physical: each slice is the mean of three sub-slices across its
thickness, taken before the magnitude.  Then come the point-spread blur, a surface-coil
bias field, breathing ghosts along the phase-encoding direction, sometimes a
mis-triggered (end-systolic, motion-blurred) slice or slices misregistered between
breath-holds, and receiver noise (Rician for magnitude, Gaussian for PSIR).

The mask is that of the slice centre: 1 LV myocardium, 2 enhancement (microvascular
obstruction included, as in infarct-size measurement), 0 elsewhere (papillary muscles
and the RV are not LV myocardium).  Enhancement is the myocardium above the quantile of
a pattern field (:mod:`cds.synth._scar`) that gives the burden, so the mask's enhanced
fraction equals the patient's burden up to pixel rounding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter1d

from cds.synth._anatomy import (
    Heart,
    add_liver,
    draw_heart,
    draw_thorax,
    heart_slice,
    polar,
    thorax_tissue,
)
from cds.synth._mr import MVO, SCAR, Acquisition, draw_acquisition
from cds.synth._scar import Pattern, draw_pattern

BACKGROUND, MYOCARDIUM, ENHANCEMENT = 0, 1, 2

__all__ = [
    "BACKGROUND",
    "ENHANCEMENT",
    "MYOCARDIUM",
    "Acquisition",
    "HeartGeometry",
    "SimulatedSeries",
    "draw_acquisition",
    "lge_volume",
    "localizer",
]


@dataclass(frozen=True)
class HeartGeometry:
    """Physical inputs of one patient's heart.

    Args:
        lv_diameter_mm: LV end-diastolic internal diameter (echo LVDd).
        wall_mm: myocardial wall thickness (echo IVSTd).
        burden: fraction of myocardium to enhance (0..1).
        ischaemic: ischaemic (territorial) or non-ischaemic (mid-wall / patchy) pattern.
    """

    lv_diameter_mm: float
    wall_mm: float
    burden: float
    ischaemic: bool


@dataclass(frozen=True)
class SimulatedSeries:
    """One simulated series and what made it.

    Args:
        image: (S, H, W) float32 >= 0.
        mask: (S, H, W) uint8 labels.
        heart: the heart (position, size, rotation).
        pattern: enhancement pattern kind ("" without enhancement).
        artefacts: names of the artefacts applied.
    """

    image: np.ndarray
    mask: np.ndarray
    heart: Heart
    pattern: str
    artefacts: tuple[str, ...]


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], sigma_px: float, amplitude: float
) -> np.ndarray:
    """A smooth random field of the given correlation length and standard deviation."""
    f = gaussian_filter(rng.standard_normal(shape, np.float32), sigma_px, mode="wrap")
    return f * (amplitude / max(float(f.std()), 1e-6))


def _coil_bias(rng: np.random.Generator, n: int, pixel: float) -> np.ndarray:
    """Receive-coil sensitivity: anterior and posterior array elements, max 1."""
    ax = (np.arange(n) + 0.5) * pixel
    xx, yy = np.meshgrid(ax, ax)
    fov = n * pixel
    b = np.full((n, n), rng.uniform(0.3, 0.6))
    for _ in range(int(rng.integers(2, 5))):
        cx = rng.uniform(0.2, 0.8) * fov
        cy = rng.choice([rng.uniform(-0.1, 0.15), rng.uniform(0.85, 1.1)]) * fov
        s = rng.uniform(0.25, 0.5) * fov
        b += rng.uniform(0.5, 1.0) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    return (b / b.max()).astype(np.float32)


def _ghosts(rng: np.random.Generator, vol: np.ndarray, axis: int) -> np.ndarray:
    """Breathing ghosts: faint copies shifted by N/k along the phase-encoding axis."""
    k = int(rng.choice([2, 3, 4]))
    n = vol.shape[axis]
    amp = rng.uniform(0.04, 0.14)
    out = vol.copy()
    for j in (1, -1):
        out += (amp / 2) * np.roll(vol, j * n // k, axis=axis)
    return out


def lge_volume(
    rng: np.random.Generator,
    geom: HeartGeometry,
    acq: Acquisition,
    n_slices: int,
    enhance: bool = True,
    signal: tuple[float, ...] | None = None,
) -> SimulatedSeries:
    """One short-axis stack.

    Args:
        rng: the series' random source.
        geom: the patient's LV size, wall thickness and LGE burden.
        acq: geometry and contrast (:func:`cds.synth._mr.draw_acquisition`).
        n_slices: slices from base towards apex.
        enhance: draw the enhancement (False: a heart without LGE).
        signal: tissue signals to use instead of ``acq``'s (e.g. a bright-blood cine).
    """
    n, px = acq.matrix, acq.pixel_mm
    heart = draw_heart(rng, geom.lv_diameter_mm, geom.wall_mm, n * px)
    thorax = draw_thorax(rng, heart)
    pattern: Pattern | None = None
    if enhance and geom.burden > 0:
        pattern = draw_pattern(rng, geom.ischaemic, geom.burden)
        if pattern.territory is not None and geom.burden > 0.1:
            thin = 0.45 * float(np.clip((geom.burden - 0.1) / 0.2, 0, 1))
            heart = dataclasses.replace(heart, thinning=thin)
    sig = np.asarray(signal if signal is not None else acq.signal, np.float32)
    spacing = acq.spacing_mm
    z_mid = heart.length * rng.uniform(0.4, 0.55)
    zs = z_mid + (np.arange(n_slices) - (n_slices - 1) / 2) * spacing
    if n_slices == 1:
        zs = np.array([heart.length * rng.uniform(0.35, 0.55)])
    artefacts: list[str] = []
    shifts = np.zeros((n_slices, 2))
    if n_slices > 1 and rng.random() < 0.2:
        shifts = rng.normal(0, 2.5, (n_slices, 2))
        artefacts.append("breath-hold misregistration")
    systole = -1
    if n_slices > 2 and rng.random() < 0.12:
        systole = int(rng.integers(1, n_slices))
        artefacts.append("mis-triggered slice")
    # the heart's region of interest (all slices): only there is the heart drawn
    rx, ry, half = heart.roi
    half += float(np.hypot(*heart.tilt)) * float(np.abs(zs).max()) + float(np.abs(shifts).max())
    cx, cy = heart.centre
    r0, r1 = max(0, int((ry - half) / px)), min(n, int((ry + half) / px) + 1)
    c0, c1 = max(0, int((rx - half) / px)), min(n, int((rx + half) / px) + 1)
    ax = ((np.arange(n) + 0.5) * px).astype(np.float32)
    xx, yy = np.meshgrid(ax, ax)
    # anatomy is not made of ellipses: smooth random warps of the coordinates, coarse for
    # the thorax (~6 mm over ~40 mm) and fine for the heart (~1 mm over ~5 mm)
    xx = xx + _smooth_field(rng, (n, n), 40.0 / px, 6.0)
    yy = yy + _smooth_field(rng, (n, n), 40.0 / px, 6.0)
    xr = xx[r0:r1, c0:c1] + _smooth_field(rng, (r1 - r0, c1 - c0), 5.0 / px, 1.0)
    yr = yy[r0:r1, c0:c1] + _smooth_field(rng, (r1 - r0, c1 - c0), 5.0 / px, 1.0)
    # partial volume: the mean of sub-slices across the thickness; the mask is the centre's
    sub = (0.0, -acq.thickness_mm / 4, acq.thickness_mm / 4)
    thin_fn = pattern.territory if pattern is not None else None
    chest = thorax_tissue(thorax, xx, yy)
    slices = []  # per slice: (thorax, [HeartSlice per sub-slice])
    for k, z in enumerate(zs.tolist()):
        tx, ty = heart.tilt[0] * z + shifts[k, 0], heart.tilt[1] * z + shifts[k, 1]
        h = dataclasses.replace(heart, centre=(cx + tx, cy + ty))
        th = chest.copy()
        add_liver(thorax, z / heart.length, th, xx, yy)
        roi = th[r0:r1, c0:c1]
        pol = polar(h, xr, yr)  # the tilt within one slice's thickness is neglected
        hs = [heart_slice(h, z + dz, pol, roi, thin_fn, k == systole) for dz in sub]
        slices.append((th, hs))
    mask = np.zeros((n_slices, n, n), np.uint8)
    for k, (_, hs) in enumerate(slices):
        mask[k, r0:r1, c0:c1][hs[0].myo] = MYOCARDIUM
    thr = thr_mvo = np.inf
    centre_vals: list[np.ndarray] = []
    if pattern is not None:
        centre_vals = [pattern.field(c.alpha[c.myo], c.level, c.u[c.myo]) for _, (c, *_) in slices]
        vals = np.concatenate(centre_vals)
        k_enh = int(round(geom.burden * vals.size))
        if k_enh > 0:
            thr = float(np.partition(vals, vals.size - k_enh)[vals.size - k_enh])
            if pattern.mvo > 0:
                scar_vals = vals[vals >= thr]
                k_mvo = max(1, int(pattern.mvo * scar_vals.size))
                thr_mvo = float(np.partition(scar_vals, scar_vals.size - k_mvo)[-k_mvo])
                artefacts.append("microvascular obstruction")
    grain = gaussian_filter(rng.standard_normal((n, n), np.float32), 3.0 / px)
    texture = 1 + 0.06 * grain / max(float(grain.std()), 1e-6)
    vol = np.empty((n_slices, n, n), np.float32)
    for k, (th, hs) in enumerate(slices):
        vol[k] = sig[th]
        acc = np.zeros(xr.shape, np.float32)
        for j, sl in enumerate(hs):
            tissue = sl.tissue
            if pattern is not None and np.isfinite(thr):
                f = np.full(tissue.shape, -np.inf, np.float32)
                f[sl.myo] = (
                    centre_vals[k]
                    if j == 0
                    else pattern.field(sl.alpha[sl.myo], sl.level, sl.u[sl.myo])
                )
                tissue = tissue.copy()
                tissue[f >= thr] = SCAR
                tissue[f >= thr_mvo] = MVO
                if j == 0:
                    mask[k, r0:r1, c0:c1][f >= thr] = ENHANCEMENT
            acc += sig[tissue]
        vol[k, r0:r1, c0:c1] = acc / len(hs)
    vol *= texture.clip(0.7, 1.3).astype(np.float32)[None]
    vol = gaussian_filter(vol, (0, *(2 * [rng.uniform(0.4, 0.8)])))
    vol *= _coil_bias(rng, n, px)[None]
    pe_axis = int(rng.integers(1, 3))
    if systole >= 0:
        vol[systole] = uniform_filter1d(vol[systole], int(rng.integers(3, 7)), axis=pe_axis - 1)
    if rng.random() < 0.35:
        vol = _ghosts(rng, vol, pe_axis)
        artefacts.append("breathing ghosts")
    sd = acq.noise
    if signal is None and acq.psir:
        img = vol + acq.psir_offset + sd * rng.standard_normal(vol.shape, np.float32)
    else:
        n1 = sd * rng.standard_normal(vol.shape, np.float32)
        n2 = sd * rng.standard_normal(vol.shape, np.float32)
        img = np.sqrt((vol + n1) ** 2 + n2**2)
    return SimulatedSeries(
        image=np.maximum(img, 0).astype(np.float32),
        mask=mask,
        heart=heart,
        pattern=pattern.kind if pattern is not None else "",
        artefacts=tuple(artefacts),
    )


def localizer(rng: np.random.Generator, size: int) -> np.ndarray:
    """A coarse single-slice survey image (body outline and noise) for a localizer series."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    body = ((xx - size / 2) / (size * 0.45)) ** 2 + ((yy - size / 2) / (size * 0.3)) ** 2 < 1
    img = np.where(body, 0.4 + 0.2 * gaussian_filter(rng.normal(0, 1, (size, size)), 4), 0.0)
    return np.abs(img + rng.normal(0, 0.03, img.shape)).astype(np.float32)[None]
