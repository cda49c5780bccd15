"""Full-reference image and video metrics: PSNR, SSIM (plain and masked) and temporal flicker.

All functions take videos as ``(T, H, W, C)`` arrays (uint8 or float; a single ``(H, W, C)`` image counts as one
frame) with values in ``[0, peak]`` (``peak = 255`` for uint8 frames, pass ``peak=1`` for floats in [0, 1]). Masks
are ``(T, H, W)`` or ``(H, W)`` bool (broadcast over frames), **True = the pixel is counted**. The evaluation harness
passes the seen-mask for the ``*_seen`` numbers and its complement for the ``*_unseen`` ones.

Definitions (see ``docs/eval.md``):

* **PSNR** ``10 log10(peak² / MSE)``, the MSE over all channels of the selected pixels. Per frame: that frame's
  pixels; per video: pooled over all frames (one MSE for the whole video, so one perfect frame does not make the
  video infinite). ``inf`` when the MSE is 0, ``nan`` when no pixel is selected.
* **SSIM** (Wang et al. 2004) with an 11×11 Gaussian window (σ = 1.5, normalised), ``K1 = 0.01``, ``K2 = 0.03``,
  ``L = peak``, computed on each RGB channel separately and averaged over the channels, without downsampling.
  Only windows lying fully inside the image are used ("valid" filtering, as Wang's reference code), so the SSIM map
  of an ``H × W`` frame is ``(H - 10) × (W - 10)``, entry ``(i, j)`` belonging to the window centred on pixel
  ``(i + 5, j + 5)``. SSIM = mean of the map; masked SSIM = mean of the map over the window centres whose pixel is
  selected (a 5-pixel border band is never counted). Per video: mean over all frames' selected entries.
* **Temporal flicker** (reference-relative): ``mean |(p_t - p_{t-1}) - (r_t - r_{t-1})|`` over the frame pairs
  ``t = 1..T-1``, all channels and the selected pixels (selected in both frames), in units of the pixel values
  (0-255 for uint8). It is 0 when the prediction changes exactly as the reference does, so a constant error
  (colour offset, static artefact) is not flicker, while an error that changes from frame to frame is.
* **Static flicker** (no-reference): ``mean |p_t - p_{t-1}|`` over the pixels where the *reference* is static
  between ``t-1`` and ``t`` (every channel changes by at most ``threshold``); the harness reports it for both the
  prediction and the reference, the latter being the floor (codec noise) to compare with.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "SSIM_K1", "SSIM_K2", "SSIM_SIGMA", "SSIM_WINDOW", "STATIC_THRESHOLD",
    "psnr", "psnr_frames", "ssim", "ssim_frames", "ssim_map", "static_flicker", "static_pixels",
    "temporal_flicker", "temporal_flicker_frames",
]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: Largest per-channel change (in 0-255 units) of a reference pixel still counted as static.
STATIC_THRESHOLD = 3.0

_CHUNK = 8  # frames processed together (bounds the float64 temporaries)


def _as_video(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"{name} must be (T, H, W, C) or (H, W, C), got shape {x.shape}")
    return x


def _prepare(pred, ref, mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    pred, ref = _as_video(pred, "pred"), _as_video(ref, "ref")
    if pred.shape != ref.shape:
        raise ValueError(f"pred {pred.shape} and ref {ref.shape} must have the same shape")
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.ndim == 2:
            mask = mask[None]
        if mask.ndim != 3 or mask.shape[1:] != pred.shape[1:3] or mask.shape[0] not in (1, pred.shape[0]):
            raise ValueError(f"mask {mask.shape} must be (T, H, W) or (H, W) matching frames {pred.shape}")
        mask = np.broadcast_to(mask, pred.shape[:3])
    return pred, ref, mask


def _chunks(n: int, size: int = _CHUNK) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _psnr_from(sq_sum: np.ndarray, count: np.ndarray, peak: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        mse = sq_sum / count
        out = 10.0 * np.log10(peak**2 / mse)
    out = np.where(mse == 0, np.inf, out)
    return np.where(count == 0, np.nan, out)


def _squared_error_sums(pred, ref, mask) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: sum of squared errors over the selected pixels (all channels) and the number of values."""
    t, _, _, c = pred.shape
    sums, counts = np.zeros(t), np.zeros(t)
    for s in _chunks(t):
        err = (pred[s].astype(np.float64) - ref[s].astype(np.float64)) ** 2
        if mask is None:
            sums[s] = err.sum(axis=(1, 2, 3))
            counts[s] = err[0].size
        else:
            m = mask[s]
            sums[s] = (err * m[..., None]).sum(axis=(1, 2, 3))
            counts[s] = m.sum(axis=(1, 2)) * c
    return sums, counts


