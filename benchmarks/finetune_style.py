"""Site fine-tuning on a new "vendor" contrast: Dice before and after, measured in one run.

From a synthetic cohort (``mprtm synth``) this script makes a site whose LGE series have a
deliberately different style (``--style vendor``: intensities inverted, so the nulled
myocardium is bright and blood and scar are dark, then a gamma curve, a coil-like bias
field and more noise), gives the first ``--train-series`` of them with their truth masks
as DICOM SEG (written with highdicom), runs ``mprtm train-segmentation`` from
``--checkpoint`` and measures Dice of myocardium and enhancement on the remaining styled
series (never seen in fine-tuning) for the base and the fine-tuned checkpoint, through
the batch's series path and ``Predictor.encode_image`` on every slice (the masks ``mprtm
segment`` writes).
Dice is pooled over series (sum of overlaps over sum of areas); the 95% interval of the
difference comes from a paired bootstrap over the test series.  The original-style test
series are scored too (what the fine-tuning costs on the old style).

    python benchmarks/finetune_style.py --cohort COHORT --checkpoint BASE.pt --work DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pydicom

from cds.cli import main as mprtm
from cds.pipeline import load_series
from cds.segio import write_seg
from cds.segment import segment_all_slices
from cds.site_masks import mr_series
from connectors.pacs.folder import DicomFolderSource
from connectors.pacs.pixels import resample_mask
from model.predictor import Predictor

STYLES = ("vendor", "none")


def vendor_style(stored: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One slice's stored values (uint16, 12 bits) in the "vendor" style.

    Robustly scaled to [0, 1], inverted, gamma 0.6, multiplied by a smooth horizontal
    bias ramp (0.75..1.25), Gaussian noise (sd 0.05), back to 12-bit stored values.
    """
    x = stored.astype(np.float64)
    lo, hi = np.percentile(x, [1, 99])
    x = np.clip((x - lo) / max(hi - lo, 1e-9), 0, 1)
    x = (1.0 - x) ** 0.6
    ramp = np.linspace(0.75, 1.25, x.shape[1])[None, :]
    x = x * ramp + rng.normal(0.0, 0.05, x.shape)
    return np.clip(x * 3000.0 + 200.0, 0, 4095).astype(np.uint16)


def _restyle(ds: pydicom.Dataset, style: str, rng: np.random.Generator) -> None:
    if style == "none":
        return
    ds.PixelData = vendor_style(ds.pixel_array, rng).tobytes()


def build_site(
    cohort: Path, work: Path, n_train: int, style: str, seed: int
) -> dict[str, list[str]]:
    """Styled copies of the cohort's LGE series under ``work/site`` (the first ``n_train``,
    with SEG masks in ``work/masks``) and ``work/test`` (the rest); unstyled test copies in
    ``work/test_orig``.  Returns the series UIDs of each part."""
    source = DicomFolderSource(cohort / "dicom")
    refs = {
        u: r
        for u, r in mr_series(source).items()
        if (cohort / "truth" / "masks" / f"{u}.npz").is_file()
    }
    uids = sorted(refs)
    rng = np.random.default_rng(seed)
    parts = {"site": uids[:n_train], "test": uids[n_train:]}
    for sub in ("site", "masks", "test", "test_orig"):
        shutil.rmtree(work / sub, ignore_errors=True)
        (work / sub).mkdir(parents=True)
    for part, chosen in parts.items():
        for uid in chosen:
            ordered = load_series(source.retrieve_series(refs[uid]), 16).ordered
            if part == "test":
                (work / "test_orig" / uid).mkdir()
                for k, ds in enumerate(ordered):
                    ds.save_as(work / "test_orig" / uid / f"{k:03d}.dcm")
            (work / part / uid).mkdir()
            for k, ds in enumerate(ordered):
                _restyle(ds, style, rng)
                ds.save_as(work / part / uid / f"{k:03d}.dcm")
            if part == "site":
                write_seg(ordered, _truth(cohort, uid, ordered), work / "masks" / f"{uid}.dcm")
    return parts


def _truth(cohort: Path, uid: str, ordered: list[pydicom.Dataset]) -> np.ndarray:
    with np.load(cohort / "truth" / "masks" / f"{uid}.npz") as z:
        index = {str(u): i for i, u in enumerate(z["sop_instance_uids"])}
        return np.asarray(z["masks"])[[index[str(ds.SOPInstanceUID)] for ds in ordered]]


