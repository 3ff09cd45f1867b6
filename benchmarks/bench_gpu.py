"""GPU inference throughput (bf16 and fp32) against the CPU, and one training step.

For each preset (``small``, ``full``), with a randomly initialised network of the
presets' ensemble of 2 (timing does not depend on the weights' values, and ``--checkpoint``
takes a trained one instead), all measured in one run:

* ``Predictor.predict`` end to end on patients with all three modalities (one forward of
  the image branch per series, the text encoder, the fusion, calibration and the
  per-modality Shapley contributions): patients/s and slices/s on CUDA in bf16, on CUDA
  in fp32 and on the CPU (``--cpu-threads``), and their ratios; and in bf16 with the image
  network run on one series per pass (``image_batch_slices=0``, what it did before
  ``Predictor.encode_images`` batched the series) against the default;
* the DAE-Former forward alone, batched (the slices of ``--batch`` series in one pass):
  slices/s in bf16 and fp32, the ceiling the one-series-at-a-time predictor is set against;
* agreement of bf16 on CUDA with fp32 on the CPU on the same patients: the largest
  difference of a calibrated probability and of the fibrosis burden, and the share of
  pixels given the same label;
* one stage-1 training step (``seg_batch`` slices, forward, backward, AdamW) on CUDA in
  fp32 (the trainer's precision), in bf16 autocast (not what the trainer does), and on
  the CPU.

    python benchmarks/bench_gpu.py [--patients 128] [--text-encoder DIR] [--json FILE]

``--device cpu`` runs the "GPU" lines on the CPU, to try the script on a machine without
CUDA; its numbers mean nothing then.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_inference import _patients, _random_checkpoint  # noqa: E402

from model._seg_train import segmentation_loss  # noqa: E402
from model.image_branch import prepare_volume  # noqa: E402
from model.predictor import Predictor  # noqa: E402
from model.types import OUTCOMES, PatientPrediction  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], repeat: int, device: torch.device, warm: int = 1) -> float:
    """Median seconds of ``repeat`` calls after ``warm`` untimed ones."""
    for _ in range(warm):
        fn()
    _sync(device)
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync(device)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def _agreement(a: list[PatientPrediction], b: list[PatientPrediction]) -> dict[str, float]:
    pairs = list(zip(a, b, strict=True))
    dp = max(abs(x.probabilities[o] - y.probabilities[o]) for x, y in pairs for o in OUTCOMES)
    db = max(abs((x.fibrosis_burden or 0.0) - (y.fibrosis_burden or 0.0)) for x, y in pairs)
    same = total = 0
    for x, y in pairs:
        assert x.image_features is not None and y.image_features is not None
        sx, sy = x.image_features.segmentation, y.image_features.segmentation
        assert sx is not None and sy is not None
        same += int((sx == sy).sum())
        total += sx.size
    return {"max_prob_diff": dp, "max_burden_diff": db, "label_agreement": same / total}


def _train_step(pred: Predictor, device: torch.device, bf16: bool) -> Callable[[], None]:
    """One AdamW step of a copy of the segmenter on ``seg_batch`` random slices."""
    cfg = pred.config
    seg = copy.deepcopy(pred.network.image.segmenter).to(device).float().train()
    opt = torch.optim.AdamW(seg.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    s = cfg.image_size
    x = torch.rand(cfg.seg_batch, 1, s, s, generator=gen).to(device)
    y = torch.randint(0, cfg.num_classes, (cfg.seg_batch, s, s), generator=gen).to(device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = segmentation_loss(seg(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _bench_preset(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    dev = torch.device(args.device)
    ckpt = args.checkpoint or _random_checkpoint(tmp, 2, name, args.text_encoder)
    kw = {"text_encoder_path": args.text_encoder or None, "batch_size": args.batch}
    gpu16 = Predictor.from_checkpoint(ckpt, device=args.device, bf16=True, **kw)
    serial = Predictor.from_checkpoint(  # the image network on one series per pass
        ckpt, device=args.device, bf16=True, image_batch_slices=0, **kw
    )
    gpu32 = Predictor.from_checkpoint(ckpt, device=args.device, bf16=False, **kw)
    cpu = Predictor.from_checkpoint(ckpt, device="cpu", threads=args.cpu_threads, **kw)
    cfg = gpu16.config
    size = cfg.input_size
    pts = _patients(args.patients, args.slices, size, np.random.default_rng(0))
    n_cpu = min(args.cpu_patients, len(pts))
    used = prepare_volume(pts[0].image, cfg.image_size, cfg.max_slices, cfg.crop).shape[0]
    row: dict[str, object] = {
        "preset": cfg.preset,
        "ensemble": cfg.ensemble,
        "series": f"{args.slices}x{size}x{size}",
        "slices_used": used,
        "image_size": cfg.image_size,
        "patients": len(pts),
        "cpu_patients": n_cpu,
    }
    t16 = _time(lambda: gpu16.predict(pts), args.repeat, dev)
    t32 = _time(lambda: gpu32.predict(pts), args.repeat, dev)
    tser = _time(lambda: serial.predict(pts), args.repeat, dev)
    tcpu = _time(lambda: cpu.predict(pts[:n_cpu]), 1, torch.device("cpu"))
    for key, sec, n in (("bf16", t16, len(pts)), ("fp32", t32, len(pts)), ("cpu", tcpu, n_cpu)):
        row[f"predict_{key}_patients_s"] = n / sec
        row[f"predict_{key}_slices_s"] = n * used / sec
    row["image_batch_slices"] = gpu16.image_batch_slices
    row["predict_bf16_per_series_patients_s"] = len(pts) / tser
    row["predict_batched_over_per_series"] = tser / t16
    row["predict_bf16_over_fp32"] = (len(pts) / t16) / (len(pts) / t32)
    row["predict_bf16_over_cpu"] = (len(pts) / t16) / (n_cpu / tcpu)
    row.update(_agreement(gpu16.predict(pts[:n_cpu]), cpu.predict(pts[:n_cpu])))

    x = torch.cat(
        [
            prepare_volume(p.image, cfg.image_size, cfg.max_slices, cfg.crop)
            for p in pts[: args.batch]
            if p.image is not None
        ]
    ).to(dev)
    seg = gpu16.network.image.segmenter

    def bare(bf16: bool) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=bf16):
                seg(x)

        return run

    b16 = _time(bare(dev.type == "cuda"), args.repeat * 3, dev)
    b32 = _time(bare(False), args.repeat * 3, dev)
    row["bare_bf16_slices_s"] = len(x) / b16
    row["bare_fp32_slices_s"] = len(x) / b32
    row["bare_bf16_over_fp32"] = b32 / b16
    row["predict_bf16_over_bare_bf16_slices"] = (
        row["predict_bf16_slices_s"] / row["bare_bf16_slices_s"]
    )  # type: ignore[operator]

    k = args.train_repeat
    if k <= 0:
        return row
    s32 = _time(_train_step(gpu32, dev, False), k, dev, warm=3)
    s16 = _time(_train_step(gpu32, dev, dev.type == "cuda"), k, dev, warm=3)
    scpu = _time(_train_step(cpu, torch.device("cpu"), False), 1, torch.device("cpu"))
    row["train_step_batch"] = cfg.seg_batch
    row["train_step_fp32_ms"] = 1000 * s32
    row["train_step_bf16_ms"] = 1000 * s16
    row["train_step_cpu_ms"] = 1000 * scpu
    row["train_step_cpu_over_fp32"] = scpu / s32
    return row


def _train_line(r: dict[str, object]) -> str:
    if "train_step_fp32_ms" not in r:
        return ""
    return (
        f"\n  stage-1 step ({r['train_step_batch']} slices): fp32 "
        f"{r['train_step_fp32_ms']:.1f} ms, bf16 autocast "
        f"{r['train_step_bf16_ms']:.1f} ms, CPU {r['train_step_cpu_ms']:.0f} ms "
        f"(CPU/fp32 {r['train_step_cpu_over_fp32']:.1f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=None, help="a trained checkpoint")
    ap.add_argument("--presets", default="small,full")
    ap.add_argument("--patients", type=int, default=128)
    ap.add_argument("--cpu-patients", type=int, default=8)
    ap.add_argument("--slices", type=int, default=12)
    ap.add_argument("--batch", type=int, default=64, help="patients per forward pass")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--train-repeat", type=int, default=10, help="timed training steps (0: none)")
    ap.add_argument("--cpu-threads", type=int, default=0, help="0: torch's default")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--text-encoder", default="", help="local BERT folder (default MiniLM)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: CUDA is not available (use --device cpu to try the script)")
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (dry run)"
    print(f"device {name}; torch {torch.__version__}; CPU threads {torch.get_num_threads()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in args.presets.split(","):
            r = _bench_preset(p.strip(), args, Path(tmp))
            rows.append(r)
            print(
                f"[{r['preset']}] series {r['series']} ({r['slices_used']} slices used at "
                f"{r['image_size']} px), ensemble {r['ensemble']}\n"
                f"  predict  bf16 {r['predict_bf16_patients_s']:8.1f} patients/s "
                f"{r['predict_bf16_slices_s']:9.1f} slices/s | fp32 "
                f"{r['predict_fp32_patients_s']:8.1f} patients/s | CPU "
                f"{r['predict_cpu_patients_s']:6.2f} patients/s ({r['cpu_patients']} patients)\n"
                f"           bf16/fp32 {r['predict_bf16_over_fp32']:.2f}   "
                f"bf16/CPU {r['predict_bf16_over_cpu']:.1f}   bf16 with one series per "
                f"image pass {r['predict_bf16_per_series_patients_s']:.1f} patients/s "
                f"(batched, up to {r['image_batch_slices']} slices per pass / per series "
                f"{r['predict_batched_over_per_series']:.2f})\n"
                f"  DAE-Former batched forward: bf16 {r['bare_bf16_slices_s']:9.0f} slices/s, "
                f"fp32 {r['bare_fp32_slices_s']:9.0f} slices/s (bf16/fp32 "
                f"{r['bare_bf16_over_fp32']:.2f}); predictor/bare (bf16 slices/s) "
                f"{r['predict_bf16_over_bare_bf16_slices']:.3f}\n"
                f"  bf16 GPU vs fp32 CPU: max |dp| {r['max_prob_diff']:.4f}, max |d burden| "
                f"{r['max_burden_diff']:.4f}, same label {100 * r['label_agreement']:.2f}% "
                f"of pixels" + _train_line(r),
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps({"device": name, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
