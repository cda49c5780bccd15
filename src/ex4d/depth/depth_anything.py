"""``depth-anything-v2``: per-frame Depth Anything V2 (transformers) + temporal scale/shift alignment + §2.3.

Relative models predict an affine-invariant disparity per frame, so the raw sequence flickers in scale. Frames are
aligned to each other (:func:`ex4d.depth.convert.align_scale_shift`, robust least squares against the previous
aligned frame) and the aligned clip then goes through the reference's conversion (spec §2.3), exactly as
DepthCrafter's output does. Metric checkpoints (``depth_estimation_type == "metric"``) give depth directly.

Preprocessing follows the checkpoints' ``preprocessor_config.json`` (Depth Anything V2: 518 px, aspect ratio kept,
sides multiples of 14, bicubic, ImageNet mean/std), done in torch on the model's device; the prediction is resized
back to the frames bicubically.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ex4d.depth import _hf
from ex4d.depth.base import DepthResult
from ex4d.depth.convert import align_scale_shift, disparity_to_depth
from ex4d.depth.weights import default_dtype, require_files, resolve_model_dir
from ex4d.errors import InputError
from ex4d.utils.device import resolve_device

__all__ = ["DepthAnythingV2Backend", "MODEL_IDS"]

MODEL_IDS = {
    "small": "depth-anything/Depth-Anything-V2-Small-hf",
    "base": "depth-anything/Depth-Anything-V2-Base-hf",
    "large": "depth-anything/Depth-Anything-V2-Large-hf",
}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


class DepthAnythingV2Backend:
    """Depth Anything V2 through ``transformers.DepthAnythingForDepthEstimation``."""

    name = "depth-anything-v2"
    estimates_intrinsics = False

    def __init__(self, model: str | None = None, size: str = "large", device="auto", dtype=None, batch_size: int = 8,
                 align: bool = True, align_reference: str = "previous", download: bool = True):
        from transformers import DepthAnythingForDepthEstimation

        if size not in MODEL_IDS:
            raise InputError(f"depth-anything-v2 size must be one of {', '.join(MODEL_IDS)}, got {size!r}")
        if align_reference not in ("previous", "first"):
            raise InputError(f"align_reference must be 'previous' or 'first', got {align_reference!r}")
        ref = model or MODEL_IDS[size]
        folder = resolve_model_dir(ref, "the Depth Anything V2 model", "--depth-model", download=download,
                                   allow_patterns=["*.json", "*.safetensors"])
        require_files(folder, "Depth Anything V2 (transformers save_pretrained)", [("config.json",), WEIGHT_FILES])
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.dtype = default_dtype(self.device, dtype)
        try:
            self.model = DepthAnythingForDepthEstimation.from_pretrained(folder, dtype=self.dtype)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{folder}: cannot load a Depth Anything model ({type(exc).__name__}: {exc})") from None
        self._configure(_hf.read_preprocessor_config(folder), batch_size, align, align_reference, str(ref))

    @classmethod
    def from_model(cls, model, preprocessor: dict | None = None, batch_size: int = 8, align: bool = True,
                   align_reference: str = "previous") -> "DepthAnythingV2Backend":
        """A backend around an already built ``DepthAnythingForDepthEstimation`` (its device and dtype are kept)."""
        self = cls.__new__(cls)
        param = next(model.parameters())
        self.model, self.device, self.dtype = model, param.device, param.dtype
        self._configure(preprocessor or {}, batch_size, align, align_reference, type(model).__name__)
        return self

    def _configure(self, cfg: dict, batch_size: int, align: bool, align_reference: str, source: str) -> None:
        self.model.to(self.device).eval()
        self.target = _hf.size_of(cfg, (518, 518))
        self.multiple = int(cfg.get("ensure_multiple_of", 14))
        self.keep_aspect = bool(cfg.get("keep_aspect_ratio", True))
        self.mode = _hf.resample_mode(cfg, "bicubic")
        self.mean = tuple(cfg.get("image_mean", _hf.IMAGENET_MEAN))
        self.std = tuple(cfg.get("image_std", _hf.IMAGENET_STD))
        self.metric = getattr(self.model.config, "depth_estimation_type", "relative") == "metric"
        self.batch_size, self.align, self.align_reference = int(batch_size), bool(align), align_reference
        self.source = source

    @torch.inference_mode()
    def predict(self, frames: np.ndarray, progress: bool = True) -> torch.Tensor:
        """Raw per-frame predictions (T, H, W) float32 at the frames' size: disparity (relative) or depth (metric)."""
        T, H, W = frames.shape[:3]
        size = _hf.keep_aspect_size(H, W, self.target, self.multiple, self.keep_aspect)
        out = torch.empty(T, H, W, dtype=torch.float32, device=self.device)
        with _hf.progress_bar(T, "depth-anything-v2", progress) as bar:
            for a, b in _hf.batches(T, self.batch_size):
                x = _hf.to_model_input(frames[a:b], size, self.mode, self.mean, self.std, self.device, self.dtype)
                pred = self.model(pixel_values=x).predicted_depth.float()
                out[a:b] = F.interpolate(pred[:, None], size=(H, W), mode="bicubic", align_corners=False)[:, 0]
                bar.update(b - a)
        return out

    def estimate(self, frames: np.ndarray, focal_px: float | None = None, progress: bool = True) -> DepthResult:
        pred = self.predict(frames, progress)
        info = {"model": self.source, "metric": self.metric}
        if self.metric:
            depth = pred.clamp_min(1e-4)
            kind = "metric"
        else:
            disparity = pred.clamp_min(0.0)
            if self.align and disparity.shape[0] > 1:
                disparity, scales, shifts = align_scale_shift(disparity, reference=self.align_reference)
                info.update(align_scales=[round(float(s), 6) for s in scales.cpu()],
                            align_shifts=[round(float(s), 6) for s in shifts.cpu()])
            depth = disparity_to_depth(disparity)
            kind = "relative"
        return DepthResult(depth.cpu().numpy(), None, kind=kind, backend=self.name, info=info)
