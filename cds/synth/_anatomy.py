"""Anatomy of a synthetic short-axis LGE slice: heart, thorax and their tissue classes.

Coordinates are millimetres in the image plane (x to the right, y down).  The heart has
its own frame, rotated by ``angle`` in the image: in that frame the interventricular
septum points to -x (image left on a standard short-axis view) and the anterior wall to
-y (up).  The angle ``alpha`` of a point around the LV centre runs clockwise from the
anterior wall (0), through lateral (pi/2), inferior (pi) to septal (3pi/2), like the
AHA 17-segment bull's eye (Cerqueira et al. 2002).

The LV endo- and epicardium are truncated prolate shapes: the radius at depth ``z``
below the base (mm) is ``R * sqrt(1 - (z / L)^p)``, so the wall thins and the cavity
closes towards the apex.  ``u`` is the normalised depth in the LV wall (0 endocardium,
1 epicardium); enhancement patterns are functions of ``(alpha, z / L, u)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cds.synth._mr import BLOOD, FAT, LIVER, LUNG, MUSCLE, MYO, SOFT

TAU = 2 * np.pi


@dataclass(frozen=True)
class Heart:
    """One patient's heart, placed in the image.

    Args:
        centre: LV centre at the base (x, y) in mm.
        tilt: shift of the LV centre per mm of depth (the long axis is not exactly
            perpendicular to the slices).
        angle: rotation of the heart frame in the image (radians).
        r_endo: basal LV endocardial radius (mm).
        wall: basal wall thickness (mm).
        length: LV cavity length from the base to the endocardial apex (mm).
        apex_wall: wall thickness at the apex (mm).
        power: shape exponent of the long-axis profile.
        ellipticity, ellipse_phase: second-harmonic shape of the cavity.
        wall_septal: relative extra thickness of the septum.
        thinning: relative thinning of the wall where ``thin_weight`` is 1 (infarct).
        rv_scale: RV cavity size relative to the LV.
        rv_wall: RV free-wall thickness (mm).
        fat: epicardial fat thickness at mid-ventricle (mm).
        papillary: (angle, radius mm) of the two papillary muscles.
    """

    centre: tuple[float, float]
    tilt: tuple[float, float]
    angle: float
    r_endo: float
    wall: float
    length: float
    apex_wall: float
    power: float
    ellipticity: float
    ellipse_phase: float
    wall_septal: float
    thinning: float
    rv_scale: float
    rv_wall: float
    fat: float
    papillary: tuple[tuple[float, float], tuple[float, float]]

    @property
    def roi(self) -> tuple[float, float, float]:
        """(x, y, half side) in mm of a square holding the heart, fat and pericardium."""
        rad = self.r_endo + self.wall
        ca, sa = float(np.cos(self.angle)), float(np.sin(self.angle))
        x, y = self.centre[0] - 0.4 * rad * ca, self.centre[1] - 0.4 * rad * sa
        return x, y, 1.45 * rad + 3.5 * self.fat + 12.0


def draw_heart(
    rng: np.random.Generator, lv_diameter_mm: float, wall_mm: float, fov_mm: float
) -> Heart:
    """A heart of the given LV diameter and septal thickness, anywhere in the FOV."""
    r = 0.5 * float(np.clip(lv_diameter_mm, 38.0, 85.0)) * rng.uniform(0.95, 1.05)
    wall = float(np.clip(wall_mm, 5.0, 22.0)) * rng.uniform(0.9, 1.05)
    rad = r + wall
    extent = 2.2 * rad + 10  # half-size of the heart with the RV and fat
    lim = max(fov_mm / 2 - extent, 0.0)
    c = fov_mm / 2 + rng.uniform(-lim, lim, 2) * rng.uniform(0.3, 1.0)
    ang = float(np.clip(rng.normal(0.0, 0.45), -1.1, 1.1))
    return Heart(
        centre=(float(c[0]), float(c[1])),
        tilt=(float(rng.normal(0, 0.08)), float(rng.normal(0, 0.08))),
        angle=ang,
        r_endo=r,
        wall=wall,
        length=float(np.clip(2 * r * rng.uniform(1.45, 1.8), 70.0, 120.0)),
        apex_wall=wall * rng.uniform(0.5, 0.7),
        power=float(rng.uniform(1.8, 2.6)),
        ellipticity=float(rng.uniform(0.0, 0.08)),
        ellipse_phase=float(rng.uniform(0, np.pi)),
        wall_septal=float(rng.uniform(0.0, 0.2)),
        thinning=0.0,
        rv_scale=float(rng.uniform(0.85, 1.3)),
        rv_wall=float(rng.uniform(3.0, 4.5)),
        fat=float(rng.uniform(0.5, 6.0)),
        papillary=(
            (float(rng.normal(np.deg2rad(70), 0.2)), float(rng.uniform(3.5, 6.0))),
            (float(rng.normal(np.deg2rad(165), 0.2)), float(rng.uniform(3.5, 6.0))),
        ),
    )


@dataclass
class HeartSlice:
    """Per-pixel fields of one slice through the heart (arrays of the ROI's shape).

    Args:
        tissue: tissue class per pixel (the thorax where no heart structure lies).
        myo: LV myocardium (mask class 1 before enhancement).
        alpha, level, u: angle, relative depth z/L and wall depth (valid inside ``myo``).
    """

    tissue: np.ndarray
    myo: np.ndarray
    alpha: np.ndarray
    level: float
    u: np.ndarray


def _profile(radius: float, z: float, length: float, power: float) -> float:
    if z < 0:
        return radius
    return radius * float(np.sqrt(max(0.0, 1.0 - (z / length) ** power)))


@dataclass(frozen=True)
class Polar:
    """Heart-frame coordinates of ROI pixels around one slice's LV centre.

    Args:
        hx, hy: heart-frame offsets (mm).
        rho: distance from the LV centre (mm).
        alpha: angle clockwise from the anterior wall.
        cos_a, sin_a: its cosine and sine.
    """

    hx: np.ndarray
    hy: np.ndarray
    rho: np.ndarray
    alpha: np.ndarray
    cos_a: np.ndarray
    sin_a: np.ndarray


def polar(h: Heart, xx: np.ndarray, yy: np.ndarray) -> Polar:
    """Heart-frame coordinates of the pixel centres ``xx, yy`` (mm)."""
    dx, dy = xx - h.centre[0], yy - h.centre[1]
    ca, sa = float(np.cos(h.angle)), float(np.sin(h.angle))
    hx, hy = ca * dx + sa * dy, -sa * dx + ca * dy
    rho = np.hypot(hx, hy)
    inv = 1.0 / np.maximum(rho, 1e-6)
    return Polar(hx, hy, rho, np.arctan2(hx, -hy) % TAU, -hy * inv, hx * inv)


def heart_slice(
    h: Heart,
    z: float,
    p: Polar,
    thorax: np.ndarray,
    thin_weight: Callable[[np.ndarray, float, np.ndarray], np.ndarray] | None = None,
    systole: bool = False,
) -> HeartSlice:
    """Tissue classes of the ROI at depth ``z`` mm below the LV base.

    Args:
        h: the heart.
        z: depth of the slice below the base plane (negative: atria and outflow).
        p: heart-frame coordinates of the ROI pixels (:func:`polar`).
        thorax: tissue classes of the thorax in the ROI (copied, then overwritten).
        thin_weight: optional f(alpha, level, u) weight of wall thinning (the infarct
            territory).
        systole: a mis-triggered (end-systolic) slice: smaller cavity, thicker wall.
    """
    hx, hy, rho, alpha = p.hx, p.hy, p.rho, p.alpha
    level = z / h.length
    r_endo = _profile(h.r_endo, z, h.length, h.power)
    r_epi = _profile(h.r_endo + h.wall, z, h.length + h.apex_wall, h.power)
    if systole:
        r_endo *= 0.72
        r_epi = r_endo + (r_epi - _profile(h.r_endo, z, h.length, h.power)) * 1.35
    c2, s2 = np.cos(2 * h.ellipse_phase), np.sin(2 * h.ellipse_phase)
    cos2a, sin2a = p.cos_a**2 - p.sin_a**2, 2 * p.sin_a * p.cos_a
    endo = r_endo * (1 + h.ellipticity * (cos2a * c2 + sin2a * s2))
    wall_a = (r_epi - r_endo) * (1 - h.wall_septal * p.sin_a)  # septum: sin(alpha) = -1
    if thin_weight is not None and h.thinning > 0:
        wall_a = wall_a * (1 - h.thinning * thin_weight(alpha, level, alpha * 0))
    wall_a = np.maximum(wall_a, 0.5)
    u = (rho - endo) / wall_a
    lv_out = rho - endo - wall_a
    tissue = thorax.copy()
    rad = h.r_endo + h.wall
    # the RV: an ellipse on the septal side (anterior a little), wrapping the septum
    rv_len = max(0.0, 1 - (max(z, 0) / (0.85 * h.length)) ** 2) ** 0.5
    # thickest in the atrioventricular groove (base), the interventricular grooves (RV
    # insertions) and over the RV; thin over the LV lateral wall (von Mises bumps)
    g1 = p.cos_a * np.cos(4.2) + p.sin_a * np.sin(4.2)
    g2 = p.cos_a * np.cos(5.3) + p.sin_a * np.sin(5.3)
    grooves = np.exp(11.0 * (np.maximum(g1, g2) - 1))
    fat = (h.fat * (1 + 0.8 * np.exp(-abs(z) / 12))) * (0.15 + 1.3 * grooves)
    if rv_len > 0:
        ex, ey = hx + 0.85 * rad, hy + 0.1 * rad  # RV centre in the heart frame
        a_rv = 0.7 * rad * h.rv_scale * rv_len
        b_rv = 1.25 * rad * rv_len**0.5
        a_out, b_out = a_rv + h.rv_wall, b_rv + h.rv_wall
        q_out = np.hypot(ex / a_out, ey / b_out)
        d_rv = (q_out - 1) * a_out
        over_rv = d_rv < lv_out
        d_heart = np.where(over_rv, d_rv, lv_out)
        fat = fat + 0.5 * h.fat * over_rv
    else:
        d_heart = lv_out
    tissue[(d_heart > 0) & (d_heart <= fat + 2.5)] = SOFT  # pericardium
    tissue[(d_heart > 0) & (d_heart <= fat)] = FAT
    if rv_len > 0:
        outside_lv = lv_out > 0
        tissue[(q_out <= 1) & outside_lv] = MYO
        q_in = np.hypot(ex / a_rv, ey / b_rv)
        tissue[(q_in <= 1) & outside_lv] = BLOOD
    if z < 0:  # above the base: left atrium / outflow, no LV myocardial ring
        tissue[lv_out <= 0] = SOFT
        tissue[rho <= endo * 0.9] = BLOOD
        myo = np.zeros(rho.shape, bool)
    else:
        myo = (u >= 0) & (lv_out <= 0)
        tissue[myo] = MYO
        tissue[u < 0] = BLOOD
        if 0.15 < level < 0.8 and r_endo > 8:
            for ang, pr in h.papillary:
                px = (r_endo - 0.8 * pr) * np.sin(ang)
                py = -(r_endo - 0.8 * pr) * np.cos(ang)
                tissue[(np.hypot(hx - px, hy - py) <= pr) & (u < 0)] = MYO
    return HeartSlice(tissue=tissue, myo=myo, alpha=alpha, level=level, u=u)


@dataclass(frozen=True)
class Thorax:
    """Body outline, chest wall, lungs, liver and descending aorta around a heart.

    Args:
        centre, axes, angle: body ellipse (mm, mm, radians).
        subcut, muscle: subcutaneous fat and chest-wall muscle thickness (mm).
        wobble: amplitude and phase of the body outline's third harmonic.
        lungs: two ellipses (cx, cy, ax, ay) of the lungs.
        liver: ellipse of the liver at the apex (cx, cy, ax, ay).
        aorta: (cx, cy, radius) of the descending aorta.
        posterior: ellipse of the posterior mediastinum and spine.
    """

    centre: tuple[float, float]
    axes: tuple[float, float]
    angle: float
    subcut: float
    wobble: tuple[float, float]
    muscle: float
    lungs: tuple[tuple[float, float, float, float], ...]
    liver: tuple[float, float, float, float]
    aorta: tuple[float, float, float]
    posterior: tuple[float, float, float, float]


def _heart_point(h: Heart, alpha: float, dist: float) -> tuple[float, float]:
    """Image point at ``dist`` mm from the LV centre in heart-frame direction ``alpha``."""
    hx, hy = dist * np.sin(alpha), -dist * np.cos(alpha)
    ca, sa = np.cos(h.angle), np.sin(h.angle)
    return h.centre[0] + ca * hx - sa * hy, h.centre[1] + sa * hx + ca * hy


def draw_thorax(rng: np.random.Generator, h: Heart) -> Thorax:
    """A thorax around the heart (the heart lies left-anterior in the chest)."""
    rad = h.r_endo + h.wall
    bx, by = _heart_point(h, np.deg2rad(rng.uniform(200, 250)), rng.uniform(25, 60))
    left = _heart_point(h, np.deg2rad(rng.uniform(70, 110)), 1.0 * rad + 55)
    right = _heart_point(h, np.deg2rad(rng.uniform(250, 290)), 1.8 * rad + 55)
    back = _heart_point(h, np.deg2rad(rng.uniform(185, 215)), 2.0 * rad + 40)
    liver = _heart_point(h, np.deg2rad(rng.uniform(195, 235)), 2.3 * rad + 25)
    aorta = _heart_point(h, np.deg2rad(rng.uniform(180, 215)), 2.0 * rad + 12)
    return Thorax(
        centre=(bx, by),
        axes=(rng.uniform(165, 215), rng.uniform(105, 145)),
        angle=0.5 * h.angle + rng.normal(0, 0.1),
        subcut=rng.uniform(4, 22),
        wobble=(float(rng.uniform(0, 0.06)), float(rng.uniform(0, TAU))),
        muscle=rng.uniform(8, 18),
        lungs=(
            (left[0], left[1], rng.uniform(70, 95), rng.uniform(100, 140)),
            (right[0], right[1], rng.uniform(70, 95), rng.uniform(100, 140)),
        ),
        posterior=(back[0], back[1], rng.uniform(25, 40), rng.uniform(25, 45)),
        liver=(liver[0], liver[1], rng.uniform(70, 100), rng.uniform(50, 75)),
        aorta=(aorta[0], aorta[1], rng.uniform(10, 13)),
    )


def _in_ellipse(xx: np.ndarray, yy: np.ndarray, e: tuple[float, float, float, float]) -> np.ndarray:
    return ((xx - e[0]) / e[2]) ** 2 + ((yy - e[1]) / e[3]) ** 2 <= 1


def thorax_tissue(t: Thorax, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Tissue classes of the thorax (no heart, no liver)."""
    ca, sa = np.cos(t.angle), np.sin(t.angle)
    dx, dy = xx - t.centre[0], yy - t.centre[1]
    bx, by = ca * dx + sa * dy, -sa * dx + ca * dy
    e = np.hypot(bx / t.axes[0], by / t.axes[1])
    e = e * (1 + t.wobble[0] * np.cos(3 * np.arctan2(by, bx) + t.wobble[1]))
    depth = (1 - e) * min(t.axes)  # about the distance inside the skin
    out = np.zeros(xx.shape, np.uint8)
    out[depth > 0] = FAT
    out[depth > t.subcut] = MUSCLE
    inner = depth > t.subcut + t.muscle
    out[inner] = SOFT
    for lung in t.lungs:
        out[inner & _in_ellipse(xx, yy, lung)] = LUNG
    out[inner & _in_ellipse(xx, yy, t.posterior)] = SOFT  # oesophagus, spine, vessels
    ax, ay, ar = t.aorta
    out[inner & (np.hypot(xx - ax, yy - ay) <= ar)] = BLOOD
    return out


def add_liver(t: Thorax, level: float, tissue: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> None:
    """Put the liver (growing towards the apex, below the diaphragm) into ``tissue``."""
    grow = float(np.clip((level - 0.15) / 0.6, 0.0, 1.0))
    if grow > 0:
        lv = t.liver
        liver = (lv[0], lv[1], lv[2] * grow, lv[3] * grow)
        tissue[((tissue == SOFT) | (tissue == LUNG)) & _in_ellipse(xx, yy, liver)] = LIVER
