"""What a numeric- or image-only baseline's training step costs with and without the text.

Those baselines never see the notes (the text modality is masked), so ``train_mprtm``
gives them one padding segment instead of a patient's 48 text segments, which the network
would still pool (``model/train.py`` ``_without_text``).  This times one phase-B training
step of a numeric-only baseline (batch 128, ``small`` preset, random weights and inputs)
with 48 segments and with 1, and prints the ratio measured in the same run.

    python benchmarks/experiments/baseline_step.py [--threads 1] [--features 60]
"""

from __future__ import annotations

import argparse
import time

import torch

from model._fusion_train import fusion_loss, restrict
from model.config import preset
from model.mprtm import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--features", type=int, default=60)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = tuple(f"f{i}" for i in range(args.features))
    net = build_model(preset("small", numeric_features=names, text_dim=384))
    for p in net.image.parameters():
        p.requires_grad = False
    b = args.batch
    numeric = torch.randn(b, 2 * args.features)
    image = torch.randn(b, net.image.embed_dim + 1)
    present = restrict(torch.ones(b, 3, dtype=torch.bool), 0)  # numeric only
    labels = {
        "y": torch.randint(0, 2, (b, 5)).float(),
        "cause": torch.full((b,), -1),
        "burden": torch.full((b,), float("nan")),
    }
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)

    def step(text: torch.Tensor) -> None:
        loss, _ = fusion_loss(net(numeric, text, image, present), labels, present, 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()

    ms = {}
    for segments in (48, 1):
        text = torch.randn(b, segments, 384)
        for _ in range(3):
            step(text)
        t = time.perf_counter()
        for _ in range(args.steps):
            step(text)
        ms[segments] = 1000 * (time.perf_counter() - t) / args.steps
        print(f"numeric-only baseline step, batch {b}, {segments:2d} text segments: "
              f"{ms[segments]:7.1f} ms")  # fmt: skip
    print(f"ratio 48 / 1 segments: {ms[48] / ms[1]:.2f}")


if __name__ == "__main__":
    main()