def psnr_frames(pred, ref, mask=None, peak: float = 255.0) -> np.ndarray:
    """PSNR (dB) of every frame, over ``mask`` pixels when given: (T,) float64 (inf: identical, nan: empty mask)."""
    pred, ref, mask = _prepare(pred, ref, mask)
    return _psnr_from(*_squared_error_sums(pred, ref, mask), peak)


def psnr(pred, ref, mask=None, peak: float = 255.0) -> float:
    """PSNR (dB) of a whole video: one MSE pooled over all frames (and ``mask`` pixels when given)."""
    pred, ref, mask = _prepare(pred, ref, mask)
    sums, counts = _squared_error_sums(pred, ref, mask)
    return float(_psnr_from(np.array(sums.sum()), np.array(counts.sum()), peak))


def _gaussian_1d(dtype, device) -> torch.Tensor:
    x = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _resolve(device) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)


def ssim_map(pred, ref, peak: float = 255.0, device=None) -> np.ndarray:
    """The SSIM map of every frame, averaged over channels: (T, H - 10, W - 10) float64.

    Entry ``[t, i, j]`` is the SSIM of the 11×11 Gaussian-weighted window centred on pixel ``(i + 5, j + 5)``.
    Computed in float64 on the CPU (float32 on CUDA, on values centred at ``peak / 2`` to keep precision).
    """
    pred, ref, _ = _prepare(pred, ref)
    t, h, w, c = pred.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {h}x{w}")
    dev = _resolve(device)
    dtype = torch.float64 if dev.type == "cpu" else torch.float32
    g = _gaussian_1d(dtype, dev)
    gx, gy = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)
    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
    centre = peak / 2  # SSIM's variance terms are shift invariant; centring avoids cancellation in E[x²] - E[x]²
    out = np.empty((t, h - SSIM_WINDOW + 1, w - SSIM_WINDOW + 1))
    for s in _chunks(t):
        x = torch.as_tensor(pred[s]).to(device=dev, dtype=dtype).permute(0, 3, 1, 2).reshape(-1, 1, h, w) - centre
        y = torch.as_tensor(ref[s]).to(device=dev, dtype=dtype).permute(0, 3, 1, 2).reshape(-1, 1, h, w) - centre
        n = x.shape[0]
        stats = F.conv2d(F.conv2d(torch.cat([x, y, x * x, y * y, x * y]), gx), gy)
        mx, my, mxx, myy, mxy = stats.split(n)
        vx, vy, cxy = mxx - mx * mx, myy - my * my, mxy - mx * my
        mx, my = mx + centre, my + centre
        smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        out[s] = smap.view(-1, c, *smap.shape[-2:]).mean(dim=1).double().cpu().numpy()
    return out


def _crop_mask(mask: np.ndarray) -> np.ndarray:
    r = SSIM_WINDOW // 2
    return mask[:, r:mask.shape[1] - r, r:mask.shape[2] - r]


def ssim_frames(pred, ref, mask=None, peak: float = 255.0, device=None) -> np.ndarray:
    """SSIM of every frame (mean of its SSIM map, over ``mask`` window centres when given): (T,) float64."""
    pred, ref, mask = _prepare(pred, ref, mask)
    smap = ssim_map(pred, ref, peak, device)
    if mask is None:
        return smap.mean(axis=(1, 2))
    m = _crop_mask(mask)
    count = m.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (smap * m).sum(axis=(1, 2)) / count, np.nan)


