"""OpenCV's ``cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)`` on uint8 images, bit for bit (NumPy + torch).

Why: the reference resizes every video with ``cv2.resize`` (EX-4D's copy of DepthCrafter's frame reader, and
``generate.py``'s loaders). A float bilinear filter is off by ±1 on about 12 % of the pixel values, which
DepthCrafter's clip-wide normalisation and 1/disparity conversion turn into depth errors of several per cent (up to
24 % in issue 18's example). OpenCV is not a core dependency, so its fixed-point path is restated here:

* pixel centres: source coordinate ``f = (d + 0.5)·(S/D) − 0.5`` computed in double and rounded to float32, split
  into ``floor(f)`` and the float32 fraction; a column left of 0 or at/after the last one takes that edge pixel with
  weight 1, rows are clamped to the image (their fraction kept);
* weights: ``round((1 − frac)·2048)`` and ``round(frac·2048)`` (11 bits, half to even, from float32 products);
* horizontal pass: ``a₀·p₀ + a₁·p₁`` in integers;
* vertical pass (OpenCV's uint8 specialisation): ``(((b₀·(h₀ >> 4)) >> 16) + ((b₁·(h₁ >> 4)) >> 16) + 2) >> 2``;
* an exact 2× downscale on both axes is OpenCV's fast area path instead: ``(a + b + c + d + 2) >> 2``
  (channel counts 1, 3, 4; other counts round ``sum/4`` half to even).

Checked against real ``cv2`` on random sizes in ``tests/io/test_resize.py``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["resize_linear_u8", "resize_planes_u8", "COEF_BITS"]

#: Bits of OpenCV's fixed-point interpolation weights (INTER_RESIZE_COEF_BITS).
COEF_BITS = 11
_ONE = 1 << COEF_BITS


def _axis_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Left tap ``floor(f)`` (int64, unclamped) and its float32 fraction for each of ``dst`` output positions."""
    scale = 1.0 / (dst / src)  # OpenCV stores inv_scale = dst/src and inverts it
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    frac = (f - i0.astype(np.float32)).astype(np.float32)
    return i0, frac


def _weights(frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """11-bit weights of the two taps: float32 products rounded half to even (OpenCV's saturate_cast<short>)."""
    one = np.float32(1.0)
    w0 = np.rint((one - frac) * np.float32(_ONE)).astype(np.int32)
    w1 = np.rint(frac * np.float32(_ONE)).astype(np.int32)
    return w0, w1


def _column_taps(src: int, dst: int):
    """(i0, i1, w0, w1) per output column."""
    i0, frac = _axis_taps(src, dst)
    # Columns whose left tap is outside the image take the edge pixel alone (OpenCV resets the fraction).
    edge = (i0 < 0) | (i0 >= src - 1)
    frac = np.where(edge, np.float32(0.0), frac)
    i0 = np.clip(i0, 0, src - 1)
    i1 = np.where(edge, i0, i0 + 1)
    w0, w1 = _weights(frac)
    return i0, i1, w0, w1


def _row_taps(src: int, dst: int):
    """(i0, i1, w0, w1) per output row."""
    i0, frac = _axis_taps(src, dst)
    # Rows are clamped, but the fraction stays (OpenCV clips the row pointers only).
    w0, w1 = _weights(frac)
    return np.clip(i0, 0, src - 1), np.clip(i0 + 1, 0, src - 1), w0, w1


def _area_half(x: torch.Tensor, channels: int) -> torch.Tensor:
    """OpenCV's fast INTER_AREA for exactly 2× down on both axes (what INTER_LINEAR dispatches to there)."""
    x = x.int()
    total = x[..., 0::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 0::2] + x[..., 1::2, 1::2]
    if channels in (1, 3, 4):
        return ((total + 2) >> 2).to(torch.uint8)
    return torch.round(total.float() * 0.25).to(torch.uint8)  # sum·(1/4) rounded half to even


def resize_planes_u8(planes: torch.Tensor, height: int, width: int, channels: int = 3) -> torch.Tensor:
    """:func:`resize_linear_u8` on uint8 planes of any leading shape, on any device (integer arithmetic only).

    Args:
        planes: (..., H, W) uint8, e.g. frames (T, C, H, W).
        height, width: output size (positive).
        channels: the channel count of the images the planes come from, as OpenCV would see it; it only matters
            for an exact 2× downscale (OpenCV's area path rounds differently for 2 channels).

    Returns:
        (..., height, width) uint8 on the same device; ``planes`` itself when the size is unchanged.
    """
    if planes.dtype != torch.uint8 or planes.dim() < 2:
        raise ValueError(f"expected (..., H, W) uint8 planes, got {planes.dtype} {tuple(planes.shape)}")
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"output size must be positive, got {height}x{width}")
    H, W = planes.shape[-2:]
    if H == 0 or W == 0:
        raise ValueError(f"cannot resize an empty image ({H}x{W})")
    if (H, W) == (height, width):
        return planes
    if H == 2 * height and W == 2 * width:
        return _area_half(planes, channels)

    dev = planes.device
    c0, c1, a0, a1 = (torch.from_numpy(v).to(dev) for v in _column_taps(W, width))
    r0, r1, b0, b1 = _row_taps(H, height)
    # Horizontal pass only on the source rows the vertical pass reads; values ≤ 255·2048 fit int32.
    rows = np.unique(np.concatenate([r0, r1]))
    src = planes.index_select(-2, torch.from_numpy(rows).to(dev))
    # (advanced indexing gathers along the last dim much faster than index_select there; in-place ops save a third)
    horiz = src[..., c0].int().mul_(a0)
    horiz.add_(src[..., c1].int().mul_(a1)).bitwise_right_shift_(4)
    h0 = horiz.index_select(-2, torch.from_numpy(np.searchsorted(rows, r0)).to(dev))
    h1 = horiz.index_select(-2, torch.from_numpy(np.searchsorted(rows, r1)).to(dev))
    b0, b1 = (torch.from_numpy(b).to(dev).view(-1, 1) for b in (b0, b1))
    # ((b0·h0) >> 16) + ((b1·h1) >> 16) + 2) >> 2
    h0.mul_(b0).bitwise_right_shift_(16)
    h0.add_(h1.mul_(b1).bitwise_right_shift_(16)).add_(2).bitwise_right_shift_(2)
    return h0.to(torch.uint8)


def resize_linear_u8(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)`` for a uint8 image, exactly.

    Args:
        image: (H, W) or (H, W, C) uint8.
        height, width: output size (positive).

    Returns:
        (height, width) or (height, width, C) uint8; the input itself when the size is unchanged.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) uint8 image, got {img.dtype} {img.shape}")
    if img.shape[:2] == (int(height), int(width)):
        return img
    x = torch.from_numpy(np.ascontiguousarray(img))
    if img.ndim == 2:
        return resize_planes_u8(x, height, width, channels=1).numpy()
    out = resize_planes_u8(x.permute(2, 0, 1), height, width, channels=img.shape[2])
    return out.permute(1, 2, 0).contiguous().numpy()
