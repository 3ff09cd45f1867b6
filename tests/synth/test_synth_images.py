"""The LGE simulator: masks agree with the images, the burden, the physics, off-centre hearts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from cds.synth._mr import BLOOD, MYO, SCAR, draw_acquisition, ir_signal
from cds.synth.images import ENHANCEMENT, MYOCARDIUM, HeartGeometry, lge_volume


def _series(seed: int, burden: float = 0.2, ischaemic: bool = True, slices: int = 8, **acq):
    rng = np.random.default_rng(seed)
    a = draw_acquisition(rng, 128)
    if acq:
        a = dataclasses.replace(a, **acq)
    return a, lge_volume(rng, HeartGeometry(55.0, 10.0, burden, ischaemic), a, slices)


@pytest.mark.parametrize("ischaemic", [True, False])
@pytest.mark.parametrize("burden", [0.02, 0.1, 0.35])
def test_mask_burden_equals_the_given_burden(burden: float, ischaemic: bool) -> None:
    for seed in range(3):
        _, s = _series(seed, burden, ischaemic)
        myo = int((s.mask >= MYOCARDIUM).sum())
        enh = int((s.mask == ENHANCEMENT).sum())
        assert myo > 500
        assert abs(enh / myo - burden) <= 1.0 / myo + 1e-9


def test_enhancement_lies_inside_the_lv_myocardial_ring() -> None:
    for seed in range(6):
        _, s = _series(seed, 0.25, seed % 2 == 0)
        for k in range(s.mask.shape[0]):
            wall = s.mask[k] >= MYOCARDIUM
            if not wall.any():
                continue
            lab, n = ndimage.label(wall)
            assert n == 1, f"seed {seed} slice {k}: {n} myocardial parts, not one ring"
            filled = ndimage.binary_fill_holes(wall)
            cavity = filled & ~wall
            enh = s.mask[k] == ENHANCEMENT
            assert not (enh & cavity).any() and not (enh & ~filled).any()


def test_psir_enhancement_is_brighter_than_myocardium_and_blood_pool_bright() -> None:
    checked = 0
    for seed in range(12):
        a, s = _series(seed, 0.25, True, psir=True)
        if a.nulling != "good":
            continue
        enh, myo = s.mask == ENHANCEMENT, s.mask == MYOCARDIUM
        filled = np.stack([ndimage.binary_fill_holes(m >= MYOCARDIUM) for m in s.mask])
        cavity = filled & (s.mask == 0)
        m_myo, m_enh, m_blood = (float(s.image[r].mean()) for r in (myo, enh, cavity))
        assert m_blood > m_myo + 10 * a.noise  # bright blood, nulled myocardium
        assert m_enh > m_myo + 0.5 * (m_blood - m_myo)  # enhancement about as bright as blood
        checked += 1
    assert checked >= 5


def test_ti_nulls_normal_myocardium_and_scar_is_bright() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = draw_acquisition(rng, 128)
        sig = np.asarray(a.signal)
        assert np.abs(sig).max() == pytest.approx(1.0)
        if a.nulling == "good":  # nulled myocardium, bright blood, brighter scar
            assert abs(sig[MYO]) < 0.15 and sig[SCAR] > sig[BLOOD] > 0.2
    t1 = np.array([450.0])
    null = draw_acquisition(np.random.default_rng(0), 128)  # its own myocardial T1 differs
    assert null.ti_ms > 0
    assert ir_signal(t1, np.ones(1), 450.0 * np.log(2), 1e9)[0] == pytest.approx(0, abs=1e-9)


def test_geometry_and_contrast_follow_lge_protocols() -> None:
    rng = np.random.default_rng(5)
    acqs = [draw_acquisition(rng, 512) for _ in range(200)]
    fov = np.array([a.matrix * a.pixel_mm for a in acqs])
    assert fov.min() >= 290 and fov.max() <= 410
    px = np.array([a.pixel_mm for a in acqs])
    assert px.min() >= 1.15 and px.max() <= 2.1
    assert {a.thickness_mm for a in acqs} <= {6.0, 7.0, 8.0, 10.0}
    assert 0.3 < np.mean([a.psir for a in acqs]) < 0.8
    kinds = {a.nulling for a in acqs}
    assert kinds == {"good", "short", "long"}  # some studies are badly nulled
    ti = np.array([a.ti_ms for a in acqs if a.nulling == "good"])
    assert 200 < np.median(ti) < 380


def test_hearts_lie_off_centre_and_inside_the_field_of_view() -> None:
    far = 0
    for seed in range(30):
        a, s = _series(seed, 0.1, True, slices=4)
        rows, cols = np.nonzero((s.mask >= MYOCARDIUM).any(0))
        n = a.matrix
        assert rows.min() > 0 and cols.min() > 0 and rows.max() < n - 1 and cols.max() < n - 1
        off = np.hypot(rows.mean() - n / 2, cols.mean() - n / 2) / n
        far += off > 0.12
    assert far >= 5, "some hearts are far from the centre of the field of view"


def test_microvascular_obstruction_is_dark_inside_the_scar() -> None:
    for seed in range(60):
        rng = np.random.default_rng(seed)
        a = dataclasses.replace(draw_acquisition(rng, 128), psir=True, noise=0.01)
        s = lge_volume(rng, HeartGeometry(55.0, 10.0, 0.3, True), a, 8)
        if "microvascular obstruction" in s.artefacts:
            enh = s.image[s.mask == ENHANCEMENT]
            # a dark core: the darkest tenth of the scar is far below its median
            assert np.percentile(enh, 10) < np.median(enh) - 0.3
            return
    pytest.fail("no series with microvascular obstruction in 60 ischaemic ones")


def test_same_seed_same_series() -> None:
    _, a = _series(7)
    _, b = _series(7)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
