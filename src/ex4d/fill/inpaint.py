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
    return _push_pull(values, known, _down, _relax, level_iters, fine_iters)


def _push_pull(values: torch.Tensor, known: torch.Tensor, down, relax, level_iters: int,
               fine_iters: int) -> torch.Tensor:
    """Pull known pixels down a pyramid (``down(values, weight)``), push back up into the unknown ones, relaxing
    them at each level (``relax(values, unknown, iters)``). values (B, C, H, W), known (B, H, W) bool."""
    weight = known[:, None].to(values.dtype)
    values = torch.where(weight > 0, values, torch.zeros_like(values))
    pyramid = [(values, weight)]
    while min(pyramid[-1][0].shape[-2:]) > 1:
        pyramid.append(down(*pyramid[-1]))
    # Coarsest level: what is known there stays; the rest (only where a frame has nothing known) is 0.
    result = pyramid[-1][0]
    for level in range(len(pyramid) - 2, -1, -1):
        vals, w = pyramid[level]
        up = F.interpolate(result, size=vals.shape[-2:], mode="bilinear", align_corners=False)
        unknown = w <= 0
        result = torch.where(unknown, up, vals)
        result = relax(result, unknown, fine_iters if level == 0 else level_iters)
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


# ----------------------------------------------------------------------------------------------------------
# Background-biased (depth-aware) inpainting
# ----------------------------------------------------------------------------------------------------------

#: Default strength of the far-depth preference: a neighbour e times nearer counts e^-BIAS times less.
BACKGROUND_BIAS = 4.0
#: Full-resolution iterations of the background-biased fill: its far-biased coarse levels already carry the hole's
#: large-scale content; 64 instead of 16 changed hole PSNR by < 0.01 dB on the bench scenes at 3× the time.
BACKGROUND_FINE_ITERS = 16


def _softmax_far(logz: torch.Tensor, valid: torch.Tensor, bias: float, dim: int) -> torch.Tensor:
    """Weights ∝ valid · exp(bias · log z) along ``dim``, normalised to the farthest valid entry (no overflow)."""
    far = torch.where(valid, logz, torch.full_like(logz, -torch.inf)).amax(dim, keepdim=True)
    far = torch.where(torch.isfinite(far), far, torch.zeros_like(far))
    return torch.where(valid, torch.exp(bias * (logz - far).clamp(max=0.0)), torch.zeros_like(logz))


