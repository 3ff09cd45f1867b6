"""Segment one LGE series and write what a researcher checks by eye.

The series goes the batch's way: :func:`connectors.pacs.series.not_lge_reason` (a cine, T2
or non-cardiac series is not given to the network), then :func:`cds.pipeline.load_series`
(slice order, resampling to the model's ``input_size``, normalisation), then
:meth:`model.predictor.Predictor.encode_image` (segmentation, burden and the quality gate
with ``[model] image_*`` thresholds).  So ``result.json``'s ``burden``, ``quality``,
``usable`` and ``reason`` are what a nightly batch stores for the same series and
checkpoint (``ImageFeatureCache``).

The image branch measures the burden on ``max_slices`` evenly spaced slices
(``burden_slices`` in the JSON).  The masks cover every slice: the other slices are
segmented by the same network in further passes (slices are segmented independently, so
the slices of the burden get the same labels either way).

Files written to the output folder:

* ``result.json``: series UID, model version, ``burden``, ``quality``, ``usable``,
  ``reason``, ``signals``, slice counts and the file names below;
* ``segmentation.nii.gz``: labels on the series' own matrix (axes column, row, slice;
  :mod:`cds.segio`);
* ``segmentation.dcm``: the same as a DICOM SEG (automatic segments; single-frame source
  images only);
* ``overlays/slice_<k>.png``: each slice on the model grid with its labels drawn over it
  (:func:`cds.overlay.render_overlay`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset

from cds.image_gate import features_status
from cds.overlay import render_overlay
from cds.pipeline import load_series
from cds.segio import nifti_affine, write_nifti, write_seg
from connectors.pacs._frames import is_multiframe
from connectors.pacs.pixels import restore_mask
from connectors.pacs.series import not_lge_reason
from model.image_branch import select_slices
from model.predictor import Predictor

RESULT = "result.json"


def segment_all_slices(
    predictor: Predictor, image: np.ndarray, spacing: float | None
) -> np.ndarray:
    """Labels (S, size, size) of every slice, ``max_slices`` slices per pass."""
    step = predictor.config.max_slices
    parts = []
    for start in range(0, image.shape[0], step):
        f = predictor.encode_image(image[start : start + step], spacing)
        assert f.segmentation is not None
        parts.append(f.segmentation)
    return np.concatenate(parts)


def segment_series(predictor: Predictor, datasets: Sequence[Dataset], out: Path) -> dict[str, Any]:
    """Segment one retrieved series and write the files of the module docstring.

    Args:
        predictor: the loaded checkpoint (its ``quality_rules`` are the gate's).
        datasets: the series' instances, any order.
        out: output folder (created).

    Returns:
        The ``result.json`` content.

    Raises:
        connectors.errors.DicomInvalid: the slices cannot be ordered or decoded.
        model.errors.ModelInputError: the volume cannot be used by the network.
    """
    out.mkdir(parents=True, exist_ok=True)
    uid = str(datasets[0].get("SeriesInstanceUID", "")) if datasets else ""
    result: dict[str, Any] = {"series_instance_uid": uid, "model_version": predictor.version}
    not_lge = not_lge_reason(datasets)
    if not_lge is not None:
        result.update(
            {"burden": None, "quality": None, "usable": False,
             "reason": f"not an LGE series: {not_lge}", "signals": {}, "files": {}}
        )  # fmt: skip
        (out / RESULT).write_text(json.dumps(result, indent=1), encoding="utf-8")
        return result
    loaded = load_series(datasets, int(predictor.config.input_size))
    volume = loaded.volume
    feats = predictor.encode_image(volume.image, volume.pixel_spacing_mm)
    status = features_status(feats, uid)
    labels = segment_all_slices(predictor, volume.image, volume.pixel_spacing_mm)
    n = volume.image.shape[0]
    first = loaded.ordered[0]
    native = restore_mask(labels, int(first.Rows), int(first.Columns))
    files = {"nifti": "segmentation.nii.gz", "overlays": "overlays"}
    write_nifti(native, out / files["nifti"], nifti_affine(loaded.ordered))
    if any(is_multiframe(ds) for ds in datasets):
        files["dicom_seg"] = ""
        result["dicom_seg_skipped"] = "multi-frame source images"
    else:
        files["dicom_seg"] = "segmentation.dcm"
        write_seg(
            loaded.ordered,
            native,
            out / files["dicom_seg"],
            algorithm="M-PRTM",
            version=predictor.version or "unknown",
        )
    (out / "overlays").mkdir(exist_ok=True)
    for k in range(n):
        png = render_overlay(volume.image[k], labels[k])
        (out / "overlays" / f"slice_{k:03d}.png").write_bytes(png)
    result.update(
        {
            "burden": round(float(feats.fibrosis_burden), 6),
            "quality": status["quality"],
            "usable": status["usable"],
            "reason": status["reason"],
            "signals": status["signals"],
            "slices": n,
            "burden_slices": [int(i) for i in select_slices(n, predictor.config.max_slices)],
            "slice_order": loaded.slice_order,
            "pixel_spacing_mm": volume.pixel_spacing_mm,
            "image_fingerprint": volume.fingerprint,
            "files": files,
        }
    )
    (out / RESULT).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result
