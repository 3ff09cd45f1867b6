"""Hard augmentation of stage-1 batches: geometry (image and mask together) and intensity.

Geometry: a random affine map (rotation, isotropic scale, shift, horizontal flip) plus
a smooth elastic displacement field, applied to the image with bilinear and to the
labels with nearest-neighbour sampling of the same grid, so image and mask stay
registered.  Intensity (image only): a random monotone intensity curve, gamma, Gaussian
blur, a lower acquired resolution (down- and up-sampling), and Gaussian noise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _rand(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def deformation_grid(
    n: int, size: int, gen: torch.Generator, elastic: float = 0.03
) -> torch.Tensor:
    """Sampling grids (n, size, size, 2) in [-1, 1] of random affine + elastic maps.

    Args:
        n: grids.
        size: side of the images.
        gen: random source.
        elastic: amplitude of the elastic displacement (fraction of the half side).
    """
    ang = _rand(gen, n, -math.pi / 6, math.pi / 6)
    scale = torch.exp(_rand(gen, n, -0.15, 0.15))
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    shift = _rand(gen, 2 * n, -0.08, 0.08).view(n, 2)
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift[:, 0]], 1),
            torch.stack([sin * flip, cos, shift[:, 1]], 1),
        ],
        1,
    )  # (n, 2, 3)
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    coarse = torch.randn(n, 2, 5, 5, generator=gen) * elastic
    disp = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return grid + disp.permute(0, 2, 3, 1)


def warp(x: torch.Tensor, y: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 1, s, s) and labels (n, s, s) resampled on the same grids."""
    xw = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    yw = F.grid_sample(
        y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )[:, 0].long()
    return xw, yw


def intensity(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Random intensity curve, gamma, blur, resolution loss and noise of images (n, 1, s, s)
    with values about [0, 1]; each applied to a sample with probability ``p``."""
    n, _, s, _ = x.shape
    x = x.clamp(0, 1)

    def pick() -> torch.Tensor:
        return (torch.rand(n, generator=gen) < p).view(n, 1, 1, 1)

    # monotone piecewise-linear curve through 5 knots (sorted random levels)
    knots = torch.sort(torch.rand(n, 5, generator=gen), dim=1).values
    knots = 0.5 * knots + 0.5 * torch.linspace(0, 1, 5)  # not too far from identity
    pos = x * 4
    i0 = pos.floor().clamp(0, 3).long()
    frac = pos - i0
    k = knots.view(n, 5, 1, 1).expand(n, 5, s, s)
    lo = torch.gather(k, 1, i0)
    hi = torch.gather(k, 1, (i0 + 1).clamp(max=4))
    curved = lo + frac * (hi - lo)
    x = torch.where(pick(), curved, x)
    gamma = torch.exp(_rand(gen, n, -0.5, 0.5)).view(n, 1, 1, 1)
    x = torch.where(pick(), x.clamp(min=1e-6) ** gamma, x)
    sigma = float(_rand(gen, 1, 0.5, 1.3))
    r = torch.arange(-2, 3, dtype=x.dtype)
    kern = torch.exp(-0.5 * (r / sigma) ** 2)
    kern = kern / kern.sum()
    blurred = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), kern.view(1, 1, 1, 5))
    blurred = F.conv2d(F.pad(blurred, (0, 0, 2, 2), mode="replicate"), kern.view(1, 1, 5, 1))
    x = torch.where(pick(), blurred, x)
    low = max(8, int(s / float(_rand(gen, 1, 1.3, 2.2))))
    coarse = F.interpolate(x, size=(low, low), mode="bilinear", antialias=True, align_corners=False)
    x = torch.where(pick(), F.interpolate(coarse, size=(s, s), mode="bilinear"), x)
    noise = torch.randn(x.shape, generator=gen) * _rand(gen, n, 0.0, 0.06).view(n, 1, 1, 1)
    return torch.where(pick(), x + noise, x)


def augment(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, p: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deform images (n, 1, s, s) and labels (n, s, s) together (probability ``p`` per
    sample), then change the images' intensities."""
    n, _, s, _ = x.shape
    grid = deformation_grid(n, s, gen)
    xw, yw = warp(x, y, grid)
    keep = torch.rand(n, generator=gen) >= p
    xw[keep], yw[keep] = x[keep], y[keep]
    return intensity(xw, gen, p), yw
