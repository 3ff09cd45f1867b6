"""Multi-frame (Legacy Converted Enhanced MR) instances become ordered slices."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.sequence import Sequence as DicomSequence

from connectors.errors import DicomInvalid
from connectors.pacs.pixels import expand_frames, series_volume, slice_pixels, volume_spacing_mm
from connectors.pacs.series import order_slices
from tests.pacs.mr_attrs import legacy_enhanced, mr_series


def _volume(datasets):  # type: ignore[no-untyped-def]
    ordered, how = order_slices(datasets)
    return how, np.stack([slice_pixels(ds) for ds in ordered]), series_volume(ordered, 24)


def test_frames_in_any_storage_order_give_the_single_frame_volume() -> None:
    classic = mr_series(n_positions=6, size=20, seed=3, smooth=True)
    enhanced = legacy_enhanced(classic)
    # store the frames in a scrambled order, as a converter may
    perm = [3, 0, 5, 1, 4, 2]
    frames = enhanced.pixel_array
    groups = enhanced.PerFrameFunctionalGroupsSequence
    enhanced.PerFrameFunctionalGroupsSequence = DicomSequence([groups[i] for i in perm])
    enhanced.PixelData = np.ascontiguousarray(frames[perm]).tobytes()
    how_c, raw_c, vol_c = _volume(classic)
    how_e, raw_e, vol_e = _volume([enhanced])
    assert how_c == how_e == "position"
    assert np.array_equal(raw_c, raw_e)
    assert np.array_equal(vol_c.image, vol_e.image)
    assert vol_e.pixel_spacing_mm == vol_c.pixel_spacing_mm == pytest.approx(1.5 * 20 / 24)
    assert volume_spacing_mm(enhanced, 24) == pytest.approx(1.5 * 20 / 24)
    assert vol_e.sop_instance_uids == (str(enhanced.SOPInstanceUID),) * 6


def test_spacing_comes_from_the_functional_groups() -> None:
    enhanced = legacy_enhanced(mr_series(n_positions=2, size=8, PixelSpacing=[0.7, 0.9]))
    slices = expand_frames([enhanced])
    assert [list(map(float, s.PixelSpacing)) for s in slices] == [[0.7, 0.9]] * 2
    assert "PixelSpacing" not in enhanced  # only inside the functional groups
    assert volume_spacing_mm(enhanced, 8) == pytest.approx(0.8)


def test_multiframe_without_pixels_names_the_instance() -> None:
    enhanced = legacy_enhanced(mr_series(n_positions=2, size=8))
    del enhanced.PixelData
    with pytest.raises(DicomInvalid, match=str(enhanced.SOPInstanceUID)):
        order_slices([enhanced])
