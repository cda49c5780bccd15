"""The reference's conversion of a relative disparity to depth (spec §2.3), and temporal scale-and-shift alignment.

Everything works on torch tensors (any device); numpy arrays are accepted and returned as numpy.

§2.3, for a clip of model outputs R (T, H, W, 3) in [0, 1] (DepthCrafter) or a disparity r (T, H, W):

1. r = channel mean of R;
2. n = (r − min r) / (max r − min r) over the **whole clip** (n = 1 is the nearest point);
3. d = 3900 · n, floored at 1e-5 ("compatible with Depth-Anything output");
4. D = 10000 / d, clipped to [1e-4, 1e4]; hence D ∈ [10000/3900 ≈ 2.5641, 10000].
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "DISPARITY_SCALE", "DEPTH_NUMERATOR", "MIN_DISPARITY", "NEAR", "FAR", "MIN_DEPTH",
    "normalize_clip", "disparity_to_depth", "video_output_to_depth", "fit_scale_shift", "align_scale_shift",
]

DISPARITY_SCALE = 3900.0
DEPTH_NUMERATOR = 10000.0
MIN_DISPARITY = 1e-5
NEAR, FAR = 1e-4, 1e4
#: Smallest depth the conversion produces (n = 1).
MIN_DEPTH = DEPTH_NUMERATOR / DISPARITY_SCALE


def _as_tensor(x) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        return x, False
    return torch.from_numpy(np.ascontiguousarray(x)), True


def normalize_clip(r: torch.Tensor) -> torch.Tensor:
    """Min–max normalisation over every element of the clip (§2.3 step 2).

    A constant clip (max = min, where the reference would divide by zero) gives n = 1 everywhere.
    """
    lo, hi = r.min(), r.max()
    span = hi - lo
    if not torch.isfinite(span) or span <= 0:
        return torch.ones_like(r)
    return (r - lo) / span


def disparity_to_depth(disparity, normalize: bool = True):
    """§2.3 steps 2–4: relative disparity (T, H, W) (larger = nearer) -> depth, float32.

    Args:
        disparity: (T, H, W) (or any shape) tensor or array.
        normalize: apply the clip-wide min–max first (the reference always does); ``False`` expects n in [0, 1].
    """
    x, was_numpy = _as_tensor(disparity)
    x = x.float()
    n = normalize_clip(x) if normalize else x
    d = (DISPARITY_SCALE * n).clamp_min(MIN_DISPARITY)
    depth = (DEPTH_NUMERATOR / d).clamp(NEAR, FAR)
    return depth.numpy() if was_numpy else depth


def video_output_to_depth(video, channels_last: bool = True):
    """§2.3 for a video model's 3-channel output in [0, 1]: channel mean, then :func:`disparity_to_depth`.

    Args:
        video: (T, H, W, 3) if ``channels_last`` else (T, 3, H, W).
    """
    x, was_numpy = _as_tensor(video)
    r = x.float().mean(dim=-1 if channels_last else 1)
    depth = disparity_to_depth(r)
    return depth.numpy() if was_numpy else depth


def fit_scale_shift(source: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                    eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares (s, b) minimising Σ w (s·source + b − target)², batched over the leading dim.

    Args:
        source, target: (B, N) (or (B, H, W), flattened).
        weight: same shape, ≥ 0; default all ones.

    Returns:
        (s, b), each (B,). A source with no variance gets s = 1 and the mean offset as b.
    """
    source = source.reshape(source.shape[0], -1).double()
    target = target.reshape(target.shape[0], -1).double()
    w = torch.ones_like(source) if weight is None else weight.reshape(source.shape).double()
    wsum = w.sum(1).clamp_min(eps)
    ms = (w * source).sum(1) / wsum
    mt = (w * target).sum(1) / wsum
    cov = (w * (source - ms[:, None]) * (target - mt[:, None])).sum(1) / wsum
    var = (w * (source - ms[:, None]) ** 2).sum(1) / wsum
    degenerate = var <= eps * (ms.abs() ** 2 + 1.0)
    s = torch.where(degenerate, torch.ones_like(var), cov / var.clamp_min(eps))
    b = mt - s * ms
    return s, b


def align_scale_shift(disparity, reference: str = "previous", trim: float = 0.2, iterations: int = 3,
                      max_pixels: int = 65536):
    """Per-frame scale and shift that make a sequence of relative disparities consistent over time.

    Per-frame models (Depth Anything) predict affine-invariant disparity: each frame has its own unknown scale and
    shift, so the raw sequence flickers. Frame 0 is kept; every later frame t gets (s_t, b_t) minimising
    Σ (s_t·d_t + b_t − ref_t)² over the pixels whose residual is in the lowest ``1 − trim`` fraction (refitted
    ``iterations`` times, so that moving objects and disocclusions do not bias the fit). ``ref_t`` is the aligned
    frame t − 1 (``"previous"``, follows slow scene changes) or the aligned frame 0 (``"first"``, no drift).

    Args:
        disparity: (T, H, W) tensor or array.
        reference: ``"previous"`` or ``"first"``.
        trim: fraction of worst-fitting pixels ignored in each refit (0 = plain least squares).
        iterations: refits after the first plain fit.
        max_pixels: fit on a regular subsample of at most this many pixels per frame (the result is applied to all).

    Returns:
        (aligned (T, H, W) float32, scales (T,), shifts (T,)), with ``aligned[t] = scales[t]·d[t] + shifts[t]``;
        tensors or arrays like the input. Scales are kept positive (a negative fit is replaced by a shift-only one).
    """
    if reference not in ("previous", "first"):
        raise ValueError(f"reference must be 'previous' or 'first', got {reference!r}")
    if not 0.0 <= trim < 1.0:
        raise ValueError(f"trim must be in [0, 1), got {trim}")
    x, was_numpy = _as_tensor(disparity)
    x = x.float()
    T = x.shape[0]
    flat = x.reshape(T, -1)
    step = max(1, -(-flat.shape[1] // max_pixels))
    sample = flat[:, ::step]
    scales = torch.ones(T, dtype=torch.float64, device=x.device)
    shifts = torch.zeros(T, dtype=torch.float64, device=x.device)
    aligned_sample = [sample[0].double()]
    for t in range(1, T):
        ref = aligned_sample[-1] if reference == "previous" else aligned_sample[0]
        src = sample[t].double()
        s, b = fit_scale_shift(src[None], ref[None])
        keep = int(round((1.0 - trim) * src.numel()))
        for _ in range(iterations if trim > 0 and keep >= 2 else 0):
            resid = (s * src + b - ref).abs()
            threshold = resid.kthvalue(keep).values
            w = (resid <= threshold).double()
            s, b = fit_scale_shift(src[None], ref[None], w[None])
        if s.item() <= 0:  # an inverted fit means no usable correlation: match the means only
            s = torch.ones_like(s)
            b = (ref.mean() - src.mean())[None]
        scales[t], shifts[t] = s[0], b[0]
        aligned_sample.append(s[0] * src + b[0])
    aligned = (scales[:, None, None] * x.double() + shifts[:, None, None]).float()
    if was_numpy:
        return aligned.numpy(), scales.numpy(), shifts.numpy()
    return aligned, scales, shifts
