"""Series recognition: the sourced vendor-convention table, the names of issue 22, the
attributes that overrule names, site patterns, and the PSIR/magnitude twin choice."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest

import connectors.pacs
from cds.config import PacsSettings
from connectors.pacs.base import SeriesRef
from connectors.pacs.recognition import KINDS, classify_description, classify_series
from connectors.pacs.series import are_twins, select_lge_series

TABLE = Path(connectors.pacs.__file__).parent / "data" / "lge_conventions.csv"
VENDORS = {"Siemens", "GE", "Philips", "Canon/Toshiba"}
CFG = PacsSettings()


def _rows() -> list[dict[str, str]]:
    with TABLE.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _ref(row: dict[str, str], uid: str = "1.2.3") -> SeriesRef:
    ti = row.get("inversion_time_ms", "")
    return SeriesRef(
        patient_id="P",
        study_instance_uid="1.2",
        series_instance_uid=uid,
        modality="MR",
        series_description=row.get("series_description", ""),
        protocol_name=row.get("protocol_name", ""),
        study_date="20250101",
        n_instances=int(row.get("n_instances") or 10),
        series_number=int(row["series_number"]) if row.get("series_number") else None,
        manufacturer=row.get("manufacturer", ""),
        sequence_name=row.get("sequence_name", ""),
        scanning_sequence=row.get("scanning_sequence", ""),
        sequence_variant=row.get("sequence_variant", ""),
        image_type=row.get("image_type", ""),
        inversion_time_ms=float(ti) if ti else None,
        contrast_agent=row.get("contrast_agent", ""),
        contrast_route=row.get("contrast_route", ""),
    )


def test_convention_table_is_well_formed() -> None:
    rows = _rows()
    assert len(rows) >= 30
    for row in rows:
        assert row["vendor"] in VENDORS, row
        assert row["expected"] in KINDS, row
        assert row["source"].startswith("https://"), row
        assert row["manufacturer"], row


@pytest.mark.parametrize("row", _rows(), ids=lambda r: f"{r['vendor']}:{r['series_description']}")
def test_every_convention_row_is_classified_as_expected(row: dict[str, str]) -> None:
    got = classify_series(_ref(row))
    assert got.kind == row["expected"], got.reason
    # with the default site patterns, exactly the LGE rows are selected
    is_lge = row["expected"] in ("lge", "lge_psir")
    picked = select_lge_series([_ref(row)], include=CFG.lge_patterns, exclude=CFG.exclude_patterns)
    assert picked == (_ref(row) if is_lge else None)


def _named(desc: str, uid: str = "1.2.3", **kw: object) -> SeriesRef:
    return replace(_ref({"series_description": desc}, uid), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("LGE PSIR SSFP SA", "lge_psir"),
        ("MOCO_PSIR_SSFP_SAX", "lge_psir"),
        ("Viability SA", "lge"),
        ("DE_SA_stack", "lge"),
        ("LATE ENHANCEMENT SAX", "lge"),
        ("PSIR_MAG", "lge"),
        ("cine SSFP SAX", "cine"),
        ("TI scout", "ti_scout"),
        ("T2 STIR SA", "t2_weighted"),
        ("3-plane localizer", "localizer"),
        ("LGE localizer", "localizer"),
        ("MOLLI 5(3)3", "t1_map"),
        ("T2 map", "t2_map"),
        ("T2* map", "t2_map"),
        ("perfusion stress", "perfusion"),
        ("series 7", "other"),
    ],
)
def test_issue_names(name: str, kind: str) -> None:
    assert classify_series(_named(name)).kind == kind
    picked = select_lge_series(
        [_named(name)], include=CFG.lge_patterns, exclude=CFG.exclude_patterns
    )
    assert (picked is not None) == (kind in ("lge", "lge_psir"))


def test_attributes_overrule_names() -> None:
    lge = "LGE SAX"
    assert classify_series(_named(lge, image_type="ORIGINAL\\PRIMARY\\M\\LOCALIZER")).kind == (
        "localizer"
    )
    assert classify_series(_named(lge, image_type="DERIVED\\PRIMARY\\T1 MAP\\ND")).kind == "t1_map"
    assert classify_series(_named(lge, sequence_name="*fl2d1_v150in")).kind == "flow"
    assert classify_series(_named(lge, scanning_sequence="SE\\IR")).kind == "t2_weighted"
    assert classify_series(_named(lge, scanning_sequence="GR", sequence_variant="SK\\SS")).kind == (
        "cine"
    )
    # an unnamed inversion-recovery gradient echo after contrast is LGE (weakest evidence)
    bare = _named("", scanning_sequence="GR\\IR", sequence_variant="SK\\SP\\MP")
    got = classify_series(replace(bare, contrast_agent="gadobutrol"))
    assert (got.kind, got.evidence) == ("lge", 1) and "contrast given" in got.reason
    assert classify_series(replace(bare, inversion_time_ms=300.0, scanning_sequence="")).is_lge
    assert classify_series(_named("", scanning_sequence="GR")).kind == "other"
    # a name and the attributes agreeing is the strongest evidence
    assert classify_series(replace(bare, series_description=lge)).evidence == 3


def test_phase_sensitive_by_image_type_then_name() -> None:
    philips_m = _named("LGE SA", image_type="ORIGINAL\\PRIMARY\\M_IR\\M\\IR")
    philips_r = _named("LGE SA", image_type="ORIGINAL\\PRIMARY\\R_IR\\R\\IR")
    assert classify_series(philips_m).kind == "lge"
    assert classify_series(philips_r).kind == "lge_psir"
    assert (
        classify_series(_named("LGE", image_type="DERIVED\\PRIMARY\\PSIR\\ND")).kind == "lge_psir"
    )
    # ImageType magnitude wins over a PSIR name (the magnitude twin keeps the protocol name)
    assert (
        classify_series(_named("LGE_PSIR_SAX", image_type="ORIGINAL\\PRIMARY\\M\\ND")).kind == "lge"
    )


def test_site_patterns_override() -> None:
    local = _named("Narbe kurz")  # a site's own word
    assert not classify_series(local).is_lge
    assert classify_series(local, include=["narbe"]).is_lge
    # an include pattern does not overrule an attribute
    loc = replace(local, image_type="ORIGINAL\\PRIMARY\\LOCALIZER")
    assert classify_series(loc, include=["narbe"]).kind == "localizer"
    # an exclude pattern always wins
    assert classify_series(_named("LGE SAX"), exclude=["sax"]).kind == "excluded"


def test_psir_twin_is_chosen() -> None:
    mag = _named("PSIR_MAG", "9.1", n_instances=12, series_number=1101)
    psir = _named("PSIR", "9.0", n_instances=12, series_number=1102)
    assert are_twins(mag, psir)
    kw = {"include": CFG.lge_patterns, "exclude": CFG.exclude_patterns}
    assert select_lge_series([mag, psir], **kw) == psir  # type: ignore[arg-type]
    assert select_lge_series([mag, psir], prefer_phase_sensitive=False, **kw) == mag  # type: ignore[arg-type]
    # a single PSIR slice does not beat a full magnitude stack that is not its twin
    four_ch = _named("PSIR 4CH", "9.2", n_instances=1, series_number=1201)
    stack = _named("LGE SAX", "9.3", n_instances=12, series_number=1301)
    assert not are_twins(four_ch, stack)
    assert select_lge_series([four_ch, stack], **kw) == stack  # type: ignore[arg-type]
    # twins by protocol name or by stripped description, in the same study only
    assert are_twins(
        replace(mag, protocol_name="LGE", series_number=None),
        replace(psir, protocol_name="LGE", series_number=None),
    )
    assert are_twins(_named("LGE SA MAG", n_instances=5), _named("LGE SA PSIR", n_instances=5))
    assert not are_twins(mag, replace(psir, study_instance_uid="1.9"))


@pytest.mark.parametrize(
    ("description", "modality", "kind"),
    [
        ("MOCO_PSIR_SSFP_SAX", "MR", "lge_psir"),
        ("Viability SA", "", "lge"),
        ("Viability SA", "CT", "other"),
        ("3D Ax T1 MP-RAGE_R22", "MR", "other"),
        ("cine SAX", "MR", "excluded"),
    ],
)
def test_description_alone_as_imaging_study_gives_it(description: str, modality: str, kind: str):
    got = classify_description(
        description, modality=modality, include=CFG.lge_patterns, exclude=CFG.exclude_patterns
    )
    assert got.kind == kind, got.reason
