"""Where LGE appears in the LV wall: a propensity field over (angle, level, wall depth).

The enhanced pixels are those of the myocardium whose field value is above the quantile
that gives the patient's burden, so the mask's enhanced fraction equals the burden up to
pixel rounding, and the field's shape decides the pattern:

* ischaemic: the territory of a culprit coronary artery on the AHA 17-segment model
  (Cerqueira et al. 2002: LAD segments 1, 2, 7, 8, 13, 14, 17; RCA 3, 4, 9, 10, 15;
  LCx 5, 6, 11, 12, 16), distal to the occlusion; the field falls with depth from the
  endocardium (the ischaemic wavefront, Reimer and Jennings 1979), so a small infarct is
  subendocardial in the centre of the territory and a large one transmural;
* non-ischaemic: a septal mid-wall stripe (dilated cardiomyopathy, McCrohon et al.
  2003), a subepicardial inferolateral band (myocarditis, Mahrholdt et al. 2004), foci at
  the RV insertion points, or patchy foci.

The field is an analytic function of the position, so sub-slices of a thick slice
(partial volume) agree with the mask of the slice centre.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

TAU = 2 * np.pi

#: Culprit artery: (centre angle of its basal/mid territory, half-width) in degrees,
#: clockwise from the anterior wall; the LAD also takes the whole apex.
TERRITORIES = {"LAD": (315.0, 75.0), "RCA": (210.0, 60.0), "LCx": (105.0, 55.0)}


def _wrap(a: np.ndarray | float) -> np.ndarray:
    return (np.asarray(a) + np.pi) % TAU - np.pi


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


Field = Callable[[np.ndarray, float, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Pattern:
    """An enhancement pattern.

    Args:
        kind: ``ischaemic:<artery>``, ``midwall``, ``epicardial``, ``insertion`` or ``patchy``.
        field: f(alpha, level, u) -> propensity.
        territory: f(alpha, level, u) -> 0..1 weight of the culprit territory (wall
            thinning), or None.
        mvo: fraction of the scar (its core) with microvascular obstruction.
    """

    kind: str
    field: Field
    territory: Field | None
    mvo: float


def _texture(rng: np.random.Generator, amp: float) -> Field:
    k = rng.integers(2, 7, 4)
    m = rng.uniform(1, 4, 4)
    ph = rng.uniform(0, TAU, 4)
    a = rng.uniform(0.3, 1.0, 4) * amp

    def f(alpha: np.ndarray, level: float, u: np.ndarray) -> np.ndarray:
        out = np.zeros_like(alpha)
        for i in range(4):
            out = out + a[i] * np.cos(k[i] * alpha + m[i] * np.pi * level + 2 * u + ph[i])
        return out

    return f


def draw_pattern(rng: np.random.Generator, ischaemic: bool, burden: float) -> Pattern:
    """The enhancement pattern of one patient."""
    tex = _texture(rng, 0.08)
    if ischaemic:
        artery = str(rng.choice(["LAD", "RCA", "LCx"], p=[0.5, 0.3, 0.2]))
        centre, half = TERRITORIES[artery]
        c = np.deg2rad(centre + rng.normal(0, 10))
        hw = np.deg2rad(half * rng.uniform(0.8, 1.15))
        occlusion = rng.uniform(-0.2, 0.5)  # level of the occlusion (< 0: proximal)
        depth = rng.uniform(0.45, 0.8)

        def terr(alpha: np.ndarray, level: float, u: np.ndarray) -> np.ndarray:
            width = hw
            if artery == "LAD":  # the LAD wraps the apex
                width = hw + (np.pi - hw) * float(np.clip((level - 0.6) / 0.3, 0, 1))
            ang = np.exp(-0.5 * (_wrap(alpha - c) / (0.75 * width)) ** 2)
            return ang * float(_sig(np.asarray((level - occlusion) / 0.06)))

        def field(alpha: np.ndarray, level: float, u: np.ndarray) -> np.ndarray:
            return terr(alpha, level, u) - depth * u + tex(alpha, level, u)

        mvo = float(rng.uniform(0.08, 0.3)) if burden > 0.06 and rng.random() < 0.3 else 0.0
        return Pattern(f"ischaemic:{artery}", field, terr, mvo)
    kind = str(
        rng.choice(["midwall", "epicardial", "insertion", "patchy"], p=[0.4, 0.25, 0.2, 0.15])
    )
    if kind == "midwall":
        c, w = 1.5 * np.pi + rng.normal(0, 0.15), rng.uniform(0.6, 1.1)

        def field(alpha: np.ndarray, level: float, u: np.ndarray) -> np.ndarray:
            ang = np.exp(-0.5 * (_wrap(alpha - c) / w) ** 2) * (1 - 0.4 * level)
            return ang - 2.0 * np.abs(u - 0.5) + tex(alpha, level, u)

    elif kind == "epicardial":
        c, w = np.deg2rad(rng.uniform(100, 150)), rng.uniform(0.6, 1.0)

        def field(alpha: np.ndarray, level: float, u: np.ndarray) -> np.ndarray:
            ang = np.exp(-0.5 * (_wrap(alpha - c) / w) ** 2)
            return ang + 1.2 * u + tex(alpha, level, u)

    elif kind == "insertion":
        cs = np.deg2rad([rng.normal(240, 8), rng.normal(300, 8)])
        w = rng.uniform(0.2, 0.35)

        def field(alpha: np.ndarray, level: float, u: np.ndarray) -> np.ndarray:
            ang = np.maximum(
                np.exp(-0.5 * (_wrap(alpha - cs[0]) / w) ** 2),
                np.exp(-0.5 * (_wrap(alpha - cs[1]) / w) ** 2),
            )
            return ang - 1.2 * np.abs(u - 0.5) + tex(alpha, level, u)

    else:
        patchy = _texture(rng, 0.6)

        def field(alpha: np.ndarray, level: float, u: np.ndarray) -> np.ndarray:
            return patchy(alpha, level, u) - 0.5 * np.abs(u - 0.5)

    return Pattern(kind, field, None, 0.0)
