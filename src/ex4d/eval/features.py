"""Feature-network metrics: LPIPS, FID and FVD, with weights read only from local files.

The networks are written in plain torch (no torchvision) with the module names of the published checkpoints, so
the standard files load as they are:

=========  ======================================================  ==========================  =====================
metric     file (standard name)                                    origin                      env var
=========  ======================================================  ==========================  =====================
LPIPS      ``alex.pth`` / ``vgg.pth`` (v0.1 linear layers)          LPIPS repo / ``lpips`` pkg  ``EX4D_LPIPS_WEIGHTS``
LPIPS      ``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``    torchvision ImageNet        ``EX4D_LPIPS_BACKBONE``
FID        ``pt_inception-2015-12-05-6726825d.pth``                 pytorch-fid (TF FID port)   ``EX4D_INCEPTION_WEIGHTS``
FVD        ``i3d_torchscript.pt`` (TorchScript, Kinetics-400)       StyleGAN-V                  ``EX4D_I3D_WEIGHTS``
=========  ======================================================  ==========================  =====================

A weight file is looked up, in order: the explicit ``path`` argument; its env var (a file, or a folder holding the
standard name); ``$EX4D_WEIGHTS_DIR/<name>``; ``$TORCH_HOME/hub/checkpoints/<name>`` (default
``~/.cache/torch/hub/checkpoints``, where torchvision and pytorch-fid keep their downloads). Nothing is ever
downloaded: a missing file raises :class:`MissingWeightsError` naming the file, where it comes from and the env var.

* **LPIPS** (Zhang et al. 2018, v0.1): frames scaled to [-1, 1], shifted/scaled by the LPIPS ScalingLayer, the five
  ReLU taps of AlexNet (default, as the ``lpips`` package) or VGG16, each unit-normalised over channels, squared
  difference, 1×1 "lin" layer, spatial mean, summed over the taps.
* **FID**: pytorch-fid's Inception-v3 (the TF FID graph: count_include_pad=False average pools, max pool in the
  last block), frames in [0, 1] resized bilinearly to 299×299 and scaled to [-1, 1], 2048-d pool3 features;
  Fréchet distance with unbiased covariances (``np.cov``), as pytorch-fid.
* **FVD**: StyleGAN-V's TorchScript I3D called as StyleGAN-V does (uint8 ``(N, 3, T, H, W)``,
  ``rescale=True, resize=True, return_features=True``: 400-d logits), on clips of 16 consecutive frames;
  Fréchet distance with population covariances (1/N), as StyleGAN-V.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn as nn
import torch.nn.functional as F

from ex4d.errors import InputError

__all__ = [
    "FVD_CLIP_FRAMES", "INCEPTION_WEIGHTS", "I3D_WEIGHTS", "LPIPS_BACKBONES", "LPIPS_LINEAR", "LPIPS_NETS",
    "FIDInceptionV3", "LPIPS", "MissingWeightsError", "WeightFile",
    "feature_stats", "find_weights", "frechet_distance", "frechet_distance_from_features", "i3d_features",
    "inception_features", "load_i3d", "load_inception", "load_lpips", "lpips_frames", "video_clips",
]

#: Frames per FVD clip (the FVD paper's and StyleGAN-V's default).
FVD_CLIP_FRAMES = 16


# --------------------------------------------------------------------------------------------------------------
# Weight files
# --------------------------------------------------------------------------------------------------------------

class MissingWeightsError(InputError):
    """A metric's network weights are not available locally; the message says which file and how to provide it."""


@dataclass(frozen=True)
class WeightFile:
    """A published weight file: its standard name, what it is, where it is published and the env var naming it."""

    filename: str
    description: str
    url: str
    env: str


LPIPS_NETS = ("alex", "vgg")
LPIPS_LINEAR = {
    net: WeightFile(f"{net}.pth", f"LPIPS v0.1 linear layers for {net}",
                    f"https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/{net}.pth",
                    "EX4D_LPIPS_WEIGHTS")
    for net in LPIPS_NETS
}
LPIPS_BACKBONES = {
    "alex": WeightFile("alexnet-owt-7be5be79.pth", "torchvision AlexNet ImageNet weights",
                       "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "EX4D_LPIPS_BACKBONE"),
    "vgg": WeightFile("vgg16-397923af.pth", "torchvision VGG16 ImageNet weights",
                      "https://download.pytorch.org/models/vgg16-397923af.pth", "EX4D_LPIPS_BACKBONE"),
}
INCEPTION_WEIGHTS = WeightFile(
    "pt_inception-2015-12-05-6726825d.pth", "pytorch-fid's Inception-v3 (port of the TF FID network)",
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    "EX4D_INCEPTION_WEIGHTS")
I3D_WEIGHTS = WeightFile(
    "i3d_torchscript.pt", "StyleGAN-V's TorchScript I3D (Kinetics-400, the TF-Hub FVD network)",
    "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt", "EX4D_I3D_WEIGHTS")


def _search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("EX4D_WEIGHTS_DIR"):
        dirs.append(Path(os.environ["EX4D_WEIGHTS_DIR"]).expanduser())
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "torch")
    dirs.append(Path(torch_home).expanduser() / "hub" / "checkpoints")
    return dirs


