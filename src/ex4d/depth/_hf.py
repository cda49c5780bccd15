"""Shared pieces of the per-frame transformers backends: preprocessing in torch (no torchvision) and batching."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: PIL resampling codes as stored in ``preprocessor_config.json`` -> torch interpolation modes.
_RESAMPLE = {0: "nearest", 1: "bilinear", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bicubic"}


def read_preprocessor_config(folder: Path) -> dict:
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def resample_mode(cfg: dict, default: str) -> str:
    return _RESAMPLE.get(cfg.get("resample"), default)


def size_of(cfg: dict, default: tuple[int, int]) -> tuple[int, int]:
    size = cfg.get("size")
    if isinstance(size, dict) and "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if isinstance(size, int):
        return size, size
    return default


def keep_aspect_size(height: int, width: int, target: tuple[int, int], multiple: int,
                     keep_aspect_ratio: bool = True) -> tuple[int, int]:
    """Network input size of the DPT-family processors (Depth Anything): scale towards ``target``; with
    ``keep_aspect_ratio`` both sides use whichever of the two scales is closer to 1; each side is then rounded to
    the nearest multiple of ``multiple`` (at least one multiple)."""
    sh, sw = target[0] / height, target[1] / width
    if keep_aspect_ratio:
        if abs(1 - sw) < abs(1 - sh):
            sh = sw
        else:
            sw = sh

    def snap(v: float) -> int:
        return max(multiple, int(round(v / multiple)) * multiple)

    return snap(sh * height), snap(sw * width)


def to_model_input(frames_u8: np.ndarray, size: tuple[int, int], mode: str, mean, std, device, dtype,
                   normalize_first: bool = False, antialias: bool = True) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, h, w) normalised ``dtype`` on ``device``.

    ``normalize_first`` rescales and normalises before resizing (Depth Pro's order), otherwise after (DPT's order).
    """
    x = torch.from_numpy(np.ascontiguousarray(frames_u8)).to(device).permute(0, 3, 1, 2).float() / 255.0
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    if normalize_first:
        x = (x - mean_t) / std_t
    if tuple(x.shape[-2:]) != tuple(size):
        kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": antialias}
        x = F.interpolate(x, size=size, mode=mode, **kwargs)
        if not normalize_first:
            x = x.clamp(0.0, 1.0)  # bicubic overshoot, as an 8-bit resized image would clip
    if not normalize_first:
        x = (x - mean_t) / std_t
    return x.to(dtype)


def batches(num: int, batch_size: int):
    for start in range(0, num, batch_size):
        yield start, min(num, start + batch_size)


def progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled, leave=False)


def fov_to_focal(fov_deg: torch.Tensor, width: int) -> torch.Tensor:
    return 0.5 * width / torch.tan(0.5 * torch.deg2rad(fov_deg.double()))


def finite_or(x: float, fallback: float) -> float:
    return x if math.isfinite(x) else fallback
