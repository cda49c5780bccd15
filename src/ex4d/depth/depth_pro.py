"""``depth-pro``: Apple's Depth Pro through ``transformers.DepthProForDepthEstimation``: metric depth and a field of
view, i.e. real intrinsics.

The network predicts a canonical inverse depth c (at twice its input size) and, with its FoV head, the horizontal
field of view θ. With the focal f = (W/2)/tan(θ/2) in pixels of a frame of width W, the metric depth is
Z = f / (W·c) (inverse depth clipped to [1e-4, 1e4] first). c is resized to the frame bilinearly before the
division. Input: the frame normalised to [-1, 1] (mean = std = 0.5), then resized to 1536×1536 bilinearly (values
from the checkpoint's ``preprocessor_config.json`` when present).

Focal used: the caller's when it gives one (``focal_px``, e.g. from ``--focal``/``--fov`` or the reference's 500 px),
else the estimate: by default the median over the clip of the per-frame estimates (one lens for the whole video;
``per_frame_focal=True`` keeps one per frame). Without a FoV head and without a given focal, the reference's 500 px
is used and no intrinsics are returned.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ex4d.depth import _hf
from ex4d.depth.base import DepthResult
from ex4d.depth.intrinsics import intrinsics_matrix
from ex4d.depth.weights import default_dtype, require_files, resolve_model_dir
from ex4d.errors import InputError
from ex4d.geometry.conventions import REFERENCE_FOCAL_PX
from ex4d.utils.device import resolve_device

__all__ = ["DepthProBackend", "MODEL_ID"]

MODEL_ID = "apple/DepthPro-hf"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
MIN_INVERSE, MAX_INVERSE = 1e-4, 1e4


class DepthProBackend:
    """Depth Pro (metric depth + field of view)."""

    name = "depth-pro"

    def __init__(self, model: str = MODEL_ID, device="auto", dtype=None, batch_size: int = 4,
                 per_frame_focal: bool = False, download: bool = True):
        from transformers import DepthProForDepthEstimation

        folder = resolve_model_dir(model, "the Depth Pro model", "--depth-model", download=download,
                                   allow_patterns=["*.json", "*.safetensors"])
        require_files(folder, "Depth Pro (transformers save_pretrained)", [("config.json",), WEIGHT_FILES])
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.dtype = default_dtype(self.device, dtype)
        try:
            self.model = DepthProForDepthEstimation.from_pretrained(folder, dtype=self.dtype)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{folder}: cannot load a Depth Pro model ({type(exc).__name__}: {exc})") from None
        self._configure(_hf.read_preprocessor_config(folder), batch_size, per_frame_focal, str(model))

    @classmethod
    def from_model(cls, model, preprocessor: dict | None = None, batch_size: int = 4,
                   per_frame_focal: bool = False) -> "DepthProBackend":
        """A backend around an already built ``DepthProForDepthEstimation`` (its device and dtype are kept)."""
        self = cls.__new__(cls)
        param = next(model.parameters())
        self.model, self.device, self.dtype = model, param.device, param.dtype
        self._configure(preprocessor or {}, batch_size, per_frame_focal, type(model).__name__)
        return self

    def _configure(self, cfg: dict, batch_size: int, per_frame_focal: bool, source: str) -> None:
        self.model.to(self.device).eval()
        self.size = _hf.size_of(cfg, (1536, 1536))
        self.mode = _hf.resample_mode(cfg, "bilinear")
        self.mean = tuple(cfg.get("image_mean", (0.5, 0.5, 0.5)))
        self.std = tuple(cfg.get("image_std", (0.5, 0.5, 0.5)))
        self.batch_size, self.per_frame_focal, self.source = int(batch_size), bool(per_frame_focal), source

    @property
    def estimates_intrinsics(self) -> bool:
        return self.model.fov_model is not None if hasattr(self.model, "fov_model") else False

    @torch.inference_mode()
    def predict(self, frames: np.ndarray, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(canonical inverse depth (T, H, W) float32 at the frames' size, horizontal FoV (T,) degrees or None)."""
        T, H, W = frames.shape[:3]
        inv = torch.empty(T, H, W, dtype=torch.float32, device=self.device)
        fovs = []
        with _hf.progress_bar(T, "depth-pro", progress) as bar:
            for a, b in _hf.batches(T, self.batch_size):
                x = _hf.to_model_input(frames[a:b], self.size, self.mode, self.mean, self.std, self.device,
                                       self.dtype, normalize_first=True, antialias=False)
                out = self.model(pixel_values=x)
                inv[a:b] = F.interpolate(out.predicted_depth.float()[:, None], size=(H, W), mode="bilinear",
                                         align_corners=False)[:, 0]
                if out.field_of_view is not None:
                    fovs.append(out.field_of_view.float().reshape(-1))
                bar.update(b - a)
        return inv, (torch.cat(fovs) if fovs else None)

    def estimate(self, frames: np.ndarray, focal_px: float | None = None, progress: bool = True) -> DepthResult:
        T, H, W = frames.shape[:3]
        inv, fov = self.predict(frames, progress)
        info = {"model": self.source}
        K = None
        if fov is not None:
            focal_est = _hf.fov_to_focal(fov, W)
            info["fov_deg"] = [round(float(v), 4) for v in fov.cpu()]
            valid = torch.isfinite(focal_est) & (focal_est > 0)
            if valid.any():
                fill = focal_est[valid].median()
                focal_est = torch.where(valid, focal_est, fill)
                if not self.per_frame_focal:
                    focal_est = torch.full_like(focal_est, float(fill))
                K = np.stack([intrinsics_matrix(float(f), H, W) for f in focal_est.cpu()])
            elif focal_px is None:
                raise InputError("depth-pro: the field-of-view estimate is unusable for every frame (0° or 180°); "
                                 "give --focal or --fov")
            else:
                fov = None
        if focal_px is not None:
            focal = torch.full((T,), float(focal_px), dtype=torch.float64, device=inv.device)
        elif fov is not None:
            focal = focal_est.to(inv.device)
        else:
            focal = torch.full((T,), REFERENCE_FOCAL_PX, dtype=torch.float64, device=inv.device)
            info["focal_fallback"] = "reference"
        info["focal_px"] = [round(float(f), 4) for f in focal.cpu()]
        inverse_metric = (inv.double() * (W / focal)[:, None, None]).clamp(MIN_INVERSE, MAX_INVERSE)
        depth = (1.0 / inverse_metric).float()
        return DepthResult(depth.cpu().numpy(), K, kind="metric", backend=self.name, info=info)
