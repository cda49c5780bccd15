"""Input preprocessing of the generation stage, as the reference does it (spec §6.2).

Steps, for the masked colour video and the mask video (both ``(T, H, W, 3)`` or ``(T, H, W)`` uint8):

1. frame selection: indices ⌊linspace(0, N−1, T)⌋ if N ≥ T, else all frames, padded with the last one;
2. resize each frame to ``height × width`` (bilinear, aspect ratio not preserved, as ``cv2.resize``);
3. mask: erode each frame with a k×k square of ones (1 iteration, borders never eroded, as OpenCV's default
   border value); the reference draws k uniformly in 2…8 per frame, *unseeded*; here the draw is seeded
   (``erode_seed``) or k is fixed (``mask_erode=K``; 0 disables erosion);
4. binarise the mask: m = 1[m/255 > 0.5];
5. conditioning video v = (colour/255 · m)·2 − 1 ∈ [−1, 1] and mask m′ = m·2 − 1 ∈ {−1, +1}, both
   ``(1, 3, T, H, W)``. (The condition encoder rescales m′ a second time, 2·m′ − 1, before the VAE:
   the reference's double scaling, see :func:`encoder_mask_input`.)

Frame counts and sizes are checked by :func:`check_size` / :func:`round_size` (sides multiples of 16, T = 4k+1).
"""

from __future__ import annotations

import logging
import random
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ex4d.errors import InputError
from ex4d.io.resize import resize_planes_u8

__all__ = [
    "ERODE_RANGE",
    "reference_frame_indices",
    "round_num_frames",
    "round_size",
    "check_size",
    "erosion_kernels",
    "erode",
    "prepare_videos",
    "encoder_mask_input",
]

logger = logging.getLogger(__name__)

#: The reference's random erosion kernel sizes, inclusive.
ERODE_RANGE = (2, 8)


def reference_frame_indices(total: int, num_frames: int) -> list[int]:
    """⌊linspace(0, total−1, num_frames)⌋ if total ≥ num_frames, else all frames then the last one repeated."""
    if total < 1:
        raise InputError("the video has no frames")
    if total >= num_frames:
        return [int(i) for i in np.floor(np.linspace(0, total - 1, num_frames))]
    return list(range(total)) + [total - 1] * (num_frames - total)


def round_num_frames(num_frames: int) -> int:
    """The reference's rule: T is kept if T mod 4 = 1, else replaced by ⌊(T+2)/4⌋·4 + 1."""
    if num_frames < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}")
    if num_frames % 4 == 1:
        return num_frames
    return (num_frames + 2) // 4 * 4 + 1


def round_size(height: int, width: int, multiple: int = 16) -> tuple[int, int]:
    """Height and width rounded up to multiples of 16 (the reference's rule)."""
    if height < 1 or width < 1:
        raise InputError(f"height and width must be positive, got {height}x{width}")
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def check_size(num_frames: int, height: int, width: int, multiple: int = 16) -> None:
    """Raise :class:`InputError` unless T = 4k+1 and both sides are positive multiples of ``multiple``."""
    if num_frames < 1 or num_frames % 4 != 1:
        raise InputError(
            f"num_frames must be 4k+1 (1, 5, 9, …, 49), got {num_frames}; "
            f"the reference would use {round_num_frames(max(num_frames, 1))}"
        )
    if height < multiple or width < multiple or height % multiple or width % multiple:
        raise InputError(
            f"height and width must be multiples of {multiple}, got {height}x{width}; "
            f"the reference would use {'x'.join(map(str, round_size(max(height, 1), max(width, 1), multiple)))}"
        )


def erosion_kernels(num_frames: int, mask_erode: int | None = None, erode_seed: int = 0) -> list[int]:
    """Per-frame kernel sizes: fixed ``mask_erode`` (0 = none), or drawn in 2…8 with ``random.Random(erode_seed)``."""
    if mask_erode is not None:
        if isinstance(mask_erode, bool) or not isinstance(mask_erode, (int, np.integer)) or mask_erode < 0:
            raise InputError(f"mask_erode must be a non-negative integer, got {mask_erode!r}")
        return [int(mask_erode)] * num_frames
    rng = random.Random(erode_seed)
    return [rng.randint(*ERODE_RANGE) for _ in range(num_frames)]