def ssim(pred, ref, mask=None, peak: float = 255.0, device=None) -> float:
    """SSIM of a whole video: mean of the SSIM maps of all frames (over ``mask`` window centres when given)."""
    pred, ref, mask = _prepare(pred, ref, mask)
    smap = ssim_map(pred, ref, peak, device)
    if mask is None:
        return float(smap.mean())
    m = _crop_mask(mask)
    return float(smap[m].mean()) if m.any() else float("nan")


def _flicker_sums(pred, ref, mask) -> tuple[np.ndarray, np.ndarray]:
    """Per transition t-1 -> t: sum of |Δp - Δr| over selected pixels (all channels) and the number of values."""
    t, _, _, c = pred.shape
    sums, counts = np.zeros(max(t - 1, 0)), np.zeros(max(t - 1, 0))
    for s in _chunks(t - 1):
        # Δp - Δr = e_t - e_{t-1} with e = p - r.
        lo = slice(s.start, s.stop + 1)
        err = pred[lo].astype(np.float64) - ref[lo].astype(np.float64)
        diff = np.abs(err[1:] - err[:-1])
        if mask is None:
            sums[s] = diff.sum(axis=(1, 2, 3))
            counts[s] = diff[0].size
        else:
            m = mask[lo]
            both = m[1:] & m[:-1]
            sums[s] = (diff * both[..., None]).sum(axis=(1, 2, 3))
            counts[s] = both.sum(axis=(1, 2)) * c
    return sums, counts


def temporal_flicker_frames(pred, ref, mask=None) -> np.ndarray:
    """Reference-relative flicker of every frame pair (t-1, t), t = 1..T-1: (T-1,) float64 (nan: nothing selected)."""
    pred, ref, mask = _prepare(pred, ref, mask)
    sums, counts = _flicker_sums(pred, ref, mask)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def temporal_flicker(pred, ref, mask=None) -> float:
    """Reference-relative flicker of a video: mean |(p_t - p_{t-1}) - (r_t - r_{t-1})| pooled over all pairs.

    ``mask`` selects pixels; a pixel of pair (t-1, t) counts when selected in both frames. ``nan`` for a single
    frame or an empty selection.
    """
    pred, ref, mask = _prepare(pred, ref, mask)
    sums, counts = _flicker_sums(pred, ref, mask)
    total = counts.sum()
    return float(sums.sum() / total) if total else float("nan")


def static_pixels(ref, threshold: float = STATIC_THRESHOLD) -> np.ndarray:
    """(T-1, H, W) bool: pixels whose every channel changes by at most ``threshold`` from frame t-1 to t."""
    ref = _as_video(ref, "ref")
    out = np.empty((max(ref.shape[0] - 1, 0), *ref.shape[1:3]), bool)
    for s in _chunks(ref.shape[0] - 1):
        r = ref[s.start:s.stop + 1].astype(np.float64)
        out[s] = (np.abs(r[1:] - r[:-1]) <= threshold).all(axis=-1)
    return out


def static_flicker(frames, static: np.ndarray) -> float:
    """No-reference flicker: mean |f_t - f_{t-1}| over all channels of the ``static`` pixels (T-1, H, W).

    ``static[t-1]`` selects the pixels of pair (t-1, t) that should not change (e.g. :func:`static_pixels` of the
    reference). ``nan`` when none is selected.
    """
    frames = _as_video(frames, "frames")
    static = np.asarray(static, bool)
    if static.shape != (max(frames.shape[0] - 1, 0), *frames.shape[1:3]):
        raise ValueError(f"static {static.shape} must be (T-1, H, W) for frames {frames.shape}")
    total, count = 0.0, 0
    for s in _chunks(frames.shape[0] - 1):
        f = frames[s.start:s.stop + 1].astype(np.float64)
        m = static[s]
        total += float((np.abs(f[1:] - f[:-1]) * m[..., None]).sum())
        count += int(m.sum()) * frames.shape[-1]
    return total / count if count else float("nan")
