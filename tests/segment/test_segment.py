"""``mprtm segment``: from a folder and over DIMSE from a real Orthanc; its JSON agrees
with what a nightly batch stores for the same series and checkpoint."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from cds.batch.runner import BatchRunner, RunOptions
from cds.cli import main as cli_main
from cds.db import make_engine, session_factory, session_scope
from cds.db.models import ImageFeatureCache
from cds.pipeline import load_series
from cds.segio import SeriesGeometry, read_nifti, read_seg
from cds.segment import segment_all_slices
from connectors.pacs.pixels import restore_mask
from model.predictor import Predictor
from tests.batch.conftest import AS_OF, batch_settings, write_config
from tests.pacs.orthanc_server import OrthancServer, free_port
from tests.segment.conftest import SiteSeries


def _segment(
    args: list[str], capsys: pytest.CaptureFixture[str], config: Path | None = None
) -> dict[str, object]:
    rc = cli_main([*(["--config", str(config)] if config else []), "segment", *args])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    out = Path(args[args.index("--out") + 1])
    return dict(json.loads((out / "result.json").read_text()))


def test_segment_a_folder_writes_masks_seg_overlays_and_json(
    site: list[SiteSeries], checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = next(x for x in site if (x.truth == 2).any())
    out = tmp_path / "out"
    result = _segment([str(s.folder), "--checkpoint", str(checkpoint), "--out", str(out)], capsys)
    n = len(s.ordered)
    assert result["series_instance_uid"] == s.uid and result["slices"] == n
    assert set(result) >= {"burden", "quality", "usable", "reason", "signals"}
    assert isinstance(result["burden"], float) and 0.0 <= result["burden"] <= 1.0
    geometry = SeriesGeometry.of(s.ordered)
    nifti = read_nifti(out / "segmentation.nii.gz", geometry).labels
    assert nifti.shape == s.truth.shape
    seg = read_seg(out / "segmentation.dcm", geometry)
    np.testing.assert_array_equal(seg.labels, nifti)
    pngs = sorted((out / "overlays").glob("slice_*.png"))
    assert len(pngs) == n and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    # the masks of every slice hold, on the slices of the burden, the batch pass's labels
    predictor = Predictor.from_checkpoint(checkpoint, attribution=False)
    volume = load_series(s.ordered, predictor.config.input_size).volume
    feats = predictor.encode_image(volume.image, volume.pixel_spacing_mm)
    every = segment_all_slices(predictor, volume.image, volume.pixel_spacing_mm)
    assert every.shape[0] == n and feats.segmentation is not None
    np.testing.assert_array_equal(every[result["burden_slices"]], feats.segmentation)
    assert feats.fibrosis_burden == pytest.approx(result["burden"], abs=1e-6)
    np.testing.assert_array_equal(restore_mask(every, *s.truth.shape[1:]), nifti)


def test_segment_json_agrees_with_the_batch(
    site: list[SiteSeries],
    cohort_dir: Path,
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = batch_settings(tmp_path, cohort_dir, checkpoint)
    BatchRunner(settings).run(RunOptions(as_of=AS_OF, progress=False))
    engine = make_engine(settings.database.url)
    with session_scope(session_factory(engine)) as db:
        rows = [
            (c.series_instance_uid, c.fibrosis_burden, c.quality, c.usable, c.quality_reason)
            for c in db.scalars(select(ImageFeatureCache))
        ]
    engine.dispose()
    assert len(rows) >= 3
    config = write_config(tmp_path / "mprtm.toml", settings)
    folders = {s.uid: s.folder for s in site}
    burdens = []
    for uid, burden, quality, usable, reason in sorted(rows)[:3]:
        out = tmp_path / uid
        result = _segment(
            [str(folders[uid]), "--checkpoint", str(checkpoint), "--out", str(out)], capsys, config
        )
        assert result["burden"] == pytest.approx(burden, abs=1e-5)
        assert result["quality"] == pytest.approx(quality, abs=1e-4)
        assert (result["usable"], result["reason"]) == (usable, reason)
        burdens.append(burden)
    assert len(set(np.round(burdens, 6))) > 1  # the comparison is not of constants


@pytest.mark.orthanc
def test_segment_over_dimse_from_orthanc(
    site: list[SiteSeries],
    checkpoint: Path,
    start_orthanc: Callable[..., OrthancServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = start_orthanc(modalities={"MPRTM": ("127.0.0.1", free_port())})  # may C-FIND/C-GET
    s = site[0]
    rc = cli_main(
        ["load-dicom", str(s.folder), "--pacs", f"127.0.0.1:{server.dicom_port}",
         "--called-aet", server.aet, "--calling-aet", "LOADER", "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    settings = batch_settings(
        tmp_path,
        tmp_path,
        checkpoint,
        pacs__source="dimse",
        pacs__host="127.0.0.1",
        pacs__port=server.dicom_port,
        pacs__called_aet=server.aet,
        pacs__calling_aet="MPRTM",
        pacs__retrieve="get",
        pacs__max_retries=0,
    )
    config = write_config(tmp_path / "mprtm.toml", settings)
    common = ["--checkpoint", str(checkpoint)]
    remote = _segment(
        ["--series-uid", s.uid, *common, "--out", str(tmp_path / "pacs")], capsys, config
    )
    local = _segment([str(s.folder), *common, "--out", str(tmp_path / "folder")], capsys, config)
    assert remote["series_instance_uid"] == s.uid
    for key in ("burden", "quality", "usable", "reason", "image_fingerprint", "slices"):
        assert remote[key] == local[key], key
    geometry = SeriesGeometry.of(s.ordered)
    np.testing.assert_array_equal(
        read_nifti(tmp_path / "pacs" / "segmentation.nii.gz", geometry).labels,
        read_nifti(tmp_path / "folder" / "segmentation.nii.gz", geometry).labels,
    )
    rc = cli_main(
        ["--config", str(config), "segment", "--series-uid", "1.2.3.999", *common, "--out",
         str(tmp_path / "x")]
    )  # fmt: skip
    assert rc == 2 and "series 1.2.3.999 not found" in capsys.readouterr().err
