"""Stage-1 augmentation keeps image and mask registered and changes the intensities."""

from __future__ import annotations

import torch

from model._augment import augment, deformation_grid, intensity, warp


def _pair(n: int = 8, s: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Rings of labels 1 and a patch of 2, and an image that is a function of the labels."""
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    y = torch.zeros(n, s, s, dtype=torch.long)
    for i in range(n):
        cy, cx = 16 + i, 20 + 2 * i % 9
        r = torch.hypot((yy - cy).float(), (xx - cx).float())
        y[i][(r > 6) & (r < 10)] = 1
        y[i][(r > 6) & (r < 10) & (xx > cx + 3)] = 2
    x = torch.tensor([0.1, 0.5, 0.9])[y][:, None]
    return x, y


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_deformation_moves_image_and_mask_together() -> None:
    x, y = _pair()
    gen = torch.Generator().manual_seed(1)
    grid = deformation_grid(len(x), x.shape[-1], gen)
    xw, yw = warp(x, y, grid)
    assert xw.shape == x.shape and yw.shape == y.shape and yw.dtype == torch.long
    assert _dice(yw >= 1, y >= 1) < 0.9  # it did move
    # the warped image, read back into labels, is the warped mask
    back = torch.bucketize(xw[:, 0], torch.tensor([0.3, 0.7]))
    for cls in (1, 2):
        assert _dice(back == cls, yw == cls) > 0.9
    # a mask left unwarped would not match the warped image
    assert _dice(back >= 1, y >= 1) < 0.9


def test_full_augmentation_keeps_registration() -> None:
    x, y = _pair()
    gen = torch.Generator().manual_seed(2)
    xa, ya = augment(x, y, gen, p=1.0)
    assert torch.isfinite(xa).all()
    # intensity curves are monotone: the label classes stay ordered in the image
    for i in range(len(x)):
        means = [float(xa[i, 0][ya[i] == c].mean()) for c in (0, 1, 2) if (ya[i] == c).any()]
        assert means == sorted(means), means


def test_intensity_changes_only_intensities_and_is_seeded() -> None:
    x, _ = _pair()
    a = intensity(x, torch.Generator().manual_seed(3), p=1.0)
    b = intensity(x, torch.Generator().manual_seed(3), p=1.0)
    assert torch.equal(a, b) and a.shape == x.shape
    assert (a - x).abs().mean() > 0.01