def erode(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Grey erosion of ``(..., H, W)`` with a k×k square, anchor at k//2 and an infinite border (as cv2.erode)."""
    if k <= 1:
        return mask
    a = k // 2
    x = mask.float().reshape(-1, 1, *mask.shape[-2:])
    x = F.pad(x, (a, k - 1 - a, a, k - 1 - a), value=float("inf"))
    out = -F.max_pool2d(-x, kernel_size=k, stride=1)
    return out.reshape(mask.shape).to(mask.dtype)


def _as_frames(frames, name: str, device=None) -> torch.Tensor:
    """(T, H, W, 3|1) or (T, H, W) uint8 array/tensor -> float32 tensor (T, 3, H, W) in 0..255 on ``device``."""
    t = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
    if t.ndim == 3:
        t = t[..., None]
    if t.ndim != 4 or t.shape[-1] not in (1, 3):
        raise InputError(f"{name} must be (T, H, W, 3) or (T, H, W) frames, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0 or t.shape[2] == 0:
        raise InputError(f"{name} is empty (shape {tuple(t.shape)})")
    if t.dtype != torch.uint8:
        raise InputError(f"{name} must be uint8 (0..255), got {t.dtype}")
    if device is not None:
        t = t.to(device)  # moved as uint8: a quarter of the bytes of the float frames
    t = t.permute(0, 3, 1, 2).float()
    return t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t


def prepare_videos(
    color,
    mask,
    height: int = 512,
    width: int = 512,
    num_frames: int | None = None,
    mask_erode: int | None = None,
    erode_seed: int = 0,
    kernels: Sequence[int] | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's generator inputs from the DW-Mesh renders.

    Args:
        color: masked colour video, (T, H, W, 3) uint8 RGB.
        mask: mask video, (T, H, W, 3) or (T, H, W) uint8, 255 = seen (the same T, H, W as ``color``).
        height, width: output size (multiples of 16).
        num_frames: frames to produce (4k+1); ``None`` = the input's length, which must then be 4k+1.
        mask_erode: fixed erosion kernel size (0 = none); ``None`` draws it in 2…8 per frame with ``erode_seed``.
        kernels: explicit per-frame kernel sizes (overrides the two above; for tests).
        device: where to compute (default: the inputs' device, the CPU for arrays). The pipeline passes its
            execution device: on a GPU this takes milliseconds instead of 1.3–1.9 s of 2-core CPU time for
            49×512². Values are the same on both (the resize is integer arithmetic).

    Returns:
        ``(video, mask)``: float32 ``(1, 3, T, height, width)``, video = colour·m·2−1 ∈ [−1,1], mask = m·2−1 ∈ {−1,1}.
    """
    c = _as_frames(color, "colour video", device)
    m = _as_frames(mask, "mask video", device)
    if c.shape[0] != m.shape[0]:
        raise InputError(f"colour and mask videos differ in length ({c.shape[0]} vs {m.shape[0]} frames)")
    if c.shape[-2:] != m.shape[-2:]:
        raise InputError(
            f"colour and mask videos differ in size ({c.shape[2]}x{c.shape[3]} vs {m.shape[2]}x{m.shape[3]})"
        )
    total = c.shape[0]
    if num_frames is None:
        num_frames = total
    check_size(num_frames, height, width)

    # 1-2. sample/pad (the reference erodes before padding; padding repeats the last eroded frame)
    idx = reference_frame_indices(total, num_frames)
    distinct = sorted(set(idx))
    # the reference's cv2.resize on uint8 frames, bit for bit (the values are whole numbers in 0..255 here)
    c = resize_planes_u8(c[distinct].to(torch.uint8), height, width).float()
    m = resize_planes_u8(m[distinct].to(torch.uint8), height, width).float()

    # 3. erosion, one kernel per source frame (drawn in frame order as the reference's loop)
    if kernels is None:
        kernels = erosion_kernels(len(distinct), mask_erode, erode_seed)
    elif len(kernels) != len(distinct):
        raise InputError(f"kernels has {len(kernels)} entries for {len(distinct)} frames")
    m = torch.stack([erode(m[i], int(k)) for i, k in enumerate(kernels)])

    pos = {j: i for i, j in enumerate(distinct)}
    order = [pos[j] for j in idx]
    c, m = c[order], m[order]

    # 4. binarise, 5. scale
    mb = (m / 255.0 > 0.5).float()
    video = (c / 255.0 * mb) * 2 - 1
    mask_out = mb * 2 - 1
    return video.permute(1, 0, 2, 3)[None].contiguous(), mask_out.permute(1, 0, 2, 3)[None].contiguous()


def encoder_mask_input(mask: torch.Tensor) -> torch.Tensor:
    """What the condition encoder feeds the VAE for the mask: 2·m′ − 1 ∈ {−3, +1} (the reference's double scaling)."""
    return mask * 2 - 1
