"""A site's LGE series and expert masks as fine-tuning examples.

The series come from a DICOM folder (searched recursively, MR series only); the masks
from a second folder (:mod:`cds.segio` formats).  Matching:

* a **DICOM SEG** belongs to the series its ReferencedSeriesSequence names;
* a **NIfTI** file to the series whose SeriesInstanceUID, or whose folder's name (the
  folder directly holding all its files), is the file name without ``.nii``/``.nii.gz``.

A mask that matches no series, a second mask for one series, or a mask whose geometry
differs from its series (matrix, slice count, or for a SEG a referenced instance that is
not a slice of the series) is refused with :class:`cds.errors.MaskFileError` naming the
file: a wrong contour set must not train the network silently.  Series without a mask
are left out and counted.  Each series is read through :func:`cds.pipeline.load_series`
(the batch's ordering, resampling to the model's ``input_size`` and normalisation), and
its labels are resampled on the same grid (:func:`connectors.pacs.pixels.resample_mask`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cds.errors import MaskFileError
from cds.pipeline import load_series
from cds.segio import (
    SeriesGeometry,
    SeriesMask,
    is_nifti,
    labels_fingerprint,
    nifti_stem,
    read_nifti,
    read_seg,
    seg_series_uid,
)
from connectors.pacs.base import SeriesRef
from connectors.pacs.folder import DicomFolderSource
from connectors.pacs.pixels import resample_mask
from model.image_branch import ENHANCEMENT
from model.types import LabelledExample, ModelInput

log = logging.getLogger("mprtm.site_masks")

#: Files in a masks folder that are neither masks nor refused (notes beside the masks).
_IGNORED_SUFFIXES = (".txt", ".md", ".json", ".csv", ".pdf")


@dataclass
class SiteData:
    """Fine-tuning examples and what they came from.

    Args:
        examples: one per matched series (``input.patient_id`` is the SeriesInstanceUID).
        masks: the masks read, per series.
        fingerprint: sha256 of the mask set (:func:`cds.segio.labels_fingerprint`) and
            the series' pixel fingerprints.
        counts: series found, series with masks, annotated slices, slices with enhancement.
    """

    examples: list[LabelledExample]
    masks: list[SeriesMask]
    fingerprint: str
    counts: dict[str, int] = field(default_factory=dict)


def mr_series(source: DicomFolderSource) -> dict[str, SeriesRef]:
    """Every MR series of a DICOM folder by SeriesInstanceUID."""
    out: dict[str, SeriesRef] = {}
    for pid in source.patient_ids():
        for ref in source.find_series(pid, modality="MR"):
            out[ref.series_instance_uid] = ref
    return out


def series_folder_names(source: DicomFolderSource, refs: dict[str, SeriesRef]) -> dict[str, str]:
    """Folder name -> SeriesInstanceUID for series whose files all sit in one folder named
    after nothing else (a folder holding several series names none of them)."""
    seen: dict[str, list[str]] = {}
    for uid, ref in refs.items():
        parents = {p.parent.name for p in source.series_files(ref)}
        if len(parents) == 1:
            seen.setdefault(parents.pop(), []).append(uid)
    return {name: uids[0] for name, uids in seen.items() if len(uids) == 1}


def match_masks(
    masks_dir: Path, refs: dict[str, SeriesRef], by_folder: dict[str, str]
) -> dict[str, Path]:
    """SeriesInstanceUID -> mask file, for every mask file in ``masks_dir``.

    Raises:
        MaskFileError: a file that is no mask, matches no series, or a second mask for a
            series (names the file).
    """
    if not masks_dir.is_dir():
        raise MaskFileError(f"masks folder not found: {masks_dir}")
    matched: dict[str, Path] = {}
    for path in sorted(p for p in masks_dir.rglob("*") if p.is_file()):
        if path.name.startswith(".") or path.suffix.lower() in _IGNORED_SUFFIXES:
            continue
        if is_nifti(path):
            stem = nifti_stem(path)
            uid = stem if stem in refs else by_folder.get(stem)
            if uid is None:
                raise MaskFileError(
                    f"{path.name}: matches no series by name (expected <SeriesInstanceUID>"
                    ".nii.gz or <series folder name>.nii.gz)"
                )
        else:
            uid = seg_series_uid(path)
            if uid not in refs:
                raise MaskFileError(
                    f"{path.name}: references series {uid}, which is not in the series folder"
                )
        if uid in matched:
            raise MaskFileError(
                f"{path.name}: a second mask for series {uid} (also {matched[uid].name})"
            )
        matched[uid] = path
    return matched


def load_site_data(series_dir: Path, masks_dir: Path, image_size: int) -> SiteData:
    """Read and match a site's series and masks into fine-tuning examples.

    Args:
        series_dir: DICOM folder with the series.
        masks_dir: folder with DICOM SEG and/or NIfTI masks.
        image_size: the model's ``config.input_size``.

    Raises:
        MaskFileError: see the module docstring (names the file).
        DicomInvalid: a matched series that cannot be read (names the UID).
    """
    if not series_dir.is_dir():
        raise MaskFileError(f"series folder not found: {series_dir}")
    source = DicomFolderSource(series_dir)
    refs = mr_series(source)
    matched = match_masks(masks_dir, refs, series_folder_names(source, refs))
    examples, masks, pixel_prints = [], [], []
    for uid, path in sorted(matched.items()):
        loaded = load_series(source.retrieve_series(refs[uid]), image_size)
        geometry = SeriesGeometry.of(loaded.ordered)
        if is_nifti(path):
            mask = read_nifti(path, geometry)
        else:
            if len(set(geometry.sop_instance_uids)) != len(geometry.sop_instance_uids):
                raise MaskFileError(
                    f"{path.name}: series {uid} is multi-frame; give its masks as NIfTI"
                )
            mask = read_seg(path, geometry)
        keep = np.flatnonzero(mask.annotated)
        if not len(keep):
            raise MaskFileError(f"{path.name}: labels no slice of series {uid}")
        volume = loaded.volume
        examples.append(
            LabelledExample(
                input=ModelInput(
                    patient_id=uid,
                    image=volume.image[keep],
                    image_fingerprint=volume.fingerprint,
                    image_spacing_mm=volume.pixel_spacing_mm,
                ),
                masks=resample_mask(mask.labels[keep], image_size),
            )
        )
        masks.append(mask)
        pixel_prints.append(volume.fingerprint)
    h = hashlib.sha256(labels_fingerprint(masks).encode())
    for fp in sorted(pixel_prints):
        h.update(fp.encode())
    counts = {
        "series_found": len(refs),
        "series_with_masks": len(masks),
        "series_without_masks": len(refs) - len(masks),
        "slices_annotated": int(sum(int(m.annotated.sum()) for m in masks)),
        "slices_with_enhancement": int(
            sum(int((m.labels[m.annotated] == ENHANCEMENT).any((1, 2)).sum()) for m in masks)
        ),
        "dicom_seg_files": sum(not is_nifti(m.path) for m in masks),
        "nifti_files": sum(is_nifti(m.path) for m in masks),
    }
    log.info(
        "site masks: %d of %d series matched (%d annotated slices)",
        counts["series_with_masks"],
        counts["series_found"],
        counts["slices_annotated"],
    )
    return SiteData(examples, masks, h.hexdigest(), counts)