def find_weights(spec: WeightFile, path: str | os.PathLike | None = None, purpose: str = "") -> Path:
    """Locate a weight file locally (see the module docstring for the search order).

    Raises:
        MissingWeightsError: not found anywhere (or an explicit path / env var that does not exist).
    """
    need = f"{purpose} needs" if purpose else "needs"
    how = (f"{spec.description}, from {spec.url}; set {spec.env}=/path/to/{spec.filename} or put it in "
           f"$EX4D_WEIGHTS_DIR")
    explicit = [(str(path), "given path")] if path is not None else []
    if os.environ.get(spec.env):
        explicit.append((os.environ[spec.env], spec.env))
    for value, origin in explicit[:1]:
        p = Path(value).expanduser()
        if p.is_dir():
            p = p / spec.filename
        if not p.is_file():
            raise MissingWeightsError(f"{need} {spec.filename} but {p} ({origin}) does not exist ({how})")
        return p
    tried = []
    for folder in _search_dirs():
        p = folder / spec.filename
        if p.is_file():
            return p
        tried.append(str(folder))
    raise MissingWeightsError(f"{need} the weight file {spec.filename}, not found locally ({how}; "
                              f"searched {', '.join(tried)})")


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling/zip errors: anything means "not a state dict we can read"
        raise InputError(f"{path}: not a readable PyTorch state dict ({' '.join(str(exc).split())[:200]})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path}: not a state dict of tensors")
    return obj


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], path: Path, prefix: str = "") -> None:
    """Copy ``state`` (keys relative to ``module``, optionally filtered by ``prefix``) into ``module``.

    Every parameter and buffer of ``module`` must be present with its shape (BatchNorm's ``num_batches_tracked``
    may be missing); keys of ``state`` outside ``module`` (e.g. a classifier) are ignored.
    """
    expected = module.state_dict()
    picked = {k: v for k, v in state.items() if k.startswith(prefix) and k in expected}
    for key, value in expected.items():
        if key not in picked:
            if key.endswith("num_batches_tracked"):
                continue
            raise InputError(f"{path}: not the expected weights (no '{key}'; has {len(state)} keys such as "
                             f"'{next(iter(state), '')}')")
        if tuple(picked[key].shape) != tuple(value.shape):
            raise InputError(f"{path}: '{key}' has shape {tuple(picked[key].shape)}, expected {tuple(value.shape)}")
    module.load_state_dict(picked, strict=False)


# --------------------------------------------------------------------------------------------------------------
# LPIPS
# --------------------------------------------------------------------------------------------------------------

def _alexnet_features() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
    )


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
            cin = v
    return nn.Sequential(*layers)


# Index (in ``features``) of the ReLU whose output each LPIPS tap takes, and the tap's channel count.
_LPIPS_TAPS = {"alex": ((1, 4, 7, 9, 11), (64, 192, 384, 256, 256)),
               "vgg": ((3, 8, 15, 22, 29), (64, 128, 256, 512, 512))}
#: Smallest frame side each backbone accepts.
_LPIPS_MIN_SIZE = {"alex": 32, "vgg": 16}


class _Backbone(nn.Module):
    def __init__(self, net: str):
        super().__init__()
        self.features = _alexnet_features() if net == "alex" else _vgg16_features()
        self.taps = _LPIPS_TAPS[net][0]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                outs.append(x)
                if i == self.taps[-1]:
                    break
        return outs


class _NetLinLayer(nn.Module):
    """LPIPS's 1×1 "lin" layer; ``model.0`` is the (inactive at eval) dropout, ``model.1`` the conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """LPIPS v0.1 distance; ``forward(x0, x1)`` takes (N, 3, H, W) in [-1, 1] and returns (N,)."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in LPIPS_NETS:
            raise InputError(f"LPIPS network must be one of {LPIPS_NETS}, got {net!r}")
        self.net_name = net
        self.net = _Backbone(net)
        for k, c in enumerate(_LPIPS_TAPS[net][1]):
            self.add_module(f"lin{k}", _NetLinLayer(c))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        f0 = self.net((x0 - self.shift) / self.scale)
        f1 = self.net((x1 - self.shift) / self.scale)
        total = 0
        for k, (a, b) in enumerate(zip(f0, f1)):
            a = a / (torch.sqrt((a * a).sum(dim=1, keepdim=True)) + 1e-10)
            b = b / (torch.sqrt((b * b).sum(dim=1, keepdim=True)) + 1e-10)
            total = total + getattr(self, f"lin{k}").model((a - b) ** 2).mean(dim=(2, 3))
        return total.view(-1)


