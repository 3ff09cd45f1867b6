"""A labelled cohort folder -> training/evaluation examples.

Layout (as ``mprtm synth`` writes it, and as a hospital can export its own data)::

    DIR/fhir/<Type>.ndjson                 FHIR R4 Bulk Data NDJSON
    DIR/dicom/...                          DICOM files (any layout; optional)
    DIR/truth/labels.csv                   patient_id, death, cv_death, cv_death_cause,
                                           rehospitalization, cardiology_rehospitalization,
                                           macce, macce_cause, fibrosis_burden, ...
    DIR/truth/risk.csv                     patient_id + true 1-year probabilities (optional)
    DIR/truth/masks/<SeriesUID>.npz        masks (S, H, W) uint8 and sop_instance_uids (S,)
    DIR/truth/meta.json                    optional {"reference_date": "YYYY-MM-DD"}

Every patient goes through exactly the path inference uses (:func:`cds.pipeline.pull`),
so training sees what the deployed model will see.  Masks are put in the image's slice
order by SOPInstanceUID and resampled with nearest neighbour on the image's grid.  A
patient whose data cannot be read is left out with a warning; nothing stops the load.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cds.config import Settings
from cds.errors import UsageError
from cds.mapping import MappedPatient
from cds.pipeline import pull
from cds.sources import folder_index_cache
from connectors.errors import ConnectorError
from connectors.fhir.ndjson import NdjsonFolderSource
from connectors.pacs.folder import DicomFolderSource
from connectors.pacs.pixels import resample_mask
from model.types import OUTCOMES, ModelInput

log = logging.getLogger("mprtm.dataset")

CAUSE_COLUMNS = ("cv_death_cause", "macce_cause")


@dataclass
class LabelledExample:
    """One patient for training or evaluation.

    Args:
        model_input: what the model gets (built exactly as at inference).
        labels: outcome -> 0/1 for each of :data:`model.types.OUTCOMES`, plus the cause
            strings ``cv_death_cause`` and ``macce_cause`` ("" when none).
        true_risk: outcome -> true 1-year probability (synthetic cohorts), or None.
        masks: (S, H, W) uint8 segmentation aligned with ``model_input.image`` (0
            background, 1 myocardium, 2 enhancement), or None.
        fibrosis_burden: enhanced / myocardial area, or None.
        warnings: what the mapping dropped for this patient.
    """

    model_input: ModelInput
    labels: dict[str, int | str]
    true_risk: dict[str, float] | None = None
    masks: np.ndarray | None = None
    fibrosis_burden: float | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def patient_id(self) -> str:
        return self.model_input.patient_id


def _read_csv(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8", newline="") as fh:
        return {row["patient_id"]: row for row in csv.DictReader(fh)}


def _labels(row: dict[str, str], path: Path, censored_ok: bool = False) -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    for name in OUTCOMES:
        raw = (row.get(name) or "").strip()
        if raw == "" and censored_ok:
            continue  # censored (mprtm outcomes): no label for this outcome
        if raw not in ("0", "1"):
            raise UsageError(f"{path}: patient {row['patient_id']}: {name} must be 0 or 1")
        out[name] = int(raw)
    for name in CAUSE_COLUMNS:
        out[name] = (row.get(name) or "").strip()
    return out


def _float_or_none(raw: str | None) -> float | None:
    try:
        return float(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def infer_as_of(data_dir: Path, source: NdjsonFolderSource) -> dt.date:
    """``truth/meta.json``'s reference_date, else the day after the last encounter."""
    meta = data_dir / "truth" / "meta.json"
    if meta.is_file():
        try:
            return dt.date.fromisoformat(json.loads(meta.read_text())["reference_date"])
        except (KeyError, ValueError, TypeError) as exc:
            raise UsageError(f"{meta}: no valid reference_date ({exc})") from None
    last: dt.date | None = None
    for pid in source.cohort_patient_ids("all"):
        for enc in source.patient_resources(pid, "Encounter"):
            period = enc.get("period") or {}
            raw = period.get("end") or period.get("start")
            if isinstance(raw, str) and len(raw) >= 10:
                try:
                    day = dt.date.fromisoformat(raw[:10])
                except ValueError:
                    continue
                last = day if last is None or day > last else last
    return (last + dt.timedelta(days=1)) if last else dt.date.today()


