"""Text encoding of real-looking notes: ``TextEncoder.embed`` against batches of texts.

``TextEncoder.embed`` (the inference path of the predictor, the nightly batch and
``mprtm evaluate``) encodes each distinct segment once and in order of length.  The
baseline is what it did before: the encoder's forward over ``--batch`` texts at a time,
every segment of every text encoded, in text order.  Both run in one process on the same
texts: the medication lists and notes of ``--patients`` synthetic patients (``mprtm synth``
without images), with the bundled MiniLM, and give the same embeddings (checked).

    python benchmarks/bench_text.py [--patients 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cds.config import Settings
from cds.dataset import load_dataset
from cds.synth.generate import generate
from model.text_branch import TextEncoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16, help="texts per forward (baseline)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cohort"
        generate(args.patients, 5, root, images=False, progress=False)
        settings = Settings().replace(pacs__cache_dir=str(Path(tmp) / "cache"))
        examples = load_dataset(root, with_images=False, progress=False, settings=settings)
    texts = [e.model_input.text for e in examples if e.model_input.text]
    enc = TextEncoder().eval()
    segments = [enc.segments(t) for t in texts]
    n_seg = sum(len(s) for s in segments)
    n_distinct = len({seg for s in segments for seg in s})

    t0 = time.perf_counter()
    with torch.inference_mode():
        starts = range(0, len(texts), args.batch)
        base = np.concatenate([enc(texts[i : i + args.batch]).float().numpy() for i in starts])
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    new = enc.embed(texts, batch_size=args.batch)
    t_new = time.perf_counter() - t0
    if not np.allclose(base, new, atol=1e-4):
        raise SystemExit("embed() and the batched forward disagree")
    print(
        f"texts={len(texts)} segments={n_seg} distinct={n_distinct} "
        f"threads={args.threads} encoder=MiniLM"
    )
    print(
        f"text  batched forward {1000 * t_base / len(texts):8.2f} ms/patient   "
        f"embed {1000 * t_new / len(texts):8.2f} ms/patient   ratio {t_base / t_new:5.2f}"
    )


if __name__ == "__main__":
    main()