def _down_far(values: torch.Tensor, weight: torch.Tensor, bias: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Far-biased 2×2 reduction of (B, C+1, H, W) values whose last channel is log-depth -> half size (ceil).

    Within each block the known children are averaged with weights favouring the farthest one, so a coarse cell
    that straddles a foreground edge carries the background's colour and depth.
    """
    B, C, H, W = values.shape
    ph, pw = H % 2, W % 2
    if ph or pw:
        values = F.pad(values, (0, pw, 0, ph), mode="replicate")
        weight = F.pad(weight, (0, pw, 0, ph))
    h2, w2 = values.shape[-2] // 2, values.shape[-1] // 2
    vb = values.reshape(B, C, h2, 2, w2, 2).permute(0, 1, 2, 4, 3, 5).reshape(B, C, h2, w2, 4)
    wb = weight.reshape(B, 1, h2, 2, w2, 2).permute(0, 1, 2, 4, 3, 5).reshape(B, 1, h2, w2, 4)
    ww = wb * _softmax_far(vb[:, -1:], wb > 0, bias, -1)
    s = ww.sum(-1)
    out = torch.where(s > 0, (vb * ww).sum(-1) / s.clamp_min(1e-12), torch.zeros_like(vb[..., 0]))
    return out, wb.mean(-1)


def _relax_far(values: torch.Tensor, unknown: torch.Tensor, iters: int, bias: float) -> torch.Tensor:
    """Jacobi iterations of a depth-weighted Laplace equation on ``unknown`` pixels.

    Each unknown pixel becomes the mean of its 4 neighbours weighted by exp(bias · log z) (last channel): nearer
    (foreground) neighbours barely count, so a hole is continued from its far side. The weights are taken from
    the depth at the start (known depths and the far-biased coarse estimate in the hole) and kept fixed, which
    makes each iteration a linear stencil (4× cheaper than re-weighting every step). bias = 0 is :func:`_relax`.
    """
    if iters <= 0 or not bool(unknown.any()):
        return values
    p = F.pad(values[:, -1:], (1, 1, 1, 1), mode="replicate")
    logz = torch.cat([p[..., :-2, 1:-1], p[..., 2:, 1:-1], p[..., 1:-1, :-2], p[..., 1:-1, 2:]], 1)  # (B, 4, H, W)
    w = torch.exp(bias * (logz - logz.amax(1, keepdim=True)))
    w = (w / w.sum(1, keepdim=True)).unsqueeze(2)  # (B, 4, 1, H, W)
    for _ in range(iters):
        p = F.pad(values, (1, 1, 1, 1), mode="replicate")
        mean = (p[..., :-2, 1:-1] * w[:, 0] + p[..., 2:, 1:-1] * w[:, 1] + p[..., 1:-1, :-2] * w[:, 2]
                + p[..., 1:-1, 2:] * w[:, 3])
        values = torch.where(unknown, mean, values)
    return values


def inpaint_background_float(values: torch.Tensor, depth: torch.Tensor, known: torch.Tensor,
                             bias: float = BACKGROUND_BIAS, level_iters: int = LEVEL_ITERS,
                             fine_iters: int = FINE_ITERS) -> tuple[torch.Tensor, torch.Tensor]:
    """Background-biased push-pull inpainting of float images with depth.

    Holes in a new view are mostly revealed background, so both the pyramid reduction and the relaxation weight
    known content by exp(bias · log z): colour (and depth) flow into a hole from its far boundary, not from the
    foreground object that uncovered it. ``bias = 0`` gives exactly :func:`inpaint_float`'s colours.

    Args:
        values: (B, C, H, W) float images.
        depth: (B, H, W) positive z-depth of the known pixels (ignored elsewhere).
        known: (B, H, W) bool, True = keep.
        bias, level_iters, fine_iters: far preference; Jacobi iterations per coarse level / at full resolution.

    Returns:
        ``(values, depth)``: (B, C, H, W) and (B, H, W), equal to the inputs on known pixels; the filled depth is
        the (far-biased) depth the fill assumed. A frame without any known pixel is all 0 (depth 1).
    """
    logz = torch.log(depth.to(values.dtype).clamp_min(1e-6))
    stacked = torch.cat([values, logz[:, None]], 1)
    result = _push_pull(stacked, known, lambda v, w: _down_far(v, w, bias),
                        lambda v, unknown, n: _relax_far(v, unknown, n, bias), level_iters, fine_iters)
    return result[:, :-1], torch.exp(result[:, -1])


def inpaint_background(color: np.ndarray, known: np.ndarray, depth: np.ndarray, bias: float = BACKGROUND_BIAS,
                       device: str | torch.device = "cpu", fine_iters: int = BACKGROUND_FINE_ITERS) -> np.ndarray:
    """Depth-aware inpainting that continues each hole from its far (background) side.

    Args:
        color: (T, H, W, 3) uint8 (or (H, W, 3)).
        known: (T, H, W) bool (or (H, W)), True = keep as is.
        depth: (T, H, W) float z-depth of the known pixels (positive there; ignored elsewhere), e.g.
            ``ReconResult.depth``.
        bias: far preference (0 with ``fine_iters=FINE_ITERS`` = :func:`inpaint`).
        device: torch device to compute on.
        fine_iters: Jacobi iterations at full resolution.

    Returns:
        (T, H, W, 3) uint8, identical to ``color`` where ``known``; unknown pixels are convex combinations of
        known ones.
    """
    color = np.asarray(color)
    known = np.asarray(known, bool)
    depth = np.asarray(depth, np.float32)
    single = color.ndim == 3
    if single:
        color, known, depth = color[None], known[None], depth[None]
    if color.ndim != 4 or color.shape[-1] != 3 or known.shape != color.shape[:3] or depth.shape != known.shape:
        raise ValueError(f"color must be (T, H, W, 3), known and depth (T, H, W); got {color.shape}, "
                         f"{known.shape} and {depth.shape}")
    if (known & ~(depth > 0)).any() or not np.isfinite(depth[known]).all():
        raise ValueError("depth must be positive and finite on known pixels")
    out = color.copy()
    dev = torch.device(device)
    # Frames are independent: a few at a time, so that the float pyramids do not grow with the clip's length.
    for lo in range(0, len(color), INPAINT_BATCH):
        hi = min(lo + INPAINT_BATCH, len(color))
        if known[lo:hi].all():
            continue
        c = torch.from_numpy(np.ascontiguousarray(color[lo:hi])).to(dev).permute(0, 3, 1, 2).to(torch.float32)
        k = torch.from_numpy(np.ascontiguousarray(known[lo:hi])).to(dev)
        z = torch.from_numpy(np.where(known[lo:hi], depth[lo:hi], np.float32(1.0))).to(dev)
        filled, _ = inpaint_background_float(c, z, k, bias, fine_iters=fine_iters)
        filled = filled.permute(0, 2, 3, 1).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
        unknown = ~known[lo:hi]
        out[lo:hi][unknown] = filled[unknown]
    return out[0] if single else out


#: Frames inpainted together by :func:`inpaint_background` (memory ∝ this, not the clip's length).
INPAINT_BATCH = 8