def aligned_masks(
    mapped: MappedPatient, masks_dir: Path, image_size: int
) -> tuple[np.ndarray | None, str | None]:
    """The series' masks in the image's slice order and size, or (None, why)."""
    ref = mapped.lge_series
    if ref is None or mapped.model_input.image is None:
        return None, None
    path = masks_dir / f"{ref.series_instance_uid}.npz"
    if not path.is_file():
        return None, None
    with np.load(path, allow_pickle=False) as npz:
        masks = np.asarray(npz["masks"])
        uids = [str(u) for u in npz["sop_instance_uids"]]
    if masks.ndim != 3 or masks.shape[0] != len(uids):
        return None, f"{path.name}: masks {masks.shape} do not match {len(uids)} SOP UIDs"
    index = {u: i for i, u in enumerate(uids)}
    missing = [u for u in mapped.sop_instance_uids if u not in index]
    if missing:
        return None, f"{path.name}: no mask for instance {missing[0]}"
    ordered = masks[[index[u] for u in mapped.sop_instance_uids]]
    return resample_mask(ordered, image_size), None


@dataclass
class _LoadContext:
    """What loading one patient needs; built once per process."""

    root: Path
    labels: dict[str, dict[str, str]]
    risk: dict[str, dict[str, str]]
    fhir: NdjsonFolderSource
    imaging: DicomFolderSource | None
    as_of: dt.date
    image_size: int
    settings: Settings

    labels_path: Path | None = None

    @classmethod
    def open(
        cls,
        root: Path,
        image_size: int,
        with_images: bool,
        settings: Settings,
        labels_file: Path | None = None,
    ) -> _LoadContext:
        labels_path = labels_file or root / "truth" / "labels.csv"
        if not (root / "fhir").is_dir():
            raise UsageError(f"{root}: no fhir/ folder")
        if not labels_path.is_file():
            raise UsageError(f"{root}: no truth/labels.csv" if labels_file is None
                             else f"--labels {labels_path}: no such file")  # fmt: skip
        labels = _read_csv(labels_path)
        risk = _read_csv(root / "truth" / "risk.csv")
        try:
            fhir = NdjsonFolderSource(root / "fhir")
        except ConnectorError as exc:
            raise UsageError(str(exc)) from None
        imaging = None
        if with_images and (root / "dicom").is_dir():
            imaging = DicomFolderSource(
                root / "dicom", index_cache=folder_index_cache(settings, root / "dicom")
            )
        return cls(
            root, labels, risk, fhir, imaging, dt.date.min, image_size, settings, labels_file
        )

    def close(self) -> None:
        self.fhir.close()
        if self.imaging is not None:
            self.imaging.close()

    def load(self, pid: str) -> LabelledExample | None:
        """One patient, or None (with a warning naming the patient) when left out."""
        row = self.labels.get(pid)
        if row is None:
            log.warning("Patient/%s: no row in labels.csv; left out", pid)
            return None
        try:
            mapped = pull(
                pid,
                self.fhir,
                self.imaging,
                as_of=self.as_of,
                image_size=self.image_size,
                settings=self.settings,
            )
        except ConnectorError as exc:
            log.warning("Patient/%s: left out (%s)", pid, exc)
            return None
        masks, why = (None, None)
        if self.imaging is not None:
            masks, why = aligned_masks(mapped, self.root / "truth" / "masks", self.image_size)
        if why:
            mapped.warnings.append(why)
        r = self.risk.get(pid)
        return LabelledExample(
            model_input=mapped.model_input,
            labels=_labels(
                row,
                self.labels_path or self.root / "truth" / "labels.csv",
                censored_ok=self.labels_path is not None,
            ),
            true_risk={o: float(r[o]) for o in OUTCOMES if r.get(o)} if r else None,
            masks=masks,
            fibrosis_burden=_float_or_none(row.get("fibrosis_burden")),
            warnings=mapped.warnings,
        )


