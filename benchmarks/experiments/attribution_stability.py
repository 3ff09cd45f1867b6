"""How much two trainings agree on *why* a patient's risk is what it is.

Reads the ``attribution.csv`` of two ``mprtm evaluate`` reports (e.g. the same cohort
trained with seeds 0 and 1) and, on the test patients they share, compares per patient:

* the fusion's attention weights of each modality;
* each modality's Shapley contribution to one outcome's probability
  (``model/attribution.py``).

Prints, per modality, the Pearson correlation between the two trainings and the mean
absolute difference, for both.  Explanations a clinician is shown should agree between
two equally good trainings; this measures whether they do.

    python benchmarks/experiments/attribution_stability.py REPORT_A REPORT_B [--outcome death]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

MODALITIES = ("numeric", "text", "image")


def _read(report: Path) -> dict[str, dict[str, float]]:
    with (report / "attribution.csv").open(encoding="utf-8") as fh:
        return {
            row["patient_id"]: {k: float(v) for k, v in row.items() if k != "patient_id"}
            for row in csv.DictReader(fh)
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report_a", type=Path)
    ap.add_argument("report_b", type=Path)
    ap.add_argument("--outcome", default="death")
    args = ap.parse_args()
    a, b = _read(args.report_a), _read(args.report_b)
    common = sorted(set(a) & set(b))
    if len(common) < 10:
        raise SystemExit(f"only {len(common)} shared test patients; need at least 10")
    print(f"shared test patients: {len(common)}; outcome: {args.outcome}")
    print(
        f"{'modality':10s} {'weights r':>10s} {'|diff|':>8s} {'contrib r':>10s} {'|diff| pts':>11s}"
    )
    for m in MODALITIES:
        wa = np.array([a[p][f"weight_{m}"] for p in common])
        wb = np.array([b[p][f"weight_{m}"] for p in common])
        ca = np.array([a[p][f"{args.outcome}_{m}"] for p in common])
        cb = np.array([b[p][f"{args.outcome}_{m}"] for p in common])
        rw = float(np.corrcoef(wa, wb)[0, 1]) if wa.std() and wb.std() else float("nan")
        rc = float(np.corrcoef(ca, cb)[0, 1]) if ca.std() and cb.std() else float("nan")
        print(
            f"{m:10s} {rw:10.3f} {np.abs(wa - wb).mean():8.3f} {rc:10.3f} "
            f"{100 * np.abs(ca - cb).mean():11.2f}"
        )
    key = f"{args.outcome}_reference"
    if key in a[common[0]] and key in b[common[0]]:  # reports of format-5 checkpoints
        ra = np.array([a[p][key] for p in common])
        rb = np.array([b[p][key] for p in common])
        print(f"mean reference risk: {100 * ra.mean():.1f}% / {100 * rb.mean():.1f}%")


if __name__ == "__main__":
    main()
