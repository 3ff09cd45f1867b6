"""Acquisition parameters and tissue contrast of a synthetic LGE study (numpy only).

Late gadolinium enhancement is an inversion-recovery (IR) gradient-echo acquisition,
triggered every other heartbeat, 10-20 minutes after an extracellular gadolinium agent.
The longitudinal magnetisation of a tissue with relaxation time T1, read out at the
inversion time TI after a full inversion that followed a recovery of ``T_rec`` is::

    S = PD * (1 - (1 + M0) * exp(-TI / T1)),   M0 = 1 - exp(-T_rec / T1)

The operator picks the TI that nulls normal myocardium (S = 0; about 250-350 ms at
these T1 values).  A magnitude image shows ``|S|``; a phase-sensitive (PSIR) image keeps
the sign of S, so tissue with T1 longer than the nulled myocardium stays darker than the
nulled myocardium and a mistimed TI changes the image much less (Kellman et al., Magn
Reson Med 2002;47:372-383).  Sources of the numbers are in ``docs/synthetic-cohort.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Tissue classes of the anatomical model (index into the contrast tables).
AIR, LUNG, FAT, MUSCLE, LIVER, SOFT, BLOOD, MYO, SCAR, MVO = range(10)
N_TISSUES = 10


@dataclass(frozen=True)
class Acquisition:
    """Geometry and contrast of one LGE study.

    Args:
        matrix: rows and columns of each slice.
        pixel_mm: in-plane pixel spacing (field of view / matrix).
        thickness_mm: slice thickness.
        gap_mm: gap between slices (spacing = thickness + gap).
        ti_ms: inversion time.
        ti_null_ms: the TI that would null this patient's normal myocardium.
        psir: phase-sensitive reconstruction (else magnitude).
        psir_offset: PSIR display offset, as a fraction of the brightest tissue's signal.
        noise: standard deviation of the receiver noise relative to the brightest tissue.
        signal: signed IR signal of each tissue class (``N_TISSUES`` values), scaled so
            that the brightest tissue's magnitude is 1.
    """

    matrix: int
    pixel_mm: float
    thickness_mm: float
    gap_mm: float
    ti_ms: float
    ti_null_ms: float
    psir: bool
    psir_offset: float
    noise: float
    signal: tuple[float, ...]

    @property
    def spacing_mm(self) -> float:
        """Distance between slice centres."""
        return self.thickness_mm + self.gap_mm

    @property
    def nulling(self) -> str:
        """``good`` when TI is within 10 % of the myocardial null, else ``short``/``long``."""
        r = self.ti_ms / self.ti_null_ms
        return "good" if 0.9 <= r <= 1.1 else ("short" if r < 1 else "long")


def ir_signal(t1_ms: np.ndarray, pd: np.ndarray, ti_ms: float, recovery_ms: float) -> np.ndarray:
    """Signed IR signal of tissues (T1, proton density) at ``ti_ms``."""
    m0 = 1.0 - np.exp(-recovery_ms / t1_ms)
    return pd * (1.0 - (1.0 + m0) * np.exp(-ti_ms / t1_ms))


def _null_ti(t1_ms: float, recovery_ms: float) -> float:
    lo, hi = 50.0, 1500.0  # S rises monotonically with TI: bisection on its sign
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if ir_signal(np.array(t1_ms), np.array(1.0), mid, recovery_ms) < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def draw_acquisition(rng: np.random.Generator, max_matrix: int) -> Acquisition:
    """Draw one study's protocol and post-contrast tissue T1 values.

    Args:
        rng: the study's random source.
        max_matrix: largest rows/columns (the field of view is kept; pixels grow).
    """
    fov = rng.uniform(300.0, 400.0)
    matrix = int(min(max_matrix, 8 * round(fov / rng.uniform(1.2, 2.0) / 8)))
    thickness = float(rng.choice([6.0, 7.0, 8.0, 8.0, 8.0, 10.0]))
    gap = float(rng.choice([0.0, 2.0, 2.0, 2.0, 4.0])) if thickness < 10 else 0.0
    # post-contrast T1 (ms) and proton density per tissue class, 1.5/3 T, 10-20 min
    t1 = np.empty(N_TISSUES)
    pd = np.empty(N_TISSUES)
    t1_myo = rng.uniform(400.0, 520.0)
    t1_blood = t1_myo * rng.uniform(0.6, 0.78)
    t1[[AIR, LUNG, FAT, MUSCLE, LIVER, SOFT, BLOOD, MYO, SCAR, MVO]] = [
        1000.0,
        rng.uniform(800, 1100),
        rng.uniform(260, 340),
        rng.uniform(520, 700),
        rng.uniform(320, 460),
        rng.uniform(350, 450),
        t1_blood,
        t1_myo,
        t1_blood * rng.uniform(0.55, 0.75),
        t1_myo * rng.uniform(1.05, 1.4),
    ]
    pd[[AIR, LUNG, FAT, MUSCLE, LIVER, SOFT, BLOOD, MYO, SCAR, MVO]] = [
        0.0, rng.uniform(0.04, 0.1), 0.9, 0.7, 0.75, 0.7, 0.95, 0.8, 0.85, 0.8,
    ]  # fmt: skip
    recovery = 2 * rng.uniform(700.0, 1100.0) - 300.0  # every other R-R interval
    ti_null = _null_ti(t1_myo, recovery)
    kind = rng.random()
    if kind < 0.78:  # well nulled
        ti = ti_null * rng.normal(1.0, 0.035)
    elif kind < 0.89:  # TI too short: myocardium negative (grey on magnitude)
        ti = ti_null * rng.uniform(0.72, 0.88)
    else:  # TI too long: myocardium positive, less contrast
        ti = ti_null * rng.uniform(1.12, 1.35)
    sig = ir_signal(t1, pd, ti, recovery)
    scale = float(np.abs(sig).max())  # the brightest tissue (blood may be near its null)
    psir = bool(rng.random() < 0.55)
    return Acquisition(
        matrix=matrix,
        pixel_mm=float(fov / matrix),
        thickness_mm=thickness,
        gap_mm=gap,
        ti_ms=float(ti),
        ti_null_ms=float(ti_null),
        psir=psir,
        psir_offset=float(rng.uniform(0.35, 1.0)),
        noise=float(
            rng.choice([rng.uniform(0.005, 0.015), rng.uniform(0.015, 0.03)], p=[0.8, 0.2])
        ),
        signal=tuple(float(s) for s in sig / scale),
    )


def ssfp_signal(rng: np.random.Generator) -> tuple[float, ...]:
    """Relative bright-blood cine (balanced SSFP, contrast ~ sqrt(T2/T1)) per tissue."""
    s = np.empty(N_TISSUES)
    s[[AIR, LUNG, FAT, MUSCLE, LIVER, SOFT, BLOOD, MYO, SCAR, MVO]] = [
        0.0, 0.05, 0.85, 0.2, 0.3, 0.35, 1.0, 0.25, 0.25, 0.25,
    ]  # fmt: skip
    return tuple(float(v) for v in s * rng.uniform(0.9, 1.1, N_TISSUES))