#: Patients per task sent to a loader process.
_CHUNK = 64
#: Fewest patients per loader process for the processes to be used at all: each process
#: opens the folder itself (about 12 s for 6,000 patients: the NDJSON line index and the
#: DICOM header index), which only a large cohort amortises (benchmarks/bench_load.py).
_PER_WORKER_MIN = 500
#: The loader process's context (set by :func:`_init_worker`).
_WORKER: _LoadContext | None = None


def _init_worker(
    root: Path,
    image_size: int,
    with_images: bool,
    settings: Settings,
    as_of: dt.date,
    log_level: int,
    labels_file: Path | None = None,
) -> None:
    global _WORKER
    from cds.logs import configure_logging

    configure_logging(logging.getLevelName(log_level))
    _WORKER = _LoadContext.open(root, image_size, with_images, settings, labels_file)
    _WORKER.as_of = as_of


def _load_chunk(ids: list[str]) -> list[LabelledExample | None]:
    assert _WORKER is not None, "loader process not initialised"
    return [_WORKER.load(pid) for pid in ids]


def load_dataset(
    data_dir: str | Path,
    *,
    image_size: int = 64,
    as_of: dt.date | None = None,
    with_images: bool = True,
    settings: Settings | None = None,
    progress: bool = True,
    workers: int = 1,
    labels_file: str | Path | None = None,
) -> list[LabelledExample]:
    """Every labelled patient of ``data_dir`` (see the module docstring).

    Args:
        data_dir: the cohort folder.
        image_size: in-plane side of image and masks.
        as_of: inputs as known on this day (default: ``truth/meta.json`` or the day after
            the last encounter).
        with_images: read DICOM (``DIR/dicom``) and masks; False gives numeric + text only.
        settings: mapping and selection settings (default: built-in defaults); the DICOM
            header index is cached under ``pacs.cache_dir``.
        progress: show a progress bar.
        workers: loader processes.  Parsing FHIR resources and DICOM files is pure
            Python, so threads would not help; with ``workers`` > 1 and at least 500
            patients per process, chunks of patients go to that many processes
            (started with ``spawn``, each opening the folder itself after this process
            has built the DICOM header index once).  The examples come back in the same
            order as with one process.
        labels_file: a labels file in place of ``truth/labels.csv`` (as ``mprtm
            outcomes`` writes it: an empty cell is a censored outcome, left unlabelled);
            only its patients are loaded.  Inputs are still built as of ``as_of``, so a
            folder that also holds the follow-up year leaks nothing into them.

    Raises:
        UsageError: ``fhir/`` or ``truth/labels.csv`` is missing, or a label is not 0/1.
    """
    root = Path(data_dir)
    settings = settings or Settings()
    if workers < 1:
        raise UsageError(f"workers must be >= 1, got {workers}")
    lf = Path(labels_file) if labels_file is not None else None
    ctx = _LoadContext.open(root, image_size, with_images, settings, lf)
    labels = ctx.labels
    out: list[LabelledExample] = []
    try:
        ctx.as_of = as_of or infer_as_of(root, ctx.fhir)
        as_of = ctx.as_of
        ids = ctx.fhir.cohort_patient_ids("all")
        if lf is not None:
            ids = [i for i in ids if i in labels]
        bar = tqdm(total=len(ids), desc="load", unit="patient", disable=not progress)
        if workers > 1 and len(ids) >= workers * _PER_WORKER_MIN:
            if ctx.imaging is not None:
                ctx.imaging.patient_ids()  # scan (and cache) the header index once, here
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            chunks = [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]
            init = (root, image_size, with_images, settings, as_of, log.getEffectiveLevel(), lf)
            with ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=init,
            ) as pool:
                for chunk, loaded in zip(chunks, pool.map(_load_chunk, chunks), strict=True):
                    out.extend(e for e in loaded if e is not None)
                    bar.update(len(chunk))
        else:
            for pid in ids:
                example = ctx.load(pid)
                if example is not None:
                    out.append(example)
                bar.update(1)
        bar.close()
    finally:
        ctx.close()
    log.info(
        "loaded %d of %d patients from %s (as of %s): %d with an LGE image, %d with masks",
        len(out),
        len(labels),
        root,
        as_of,
        sum(e.model_input.image is not None for e in out),
        sum(e.masks is not None for e in out),
    )
    return out