def overlaps(predictor: Predictor, folder: Path, cohort: Path) -> np.ndarray:
    """Per series (rows): myocardium overlap, myocardium areas, enhancement overlap,
    enhancement areas (pred + truth), on the model grid; and 1 when the quality gate
    (default thresholds) finds the series usable."""
    size = predictor.config.input_size
    rows = []
    for series in sorted(p for p in folder.iterdir() if p.is_dir()):
        datasets = [pydicom.dcmread(f) for f in sorted(series.glob("*.dcm"))]
        loaded = load_series(datasets, size)
        truth = resample_mask(_truth(cohort, series.name, loaded.ordered), size)
        pred = segment_all_slices(predictor, loaded.volume.image, loaded.volume.pixel_spacing_mm)
        usable = predictor.encode_image(loaded.volume.image, loaded.volume.pixel_spacing_mm).usable
        row = []
        for cls in (lambda a: a >= 1, lambda a: a == 2):
            p, t = cls(pred), cls(truth)
            row += [float((p & t).sum()), float(p.sum() + t.sum())]
        rows.append([*row, float(usable)])
    return np.asarray(rows)


def pooled(o: np.ndarray) -> tuple[float, float]:
    """Pooled Dice of myocardium and enhancement."""
    tot = o.sum(0)
    return 2 * tot[0] / max(tot[1], 1), 2 * tot[2] / max(tot[3], 1)


def paired_ci(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """95% bootstrap intervals of pooled Dice (b - a), resampling series: (2, 2)."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        i = rng.integers(0, len(a), len(a))
        diffs.append(np.subtract(pooled(b[i]), pooled(a[i])))
    return np.percentile(np.asarray(diffs), [2.5, 97.5], axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", required=True, type=Path, help="mprtm synth folder")
    ap.add_argument("--checkpoint", required=True, type=Path, help="base checkpoint")
    ap.add_argument("--work", required=True, type=Path, help="scratch folder")
    ap.add_argument("--style", choices=STYLES, default="vendor")
    ap.add_argument("--train-series", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    parts = build_site(args.cohort, args.work, args.train_series, args.style, args.seed)
    print(f"site: {len(parts['site'])} styled series with DICOM SEG; test: {len(parts['test'])}")
    tuned = args.work / "finetuned.pt"
    cmd = ["train-segmentation", "--series", str(args.work / "site"), "--masks"]
    cmd += [str(args.work / "masks"), "--init", str(args.checkpoint), "--out", str(tuned)]
    cmd += ["--epochs", str(args.epochs), "--threads", str(args.threads), "--quiet"]
    cmd += ["--seed", str(args.seed)] + (["--lr", str(args.lr)] if args.lr else [])
    t0 = time.perf_counter()
    if mprtm(cmd) != 0:
        raise SystemExit("train-segmentation failed")
    seconds = time.perf_counter() - t0
    result: dict[str, object] = {"fine_tune_seconds": round(seconds, 1)}
    scores = {}
    for name, ckpt in (("base", args.checkpoint), ("finetuned", tuned)):
        pred = Predictor.from_checkpoint(ckpt, threads=args.threads, attribution=False)
        for test in ("test", "test_orig"):
            scores[(name, test)] = overlaps(pred, args.work / test, args.cohort)
    print(f"fine-tuning took {seconds:.0f} s; pooled Dice on held-out series (n per row):")
    print(f"{'test series':<22}{'model':<11}{'myocardium':>11}{'enhancement':>13}{'usable':>9}")
    for test, label in (("test", f"{args.style} style"), ("test_orig", "original style")):
        for name in ("base", "finetuned"):
            myo, enh = pooled(scores[(name, test)])
            usable = float(scores[(name, test)][:, 4].mean())
            result[f"{test}_{name}"] = {
                "dice_myocardium": myo,
                "dice_enhancement": enh,
                "usable_fraction": usable,
            }
            print(f"{label:<22}{name:<11}{myo:>11.3f}{enh:>13.3f}{usable:>9.0%}")
        ci = paired_ci(scores[("base", test)], scores[("finetuned", test)], args.boot, args.seed)
        d = np.subtract(pooled(scores[("finetuned", test)]), pooled(scores[("base", test)]))
        result[f"{test}_difference"] = {
            "myocardium": [float(d[0]), *map(float, ci[:, 0])],
            "enhancement": [float(d[1]), *map(float, ci[:, 1])],
        }
        print(
            f"{label:<22}{'difference':<11}{d[0]:>+11.3f}{d[1]:>+13.3f}   95% CI myocardium "
            f"[{ci[0, 0]:+.3f}, {ci[1, 0]:+.3f}], enhancement [{ci[0, 1]:+.3f}, {ci[1, 1]:+.3f}]"
            f" (n={len(scores[('base', test)])})"
        )
    (args.work / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
