"""Per-patient CPU inference time of the Predictor against a bare forward pass.

Two paths are timed in one run:

* numeric + text: ``Predictor.predict`` on patients without images, against the bare
  forward of the text encoder plus the fusion network on pre-assembled tensors;
* image: ``Predictor.encode_image`` on one LGE series, against the bare forward of the
  image branch on an already prepared (resized) tensor.

The ratio says how much the Predictor adds (validation, tokenisation bookkeeping,
resizing, calibration, the per-modality Shapley contributions, building the result
objects) on top of the network itself.  A third line times the numeric + text path with
and without the contributions (``Predictor(attribution=False)``): their cost alone.
Without ``--checkpoint``, a fourth line times a stage-2 ensemble of ``--ensemble``
networks (default 2, what the presets train) against a single network.

    python benchmarks/bench_inference.py [--checkpoint CKPT] [--patients 64] [--threads 2]

Without ``--checkpoint`` a randomly initialised ``small`` network with the bundled
MiniLM text encoder and a random attribution background of
``cfg.attribution_background`` patients is used (timing does not depend on the
weights' values).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from model._batch import assemble
from model.calibration import TIER_QUANTILES
from model.checkpoint import Checkpoint, save_checkpoint
from model.config import preset
from model.image_branch import prepare_volume
from model.mprtm import build_network
from model.numeric_branch import FeatureSchema
from model.predictor import Predictor
from model.text_branch import TextEncoder
from model.types import OUTCOMES, ModelInput

FEATURES = ("age", "sex_male", "lvef", "nt_probnp", "sbp", "creatinine", "sodium", "hemoglobin")
NOTE = (
    "Follow-up visit. Patient reports worsening breathlessness on exertion, sleeps on two "
    "pillows, ankle swelling in the evenings. Medications: furosemide 40 mg daily, "
    "bisoprolol 5 mg daily, sacubitril/valsartan 49/51 mg twice daily, spironolactone 25 mg "
    "daily, dapagliflozin 10 mg daily. Lives alone; daughter visits weekly. "
)


def _note(i: int, rng: np.random.Generator) -> str:
    """Three visits' notes of one patient, every sentence distinct from every other
    patient's (a dated, numbered sentence), so that the predictor's encoding of each
    distinct segment once gains nothing here: the worst case for it."""
    sentences = [s.strip() for s in NOTE.split(". ") if s.strip()]
    return " ".join(
        f"Visit {v} of patient {i}, weight {rng.normal(80, 10):.1f} kg: {s.rstrip('.')}."
        for v in range(3)
        for s in sentences
    )


def _patients(n: int, slices: int, size: int, rng: np.random.Generator) -> list[ModelInput]:
    out = []
    for i in range(n):
        numeric = {f: float(rng.normal(50, 10)) for f in FEATURES}
        image = rng.random((slices, size, size), dtype=np.float32)
        out.append(ModelInput(f"bench-{i}", numeric, _note(i, rng), image, f"fp-{i}"))
    return out


def _random_checkpoint(
    folder: Path, ensemble: int = 1, name: str = "small", text_encoder: str = ""
) -> Path:
    """A randomly initialised checkpoint of preset ``name`` (``text_encoder``: a local
    BERT folder, default the bundled MiniLM)."""
    enc = TextEncoder(text_encoder)
    rows = [{f: float(v) for f, v in zip(FEATURES, r, strict=True)} for r in np.eye(8) + 1]
    schema = FeatureSchema.fit(rows)
    cfg = preset(
        name,
        numeric_features=schema.names,
        text_dim=enc.hidden_size,
        ensemble=ensemble,
        text_encoder=text_encoder,
    )
    torch.manual_seed(0)
    net = build_network(cfg)
    b = cfg.attribution_background
    ck = Checkpoint(
        config=cfg,
        state_dict=net.state_dict(),
        schema=schema,
        text_encoder=enc.identity(),
        thresholds={o: TIER_QUANTILES for o in OUTCOMES},
        background={
            "numeric": torch.randn(b, 2 * len(schema.names)),
            "text": torch.randn(b, cfg.text_max_segments, enc.hidden_size),
            "image": torch.randn(b, net.image.embed_dim + 1),
        },
    )
    return save_checkpoint(ck, folder / f"random-{name}-{ensemble}.pt")


def _time(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--patients", type=int, default=64)
    ap.add_argument("--slices", type=int, default=10)
    ap.add_argument("--size", type=int, default=64, help="in-plane size of the series")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ensemble", type=int, default=2, help="members of the ensemble line")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or _random_checkpoint(Path(tmp))
        pred = Predictor.from_checkpoint(ckpt, threads=args.threads, batch_size=32)
        plain = Predictor.from_checkpoint(
            ckpt, threads=args.threads, batch_size=32, attribution=False
        )
        many = None
        if args.checkpoint is None and args.ensemble > 1:
            many = Predictor.from_checkpoint(
                _random_checkpoint(Path(tmp), args.ensemble), threads=args.threads, batch_size=32
            )
    rng = np.random.default_rng(0)
    pts = _patients(args.patients, args.slices, args.size, rng)
    no_image = [ModelInput(p.patient_id, p.numeric, p.text) for p in pts]
    n = len(no_image)

    t_pred = _time(lambda: pred.predict(no_image), args.repeat)
    t_plain = _time(lambda: plain.predict(no_image), args.repeat)
    t_many = _time(lambda: many.predict(no_image), args.repeat) if many is not None else None
    net, enc = pred.network, pred.text_encoder

    def bare_nt() -> None:
        with torch.inference_mode():
            for s in range(0, n, pred.batch_size):
                part = no_image[s : s + pred.batch_size]
                text = enc([p.text or "" for p in part])
                t = assemble(
                    part,
                    pred.schema,
                    text.numpy(),
                    np.ones(len(part), dtype=bool),
                    np.zeros((len(part), net.image.embed_dim + 1), dtype=np.float32),
                    np.zeros(len(part), dtype=bool),
                )
                net(t["numeric"], t["text"], t["image"], t["present"])

    t_bare = _time(bare_nt, args.repeat)
    vol = pts[0].image
    assert vol is not None
    x = prepare_volume(vol, pred.config.image_size, pred.config.max_slices, pred.config.crop)
    t_img = _time(lambda: pred.encode_image(vol), args.repeat * 3)

    def bare_img() -> None:
        with torch.inference_mode():
            net.image.forward_features(x)

    t_img_bare = _time(bare_img, args.repeat * 3)
    print(
        f"threads={args.threads} patients={n} preset={pred.config.preset} "
        f"series={args.slices}x{args.size}x{args.size} (used {x.shape[0]} slices, "
        f"{pred.config.image_size} px)"
    )
    print(
        f"numeric+text  predictor {1000 * t_pred / n:8.2f} ms/patient   "
        f"bare forward {1000 * t_bare / n:8.2f} ms/patient   ratio {t_pred / t_bare:5.2f}"
    )
    print(
        f"numeric+text  without contributions {1000 * t_plain / n:8.2f} ms/patient   "
        f"with/without ratio {t_pred / t_plain:5.2f}"
    )
    if t_many is not None:
        print(
            f"numeric+text  ensemble of {args.ensemble} {1000 * t_many / n:8.2f} ms/patient   "
            f"ensemble/single ratio {t_many / t_pred:5.2f}"
        )
    print(
        f"image         predictor {1000 * t_img:8.2f} ms/series    "
        f"bare forward {1000 * t_img_bare:8.2f} ms/series    ratio {t_img / t_img_bare:5.2f}"
    )


if __name__ == "__main__":
    main()
