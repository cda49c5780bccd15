"""Classical, deterministic image inpainting: multi-scale push-pull with harmonic relaxation.

No learned weights. The known pixels are Dirichlet data; unknown pixels get a smooth (approximately harmonic)
interpolation of them, solved coarse to fine: a mask-weighted image pyramid is pushed down, then pulled back up,
and at every level the unknown pixels are relaxed with a few Jacobi iterations of the Laplace equation, starting
from the upsampled coarser solution (a cheap multigrid cycle). Known pixels are never changed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: Jacobi iterations of the Laplace equation per pyramid level (coarse levels) and at full resolution.
LEVEL_ITERS = 16
FINE_ITERS = 64


def _down(values: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask-weighted 2×2 average: (B, C, H, W) values and (B, 1, H, W) weights -> half size (ceil)."""
    wsum = F.avg_pool2d(weight, 2, 2, ceil_mode=True)
    vsum = F.avg_pool2d(values * weight, 2, 2, ceil_mode=True)
    return torch.where(wsum > 0, vsum / wsum.clamp_min(1e-12), torch.zeros_like(vsum)), wsum


def _relax(values: torch.Tensor, unknown: torch.Tensor, iters: int) -> torch.Tensor:
    """Jacobi iterations of ∇²u = 0 on ``unknown`` pixels (4-neighbour mean, Neumann image borders)."""
    if iters <= 0 or not bool(unknown.any()):
        return values
    for _ in range(iters):
        p = F.pad(values, (1, 1, 1, 1), mode="replicate")
        mean = 0.25 * (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:])
        values = torch.where(unknown, mean, values)
    return values


def inpaint_float(values: torch.Tensor, known: torch.Tensor, level_iters: int = LEVEL_ITERS,
                  fine_iters: int = FINE_ITERS) -> torch.Tensor:
    """Inpaint float images.

    Args:
        values: (B, C, H, W) float images (any range; unknown entries are ignored).
        known: (B, H, W) bool, True = keep.
        level_iters, fine_iters: Jacobi iterations per coarse level / at full resolution.

    Returns:
        (B, C, H, W) float, equal to ``values`` on known pixels. A frame without any known pixel is all 0.
    """
    weight = known[:, None].to(values.dtype)
    values = torch.where(weight > 0, values, torch.zeros_like(values))
    pyramid = [(values, weight)]
    while min(pyramid[-1][0].shape[-2:]) > 1:
        pyramid.append(_down(*pyramid[-1]))
    # Coarsest level: what is known there stays; the rest (only where a frame has nothing known) is 0.
    result = pyramid[-1][0]
    for level in range(len(pyramid) - 2, -1, -1):
        vals, w = pyramid[level]
        up = F.interpolate(result, size=vals.shape[-2:], mode="bilinear", align_corners=False)
        unknown = w <= 0
        result = torch.where(unknown, up, vals)
        result = _relax(result, unknown, fine_iters if level == 0 else level_iters)
    return result


def inpaint(color: np.ndarray, known: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """Fill the unknown pixels of each frame from its known ones (push-pull + Laplace relaxation).

    Args:
        color: (T, H, W, 3) uint8 (or (H, W, 3)).
        known: (T, H, W) bool (or (H, W)), True = keep as is; False = to fill.
        device: torch device to compute on.

    Returns:
        (T, H, W, 3) uint8 (same shape as ``color``); identical to ``color`` where ``known``. Unknown pixels are
        convex combinations of known ones (so within their range). A frame with no known pixel comes back black.
    """
    color = np.asarray(color)
    known = np.asarray(known, bool)
    single = color.ndim == 3
    if single:
        color, known = color[None], known[None]
    if color.ndim != 4 or color.shape[-1] != 3 or known.shape != color.shape[:3]:
        raise ValueError(f"color must be (T, H, W, 3) and known (T, H, W); got {color.shape} and {known.shape}")
    out = color.copy()
    if not known.all():
        dev = torch.device(device)
        c = torch.from_numpy(np.ascontiguousarray(color)).to(dev).permute(0, 3, 1, 2).to(torch.float32)
        k = torch.from_numpy(known).to(dev)
        filled = inpaint_float(c, k).permute(0, 2, 3, 1).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
        out[~known] = filled[~known]
    return out[0] if single else out