def load_lpips(net: str = "alex", linear_path=None, backbone_path=None, device="cpu") -> LPIPS:
    """LPIPS with the published weights: the v0.1 lin layers and torchvision's ImageNet backbone.

    Raises:
        MissingWeightsError: a weight file is not found locally. InputError: a file is not the expected weights.
    """
    model = LPIPS(net)
    lin = find_weights(LPIPS_LINEAR[net], linear_path, purpose=f"LPIPS ({net})")
    backbone = find_weights(LPIPS_BACKBONES[net], backbone_path, purpose=f"LPIPS ({net})")
    _load_into(model.net.features, {k[len("features."):]: v for k, v in _load_state_dict(backbone).items()
                                    if k.startswith("features.")}, backbone)
    lin_state = _load_state_dict(lin)
    for k in range(5):
        layer = getattr(model, f"lin{k}")
        _load_into(layer, {key[len(f"lin{k}."):]: v for key, v in lin_state.items()
                           if key.startswith(f"lin{k}.")}, lin)
    return model.to(device).eval()


@torch.no_grad()
def lpips_frames(model: LPIPS, pred: np.ndarray, ref: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """LPIPS of every frame pair of two (T, H, W, 3) uint8 videos: (T,) float64."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape or pred.ndim != 4:
        raise ValueError(f"pred {pred.shape} and ref {ref.shape} must be the same (T, H, W, 3)")
    minimum = _LPIPS_MIN_SIZE[model.net_name]
    if min(pred.shape[1:3]) < minimum:
        raise InputError(f"LPIPS ({model.net_name}) needs frames of at least {minimum}x{minimum} pixels, "
                         f"got {pred.shape[1]}x{pred.shape[2]}")
    device = model.shift.device
    out = []
    for s in range(0, len(pred), batch_size):
        x0 = torch.as_tensor(pred[s:s + batch_size], device=device).permute(0, 3, 1, 2).float() / 127.5 - 1
        x1 = torch.as_tensor(ref[s:s + batch_size], device=device).permute(0, 3, 1, 2).float() / 127.5 - 1
        out.append(model(x0, x1).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


# --------------------------------------------------------------------------------------------------------------
# Inception-v3 (pytorch-fid's FID variant)
# --------------------------------------------------------------------------------------------------------------

class _BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x):  # TF's average pool ignores the zero padding
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = _BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = _BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = _BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = _BasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool(x)),
        ], 1)


class _InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = _BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], 1)


class _InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = _BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = _BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = _BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = _BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool(x))], 1)


class _InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = _BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = _BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = _BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class _InceptionE(nn.Module):
    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool  # "avg" (Mixed_7b) or "max" (Mixed_7c: the TF FID graph's quirk)
        self.branch1x1 = _BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = _BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = _BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = _BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = _avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's FID Inception-v3; ``forward`` maps (N, 3, H, W) in [0, 1] to (N, 2048) pool3 features.

    The module names are those of ``pt_inception-2015-12-05-6726825d.pth`` (torchvision's Inception3 with
    ``num_classes=1008, aux_logits=False``); ``fc`` is kept only so the file loads completely.
    """

    #: Side the input is resized to (bilinear, as pytorch-fid); 299 is the standard.
    input_size = 299

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = _BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = _BasicConv2d(80, 192, 3)
        self.Mixed_5b = _InceptionA(192, 32)
        self.Mixed_5c = _InceptionA(256, 64)
        self.Mixed_5d = _InceptionA(288, 64)
        self.Mixed_6a = _InceptionB(288)
        self.Mixed_6b = _InceptionC(768, 128)
        self.Mixed_6c = _InceptionC(768, 160)
        self.Mixed_6d = _InceptionC(768, 160)
        self.Mixed_6e = _InceptionC(768, 192)
        self.Mixed_7a = _InceptionD(768)
        self.Mixed_7b = _InceptionE(1280, "avg")
        self.Mixed_7c = _InceptionE(2048, "max")
        self.fc = nn.Linear(2048, 1008)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def load_inception(path=None, device="cpu") -> FIDInceptionV3:
    """The FID Inception-v3 with pytorch-fid's weights (see :data:`INCEPTION_WEIGHTS`)."""
    file = find_weights(INCEPTION_WEIGHTS, path, purpose="FID")
    model = FIDInceptionV3()
    _load_into(model, _load_state_dict(file), file)
    return model.to(device).eval()


@torch.no_grad()
def inception_features(model: FIDInceptionV3, frames: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """(N, 2048) float64 pool3 features of (N, H, W, 3) uint8 frames."""
    frames = np.asarray(frames)
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(frames), batch_size):
        x = torch.as_tensor(frames[s:s + batch_size], device=device).permute(0, 3, 1, 2).float() / 255.0
        out.append(model(x).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2048))


