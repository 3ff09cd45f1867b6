"""How the image quality gate judges series it should pass and series it should refuse.

    python benchmarks/image_quality_gate.py --checkpoint CKPT --data COHORT [--threads 1]

Prints, for the cohort's test split (patients in neither the checkpoint's training nor its
validation split): the share of LGE series judged usable, the reasons of the others, the
quantiles of every signal, and the fibrosis burden error against the simulator's truth.
Then the verdicts on series that must be refused: uniform and smoothed noise, pydicom's
bundled MR test images (a small spin-echo image and an abdominal gradient-echo image), the
real cine slices of the shipped Sunnybrook subset (one series per patient) and
every non-LGE series of the cohort (cine, localizer), read as the pipeline reads them.
Last, the cost of the gate: the image network's time per series with and without the
mirrored second pass (``image_flip_check``), and of the signals alone, as ratios measured in
this run.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cds.config import load_settings  # noqa: E402
from cds.image_gate import quality_rules  # noqa: E402
from cds.model_data import load_model_examples  # noqa: E402
from connectors.pacs.folder import DicomFolderSource  # noqa: E402
from connectors.pacs.pixels import series_volume  # noqa: E402
from connectors.pacs.series import order_slices  # noqa: E402
from model.predictor import Predictor  # noqa: E402


def _pydicom_volumes(size: int) -> dict[str, tuple[np.ndarray, float | None]]:
    import pydicom
    from pydicom.data import get_testdata_file

    out = {}
    for name in ("MR_small.dcm", "examples_overlay.dcm"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = get_testdata_file(name)
        if path is None:
            continue
        ds = pydicom.dcmread(path)
        vol = series_volume([ds], size)
        out[f"pydicom {name}"] = (vol.image, vol.pixel_spacing_mm)
    return out


def _noise(size: int, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, float | None]]:
    white = rng.uniform(0, 1, (8, size, size)).astype(np.float32)
    smooth = gaussian_filter(rng.normal(size=(8, size, size)), (0, 3, 3))
    smooth = ((smooth - smooth.min()) / np.ptp(smooth)).astype(np.float32)
    return {"uniform noise": (white, 2.0), "smoothed noise": (smooth, 2.0)}


def _sunnybrook(size: int) -> dict[str, tuple[np.ndarray, float | None]]:
    """Each patient of the shipped Sunnybrook subset (real cine, end-diastolic slices)."""
    from cds.realdata.sunnybrook import load_sunnybrook

    data = load_sunnybrook(size)
    out = {}
    for pid in dict.fromkeys(data.patients):
        rows = [k for k, p in enumerate(data.patients) if p == pid]
        out[f"Sunnybrook cine {pid}"] = (data.images[rows], float(data.spacing_mm[rows[0]]))
    return out


def _other_series(data: Path, size: int, limit: int) -> dict[str, tuple[np.ndarray, float | None]]:
    """The cohort's non-LGE series (cine, localizer) as the pipeline would read them."""
    src = DicomFolderSource(data / "dicom")
    out: dict[str, tuple[np.ndarray, float | None]] = {}
    try:
        for pid in src.patient_ids():
            for ref in src.find_series(pid, modality="MR"):
                kind = (ref.protocol_name or "").lower()
                if "cine" not in kind and "loc" not in kind:
                    continue
                ordered, _ = order_slices(src.retrieve_series(ref))
                vol = series_volume(ordered, size)
                out[f"{ref.series_description} ({pid})"] = (vol.image, vol.pixel_spacing_mm)
                if len(out) >= limit:
                    return out
    finally:
        src.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True, help="a synthetic cohort folder (mprtm synth)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--other-series", type=int, default=20, help="non-LGE series to try")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = load_settings(environ={})
    pred = Predictor.from_checkpoint(
        args.checkpoint, attribution=False, quality_rules=quality_rules(settings)
    )
    size = pred.config.input_size
    seen = set(pred.checkpoint.split.get("train", [])) | set(pred.checkpoint.split.get("val", []))
    examples = [
        e
        for e in load_model_examples(args.data, size, settings, progress=False)
        if e.input.patient_id not in seen and e.input.image is not None
    ]
    verdicts = []
    errors = []
    for e in examples:
        f = pred.encode_image(e.input.image, e.input.image_spacing_mm)
        verdicts.append(f)
        if e.fibrosis_burden is not None:
            errors.append(abs(f.fibrosis_burden - e.fibrosis_burden))
    n_ok = sum(f.usable for f in verdicts)
    print(f"test split: {n_ok} of {len(verdicts)} LGE series usable ({n_ok / len(verdicts):.1%})")
    reasons = collections.Counter(f.quality_reason for f in verdicts if not f.usable)
    for why, k in reasons.most_common():
        print(f"  {k:4d}  {why}")
    if errors:
        print(f"fibrosis burden |error| vs truth: mean {np.mean(errors):.4f}")
    keys = sorted({k for f in verdicts for k in f.quality_signals})
    print("signal quantiles (1%, 5%, 50%, 95%, 99%):")
    for k in keys:
        vals = np.array([f.quality_signals[k] for f in verdicts if k in f.quality_signals])
        qs = np.quantile(vals, [0.01, 0.05, 0.5, 0.95, 0.99])
        print(f"  {k:26s} " + " ".join(f"{q:8.3f}" for q in qs))
    print(f"quality 1%/5%/50%: {np.quantile([f.quality for f in verdicts], [0.01, 0.05, 0.5])}")
    print("\nseries that must be refused:")
    rng = np.random.default_rng(0)
    refuse = {
        **_noise(size, rng),
        **_pydicom_volumes(size),
        **_sunnybrook(size),
        **_other_series(Path(args.data), size, args.other_series),
    }
    n_refused = 0
    for name, (vol, spacing) in refuse.items():
        f = pred.encode_image(vol, spacing)
        n_refused += not f.usable
        verdict = "usable" if f.usable else f"refused: {f.quality_reason}"
        print(f"  {name:40s} quality {f.quality:.2f}  {verdict}")
    print(f"refused {n_refused} of {len(refuse)}")
    _timing(pred, [(e.input.image, e.input.image_spacing_mm) for e in examples[:40]])
    return 0


def _timing(pred: Predictor, series: list[tuple[np.ndarray, float | None]]) -> None:
    """Seconds per series of encode_image: the gate as configured, without the mirrored
    pass, and with no signal at all (the bare network plus pooling)."""
    from model.image_quality import ImageQuality

    def run() -> float:
        t0 = time.perf_counter()
        for vol, spacing in series:
            pred.encode_image(vol, spacing)
        return (time.perf_counter() - t0) / len(series)

    import model.predictor as predictor_module

    rules = pred.quality_rules
    run()  # warm-up
    with_flip = run()
    pred.quality_rules = dataclasses.replace(rules, flip=False)
    no_flip = run()
    real_assess = predictor_module.assess
    predictor_module.assess = lambda *a, **k: ImageQuality(1.0, True)  # type: ignore[assignment]
    try:
        bare = run()
    finally:
        predictor_module.assess = real_assess
        pred.quality_rules = rules
    print(
        f"\nencode_image per series ({len(series)} series): gate with flip "
        f"{1000 * with_flip:.1f} ms, without flip {1000 * no_flip:.1f} ms, no gate "
        f"{1000 * bare:.1f} ms; ratios with flip / no gate {with_flip / bare:.2f}, "
        f"without flip / no gate {no_flip / bare:.2f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
