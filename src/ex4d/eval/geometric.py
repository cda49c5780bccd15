"""Metrics of a rendered mask against the ground-truth observability of each target pixel.

``seen`` is what a renderer marks as seen in the source (1 = copy); ``observable`` is the truth: the surface point
that the target pixel shows was visible from the source camera at that time. Frames are usually the novel ones
only (frame 0 is the source view).
"""

from __future__ import annotations

import numpy as np


def mask_metrics(seen: np.ndarray, observable: np.ndarray) -> dict[str, float]:
    """Leak rate, recall and IoU of a seen-mask.

    Args:
        seen: (..., H, W) bool, pixels marked seen.
        observable: (..., H, W) bool, pixels whose surface the source camera saw.

    Returns:
        ``leak_rate``: fraction of seen pixels that are not observable (content invented or leaked through);
        ``mask_recall``: fraction of observable pixels marked seen; ``mask_iou``: |seen ∧ obs| / |seen ∨ obs|.
        Empty denominators give 0 leak, 1 recall and 1 IoU (nothing to get wrong).
    """
    seen, observable = np.asarray(seen, bool), np.asarray(observable, bool)
    if seen.shape != observable.shape:
        raise ValueError(f"seen {seen.shape} and observable {observable.shape} must have the same shape")
    both = np.count_nonzero(seen & observable)
    n_seen, n_obs, n_any = np.count_nonzero(seen), np.count_nonzero(observable), np.count_nonzero(seen | observable)
    return {
        "leak_rate": (n_seen - both) / n_seen if n_seen else 0.0,
        "mask_recall": both / n_obs if n_obs else 1.0,
        "mask_iou": both / n_any if n_any else 1.0,
    }


def masked_psnr(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None, peak: float = 255.0) -> float:
    """PSNR (dB) between two uint8/float images or videos, over ``mask`` pixels only when given.

    Args:
        pred, ref: (..., H, W, C) arrays of the same shape, values in [0, peak].
        mask: optional (..., H, W) bool.

    Returns:
        PSNR in dB; ``inf`` for identical inputs, ``nan`` for an empty mask.
    """
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    if pred.shape != ref.shape:
        raise ValueError(f"pred {pred.shape} and ref {ref.shape} must have the same shape")
    err = (pred - ref) ** 2
    if mask is not None:
        mask = np.asarray(mask, bool)
        if not mask.any():
            return float("nan")
        err = err[mask]
    mse = float(err.mean())
    return float("inf") if mse == 0 else 10.0 * np.log10(peak**2 / mse)
