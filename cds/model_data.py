"""Bridge from a cohort folder (``cds.dataset``) to the model's training examples.

``cds.dataset.load_dataset`` builds every patient exactly as inference does; this
module converts those examples into :class:`model.types.LabelledExample` and picks the
cause classes of the cause head from the labels.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cds.config import Settings
from cds.dataset import LabelledExample as CohortExample
from cds.dataset import load_dataset
from cds.errors import UsageError
from model.types import OUTCOMES, LabelledExample

NO_EVENT = "none"


def cause_of(labels: dict[str, int | str]) -> str:
    """The cause of the first 1-year event: a cardiovascular death's cause when there is
    one, else the MACCE cause, else ``none``."""
    for key in ("cv_death_cause", "macce_cause"):
        value = str(labels.get(key) or "").strip()
        if value:
            return value
    return NO_EVENT


def to_model_examples(examples: Sequence[CohortExample]) -> list[LabelledExample]:
    """Convert cohort examples into the model package's training examples."""
    out = []
    for ex in examples:
        out.append(
            LabelledExample(
                input=ex.model_input,
                labels={o: float(ex.labels[o]) for o in OUTCOMES if o in ex.labels},
                cause=cause_of(ex.labels),
                masks=ex.masks,
                fibrosis_burden=ex.fibrosis_burden,
                oracle_risk=dict(ex.true_risk or {}),
            )
        )
    return out


def cause_classes(examples: Sequence[LabelledExample]) -> tuple[str, ...]:
    """``none`` followed by every other cause seen, sorted."""
    seen = {e.cause for e in examples if e.cause and e.cause != NO_EVENT}
    return (NO_EVENT, *sorted(seen))


def load_model_examples(
    data_dir: str | Path,
    image_size: int,
    settings: Settings,
    progress: bool = True,
    workers: int = 1,
    labels_file: Path | None = None,
    as_of: dt.date | None = None,
) -> list[LabelledExample]:
    """Every labelled patient of ``data_dir`` as model examples (slices ``image_size`` px),
    read by ``workers`` loader processes; labels from ``labels_file`` when given (else
    ``truth/labels.csv``), inputs as of ``as_of`` (see :func:`cds.dataset.load_dataset`)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"--data {root}: no such folder")
    examples = to_model_examples(
        load_dataset(
            root,
            image_size=image_size,
            settings=settings,
            progress=progress,
            workers=workers,
            labels_file=labels_file,
            as_of=as_of,
        )
    )
    if not examples:
        raise UsageError(f"--data {root}: no labelled patient could be loaded")
    return examples


def add_site_label_arguments(parser: Any) -> None:
    """``--labels FILE --as-of DATE`` of train / evaluate / validate / recalibrate."""
    parser.add_argument(
        "--labels",
        type=Path,
        default=None,
        metavar="FILE",
        help="labels file (e.g. from mprtm outcomes) instead of DIR/truth/labels.csv",
    )
    parser.add_argument(
        "--as-of",
        type=_date,
        default=None,
        metavar="YYYY-MM-DD",
        help="index date: every input is built from data dated on or before it (default: "
        "truth/meta.json, else the day after the last encounter)",
    )


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def is_synthetic(data_dir: str | Path) -> bool:
    """A folder with true risks (``truth/risk.csv``) comes from the simulator."""
    return (Path(data_dir) / "truth" / "risk.csv").is_file()


def add_load_workers_argument(parser: Any) -> None:
    """``--load-workers N`` of ``mprtm train`` / ``mprtm evaluate``."""
    parser.add_argument(
        "--load-workers",
        type=int,
        default=0,
        metavar="N",
        help="processes reading the cohort folder (0: --threads if set, else the CPU "
        "count, at most 4)",
    )


def load_workers(requested: int, threads: int) -> int:
    """The loader process count for ``--load-workers requested --threads threads``."""
    if requested < 0:
        raise UsageError("--load-workers must be >= 0")
    if requested:
        return requested
    return threads if threads else max(1, min(4, os.cpu_count() or 1))