# --------------------------------------------------------------------------------------------------------------
# I3D (TorchScript, StyleGAN-V)
# --------------------------------------------------------------------------------------------------------------

def load_i3d(path=None, device="cpu"):
    """StyleGAN-V's TorchScript I3D (see :data:`I3D_WEIGHTS`)."""
    file = find_weights(I3D_WEIGHTS, path, purpose="FVD")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but reads the file fine
            model = torch.jit.load(str(file), map_location=torch.device(device))
    except Exception as exc:
        raise InputError(f"{file}: not a TorchScript I3D ({' '.join(str(exc).split())[:200]})") from None
    return model.eval()


def video_clips(frames: np.ndarray, clip_frames: int = FVD_CLIP_FRAMES) -> np.ndarray:
    """Non-overlapping clips of ``clip_frames`` consecutive frames from the start: (N, clip_frames, H, W, 3).

    Frames after the last whole clip are dropped; ``clip_frames=0`` makes the whole video one clip.
    """
    frames = np.asarray(frames)
    if not clip_frames:
        return frames[None]
    n = len(frames) // clip_frames
    return frames[: n * clip_frames].reshape(n, clip_frames, *frames.shape[1:])


@torch.no_grad()
def i3d_features(model, clips: np.ndarray, batch_size: int = 4) -> np.ndarray:
    """(N, D) float64 I3D features (D = 400 for the standard file) of (N, T, H, W, 3) uint8 clips."""
    clips = np.asarray(clips)
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    out = []
    for s in range(0, len(clips), batch_size):
        x = torch.as_tensor(clips[s:s + batch_size], device=device).permute(0, 4, 1, 2, 3).contiguous()
        out.append(model(x, rescale=True, resize=True, return_features=True).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 400))


# --------------------------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------------------------

def feature_stats(features: np.ndarray, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of (N, D) features; ``ddof=1`` unbiased (pytorch-fid), 0 population."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) <= ddof:
        raise ValueError(f"need an (N, D) feature array with N > {ddof}, got shape {f.shape}")
    mu = f.mean(axis=0)
    c = f - mu
    return mu, c.T @ c / (len(f) - ddof)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = scipy.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|² + tr(sigma1 + sigma2 - 2 (sigma1^½ sigma2 sigma1^½)^½)``.

    ``tr((sigma1^½ sigma2 sigma1^½)^½)`` equals pytorch-fid's ``tr(sqrtm(sigma1 @ sigma2))`` (same eigenvalues) but is
    computed with symmetric eigendecompositions: real, exact on rank-deficient covariances and several times
    faster than ``scipy.linalg.sqrtm`` at D = 2048.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shapes do not match: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    r = _psd_sqrt((s1 + s1.T) / 2)
    m = r @ s2 @ r
    eig = scipy.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu1 - mu2
    return max(float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean), 0.0)


def frechet_distance_from_features(f1: np.ndarray, f2: np.ndarray, ddof: int = 1) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (N1, D) and (N2, D).

    With fewer samples than dimensions it works on the samples instead of the D×D covariances: with centred
    features ``A1``, ``A2`` the non-zero eigenvalues of ``sigma1 sigma2`` are the squared singular values of
    ``A1 A2ᵀ / sqrt(c1 c2)``, so ``tr((sigma1 sigma2)^½)`` is that matrix's nuclear norm (exact, and cheap).
    """
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D, got {f1.shape} and {f2.shape}")
    n1, n2, d = len(f1), len(f2), f1.shape[1]
    if min(n1, n2) <= ddof:
        raise ValueError(f"a Fréchet distance needs more than {ddof} feature vector(s) per set, got {n1} and {n2}")
    if n1 * n2 >= d * d:
        return frechet_distance(*feature_stats(f1, ddof), *feature_stats(f2, ddof))
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a1, a2 = f1 - mu1, f2 - mu2
    c1, c2 = n1 - ddof, n2 - ddof
    tr1, tr2 = float((a1 * a1).sum() / c1), float((a2 * a2).sum() / c2)
    nuclear = float(scipy.linalg.svdvals(a1 @ a2.T).sum()) / np.sqrt(c1 * c2)
    diff = mu1 - mu2
    return max(float(diff @ diff + tr1 + tr2 - 2 * nuclear), 0.0)

