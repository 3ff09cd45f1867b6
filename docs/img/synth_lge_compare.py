# ruff: noqa: T201
"""Draws docs/img/synth-lge-old-new.png: LGE series of two cohort folders side by side.

    python docs/img/synth_lge_compare.py OLD_COHORT NEW_COHORT [--patients 4]

Each row is one patient of each cohort: three slices (base, mid, apical) of its LGE
series as stored in DICOM (window from the file), then the same mid slice with the truth
mask drawn over it (myocardium green, enhancement red).  The old cohort in the docs was
written by the simulator before the anatomical rewrite (commit d1ee812,
``mprtm synth --patients 40 --seed 3``), the new one by the current simulator with the
same command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw

TILE = 128


def _series(root: Path, uid: str) -> tuple[np.ndarray, np.ndarray]:
    files = sorted((root / "dicom").glob(f"*/{uid}/*.dcm"))
    dss = [pydicom.dcmread(f) for f in files]
    with np.load(root / "truth" / "masks" / f"{uid}.npz") as z:
        masks, sops = z["masks"], [str(s) for s in z["sop_instance_uids"]]
    order = [sops.index(str(d.SOPInstanceUID)) for d in dss]
    px = np.stack([d.pixel_array.astype(np.float32) for d in dss])
    centre, width = float(dss[0].WindowCenter), float(dss[0].WindowWidth)
    slope, icpt = float(dss[0].RescaleSlope), float(dss[0].RescaleIntercept)
    img = np.clip((px * slope + icpt - (centre - width / 2)) / width, 0, 1)
    return img, masks[order]


def _tile(a: np.ndarray) -> np.ndarray:
    im = Image.fromarray((a * 255).astype(np.uint8)).resize((TILE, TILE), Image.BILINEAR)
    return np.asarray(im.convert("RGB"))


def _overlay(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    rgb = _tile(a).astype(np.float32)
    mm = np.asarray(Image.fromarray(m).resize((TILE, TILE), Image.NEAREST))
    for label, colour in ((1, (0, 200, 0)), (2, (230, 30, 30))):
        sel = mm == label
        rgb[sel] = 0.45 * rgb[sel] + 0.55 * np.array(colour)
    return rgb.astype(np.uint8)


def _rows(root: Path, n: int) -> list[np.ndarray]:
    rows = []
    for path in sorted((root / "truth" / "masks").glob("*.npz")):
        img, masks = _series(root, path.stem)
        if (masks == 2).sum() == 0:
            continue
        s = masks.shape[0]
        picks = [1, s // 2, min(s - 2, (3 * s) // 4)]
        tiles = [_tile(img[k]) for k in picks] + [_overlay(img[s // 2], masks[s // 2])]
        rows.append(np.concatenate(tiles, axis=1))
        if len(rows) == n:
            break
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--patients", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("synth-lge-old-new.png"))
    args = ap.parse_args()
    old, new = _rows(args.old, args.patients), _rows(args.new, args.patients)
    gap = np.full((TILE * len(old), 12, 3), 255, np.uint8)
    body = np.concatenate([np.concatenate(old), gap, np.concatenate(new)], axis=1)
    head = Image.new("RGB", (body.shape[1], 26), "white")
    d = ImageDraw.Draw(head)
    d.text((8, 7), "previous simulator: base, mid, apex, mid + mask", fill="black")
    d.text((4 * TILE + 20, 7), "anatomical simulator: base, mid, apex, mid + mask", fill="black")
    out = np.concatenate([np.asarray(head), body])
    Image.fromarray(out).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
