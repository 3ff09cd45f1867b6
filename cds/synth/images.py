"""Synthetic short-axis LGE cardiac MR volumes and their ground-truth masks (numpy only).

A volume is a stack of short-axis slices from base to apex.  The left-ventricular
myocardium is a ring whose radius shrinks towards the apex, with an angle-dependent shape
(2nd/3rd harmonics) and wall thickness.  Enhancement is chosen by thresholding a
pattern field inside the myocardium at the quantile that gives exactly the patient's
fibrosis burden, so the mask's enhanced fraction equals the burden up to pixel
rounding:

* ischaemic: a coronary territory (angular sector over a range of slices) enhanced from
  the endocardium outwards: subendocardial at small burden, transmural at large;
* non-ischaemic: a mid-wall stripe in the septum, or patchy foci (smoothed random field).

Intensities imitate a magnitude/PSIR inversion-recovery image: nulled (dark) myocardium,
bright blood pool and scar, grey surrounding tissue, then partial-volume blur, a smooth
multiplicative bias field and Rician noise.  Contrast levels vary from study to study.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

BACKGROUND, MYOCARDIUM, ENHANCEMENT = 0, 1, 2


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


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def _angle_diff(a: np.ndarray, b: float) -> np.ndarray:
    return (a - b + np.pi) % (2 * np.pi) - np.pi


def lge_volume(
    rng: np.random.Generator,
    geom: HeartGeometry,
    size: int,
    n_slices: int,
    pixel_mm: float,
    enhance: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One LGE stack: ``(image (S, H, W) float32 >= 0, mask (S, H, W) uint8)``."""
    s_n = n_slices
    yy, xx = _grid(size)
    t = (
        np.linspace(0.0, 1.0, s_n, dtype=np.float32)[:, None, None]
        if s_n > 1
        else np.zeros((1, 1, 1), np.float32)
    )
    cx = size / 2 + rng.uniform(-0.06, 0.06) * size + rng.normal(0, 0.4, s_n)[:, None, None]
    cy = size / 2 + rng.uniform(-0.06, 0.06) * size + rng.normal(0, 0.4, s_n)[:, None, None]
    dx, dy = xx[None] - cx, yy[None] - cy
    rho = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    r0 = 0.42 * geom.lv_diameter_mm / pixel_mm
    r_endo = r0 * (1 - 0.6 * t**1.6)
    a2, p2 = rng.uniform(0.0, 0.12), rng.uniform(0, np.pi)
    a3, p3 = rng.uniform(0.0, 0.06), rng.uniform(0, 2 * np.pi)
    shape = 1 + a2 * np.cos(2 * (theta - p2)) + a3 * np.cos(3 * (theta - p3))
    wall = (
        geom.wall_mm
        / pixel_mm
        * (1 + 0.12 * t)
        * (1 + rng.uniform(0.05, 0.2) * np.cos(theta - rng.uniform(0, 2 * np.pi)))
    )
    wall = np.maximum(wall, 1.2)
    u = (rho - r_endo * shape) / wall  # <0 blood pool, 0..1 myocardium
    myo = (u >= 0) & (u <= 1)
    blood = u < 0
    septum = rng.uniform(2.6, 3.6)  # the septum faces the RV (image left, slightly up)
    rv_c = (r_endo + wall) * 1.25
    rvx, rvy = cx + rv_c * np.cos(septum), cy + rv_c * np.sin(septum)
    rv = (np.hypot(xx[None] - rvx, yy[None] - rvy) < r_endo * 1.15) & (u > 1.25)

    mask = np.where(myo, MYOCARDIUM, BACKGROUND).astype(np.uint8)
    if enhance and geom.burden > 0:
        if geom.ischaemic:
            centre = septum + rng.choice([0.6, 1.6, 3.1, 4.4]) + rng.normal(0, 0.3)
            width = rng.uniform(0.5, 1.0)
            tc = rng.uniform(0.2, 0.8)
            terr = np.exp(-0.5 * (_angle_diff(theta, centre) / width) ** 2) * np.exp(
                -(((t - tc) / 0.5) ** 2)
            )
            field = terr - 0.55 * u + rng.normal(0, 0.02, u.shape)
        elif rng.random() < 0.6:
            sept = np.exp(-0.5 * (_angle_diff(theta, septum) / rng.uniform(0.6, 1.1)) ** 2)
            field = (
                sept
                - 1.6 * np.abs(u - 0.5)
                + gaussian_filter(rng.normal(0, 0.3, u.shape), (0.7, 2, 2))
            )
        else:
            field = gaussian_filter(rng.normal(0, 1.0, u.shape), (0.8, 2.5, 2.5))
        vals = field[myo]
        if vals.size:
            k = int(round(geom.burden * vals.size))
            if k > 0:
                thr = np.partition(vals, vals.size - k)[vals.size - k]
                mask[myo & (field >= thr)] = ENHANCEMENT

    # Intensities (arbitrary units, blood ~ 0.6).
    body_a, body_b = size * rng.uniform(0.40, 0.47), size * rng.uniform(0.30, 0.38)
    body = ((xx - size / 2) / body_a) ** 2 + ((yy - size / 2 + 0.03 * size) / body_b) ** 2 < 1
    tissue_level = rng.uniform(0.18, 0.38)
    texture = gaussian_filter(rng.normal(0, 1, (s_n, size, size)), (0, 3, 3)).astype(np.float32)
    img = np.where(body[None], tissue_level * (1 + 0.5 * texture), 0.0).astype(np.float32)
    blood_level = rng.uniform(0.5, 0.75)
    img = np.where(blood | rv, blood_level, img)
    img = np.where(mask == MYOCARDIUM, rng.uniform(0.02, 0.12), img)
    img = np.where(mask == ENHANCEMENT, rng.uniform(0.8, 1.0), img)
    img = gaussian_filter(img, (0, 0.6, 0.6))
    # Smooth bias field (surface-coil shading).
    gx, gy = (xx - size / 2) / size, (yy - size / 2) / size
    bias = (
        1
        + rng.uniform(-0.3, 0.3) * gx
        + rng.uniform(-0.3, 0.3) * gy
        + rng.uniform(-0.4, 0.2) * (gx**2 + gy**2)
    )
    img = img * bias[None].astype(np.float32)
    sigma = rng.uniform(0.015, 0.05)
    n1 = rng.normal(0, sigma, img.shape).astype(np.float32)
    n2 = rng.normal(0, sigma, img.shape).astype(np.float32)
    img = np.sqrt((img + n1) ** 2 + n2**2)  # Rician magnitude noise
    return img.astype(np.float32), mask


def localizer(rng: np.random.Generator, size: int) -> np.ndarray:
    """A coarse single-slice survey image (body outline and noise) for a localizer series."""
    yy, xx = _grid(size)
    body = ((xx - size / 2) / (size * 0.45)) ** 2 + ((yy - size / 2) / (size * 0.3)) ** 2 < 1
    img = np.where(body, 0.4 + 0.2 * gaussian_filter(rng.normal(0, 1, (size, size)), 4), 0.0)
    return np.abs(img + rng.normal(0, 0.03, img.shape)).astype(np.float32)[None]
