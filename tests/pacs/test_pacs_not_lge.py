"""not_lge_reason on pydicom's bundled real files and on hand-built series."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.data import get_testdata_file

from connectors.pacs.series import not_lge_reason
from tests.pacs.mr_attrs import legacy_enhanced, mr_series

LGE_SIEMENS = {
    "ScanningSequence": ["GR", "IR"],
    "SequenceVariant": ["SK", "SP", "MP"],
    "EchoTime": 1.16,
    "InversionTime": 300,
    "TriggerTime": 412.5,
}


def _testfile(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name)
    assert path is not None, name
    return pydicom.dcmread(path, stop_before_pixels=True)


def test_bundled_files() -> None:
    # MR_small.dcm: a Toshiba spin-echo image, TE 240 ms
    assert not_lge_reason([_testfile("MR_small.dcm")]) == (
        "T2-weighted acquisition (EchoTime 240 ms, no inversion recovery)"
    )
    assert not_lge_reason([_testfile("CT_small.dcm")]) == "not MR (modality CT)"
    assert not_lge_reason([_testfile("JPEG2000.dcm")]) == "not MR (modality NM)"
    # a Siemens post-contrast abdominal VIBE reformat: region next to the heart, short TE,
    # no inversion: nothing positively excludes LGE, so the function stays silent
    assert not_lge_reason([_testfile("examples_overlay.dcm")]) is None


def test_lge_and_attribute_poor_series_are_not_rejected() -> None:
    assert not_lge_reason(mr_series(**LGE_SIEMENS)) is None
    assert not_lge_reason(mr_series()) is None
    assert not_lge_reason([]) is None
    # a few repeated trigger times (repeated single-shot LGE) are not cine
    repeats = [{"TriggerTime": 400.0 + k} for k in range(12)]
    assert not_lge_reason(mr_series(phases=repeats, EchoTime=1.2)) is None
    # up to four inversion times per position are not a scout
    few_ti = [{"InversionTime": 250 + 25 * k} for k in range(4)]
    assert not_lge_reason(mr_series(phases=few_ti, EchoTime=3.0)) is None
    assert not_lge_reason(mr_series(BodyPartExamined="CHEST", **LGE_SIEMENS)) is None
    assert not_lge_reason(mr_series(BodyPartExamined="ABDOMEN", **LGE_SIEMENS)) is None


@pytest.mark.parametrize(
    ("attrs", "phases", "reason"),
    [
        ({"Modality": "CT"}, ({},), "not MR (modality CT)"),
        ({"BodyPartExamined": "HEAD"}, ({},), "not a cardiac study (BodyPartExamined HEAD)"),
        (
            {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]},
            ({},),
            "localizer (ImageType LOCALIZER)",
        ),
        ({"DiffusionBValue": 800}, ({},), "diffusion-weighted series (b-value up to 800 s/mm2)"),
        (
            {"EchoTime": 80, "ScanningSequence": "SE"},
            ({},),
            "T2-weighted acquisition (EchoTime 80 ms, no inversion recovery)",
        ),
        (
            {"EchoTime": 60, "InversionTime": 160},
            ({},),
            "T2-weighted acquisition (EchoTime 60 ms)",
        ),
        (
            {"EchoTime": 1.4},
            tuple({"TriggerTime": 40.0 * k} for k in range(20)),
            "cine series (20 cardiac phases per slice position)",
        ),
        (
            {"EchoTime": 1.1},
            tuple({"InversionTime": 100 + 25 * k} for k in range(8)),
            "multiple inversion times (8 per slice position): TI scout or T1 mapping",
        ),
    ],
)
def test_positive_evidence(attrs: dict, phases: tuple, reason: str) -> None:
    assert not_lge_reason(mr_series(phases=phases, **attrs)) == reason


def test_legacy_converted_enhanced_frames_are_read() -> None:
    cine = mr_series(phases=tuple({"TriggerTime": 35.0 * k} for k in range(25)), EchoTime=1.3)
    enhanced = legacy_enhanced(cine)
    assert int(enhanced.NumberOfFrames) == 100
    assert not_lge_reason([enhanced]) == "cine series (25 cardiac phases per slice position)"
    lge = legacy_enhanced(mr_series(**LGE_SIEMENS))
    assert not_lge_reason([lge]) is None
    t2 = legacy_enhanced(mr_series(EchoTime=85.0))
    assert not_lge_reason([t2]) == "T2-weighted acquisition (EchoTime 85 ms, no inversion recovery)"
