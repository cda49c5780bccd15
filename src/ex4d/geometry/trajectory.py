"""Camera trajectories: the reference presets, our own presets, and user files.

Every trajectory is a sequence of OpenCV world-to-camera matrices ``w2c: (T, 4, 4)`` in the world frame of the
source camera (see :mod:`ex4d.geometry.conventions`). Presets start at the identity, so frame 0 is the source view.

Reference presets (spec §5), with r = nearest frame-0 depth + 0.15 and the look-at centre c = (0, 0, r):

* an integer angle ``"30"``, ``"60"``, ``"90"`` (negative = the other way): a one-sided orbit reaching that yaw;
* ``"180"``: the released "180" path, a ±45° side-to-side sweep in the source image plane;
* ``"180_outer"``: the true 0 → +90° → 0 → −90° → 0 orbit from the reference's history.

Our presets take parameters (``"orbit:angle=120,elevation=10"``): ``orbit``, ``spiral``, ``dolly``, ``zoom_in``,
``zoom_out``, ``pan``, ``tilt``. See ``docs/trajectories.md``.

Every preset completes over the whole clip (T frames), whatever its length; ``frames=N`` (any preset, e.g.
``"90:frames=49"``) completes it over the first N frames, after which the camera holds its last pose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ex4d.errors import InputError, about

#: Added to the nearest frame-0 depth to get the orbit radius (spec §5.1).
RADIUS_MARGIN = 0.15
#: The reference counts its angle schedule against this many frames (spec §5.1, "rounds").
REFERENCE_FRAMES = 49


@dataclass
class Trajectory:
    """A camera path.

    Attributes:
        w2c: (T, 4, 4) float64 world-to-camera matrices (OpenCV axes, world = source camera).
        K: optional (T, 3, 3) float64 per-frame intrinsics; ``None`` = use the video's intrinsics.
        name: short name used in output file names (``color_<name>.mp4``).
    """

    w2c: np.ndarray
    K: np.ndarray | None = None
    name: str = "custom"

    def __len__(self) -> int:
        return len(self.w2c)

    def starts_at_source(self, atol: float = 1e-6) -> bool:
        """True when frame 0 is the source camera (identity ``w2c``)."""
        return bool(np.allclose(self.w2c[0], np.eye(4), atol=atol))

    def w2c_tensor(self, device=None) -> torch.Tensor:
        """``w2c`` as a (T, 4, 4) float32 tensor."""
        return torch.as_tensor(self.w2c, dtype=torch.float32, device=device)


def look_at(eye: np.ndarray, center: np.ndarray, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """OpenCV world-to-camera matrices looking from ``eye`` at ``center``.

    Args:
        eye: (..., 3) camera positions.
        center: (..., 3) points the optical axis passes through.
        up: world "up" direction used to fix the roll. The reference uses (0, 1, 0), which is image *down*
            in OpenCV axes; with it, x_cam = normalize(up × z_cam), so the image stays upright.

    Returns:
        w2c: (..., 4, 4) float64.
    """
    eye, center = np.broadcast_arrays(np.asarray(eye, np.float64), np.asarray(center, np.float64))
    z = center - eye
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    x = np.cross(np.asarray(up, np.float64), z)
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.cross(z, x)
    rot = np.stack([x, y, z], axis=-2)
    w2c = np.zeros(eye.shape[:-1] + (4, 4))
    w2c[..., :3, :3] = rot
    w2c[..., :3, 3] = -np.einsum("...ij,...j->...i", rot, eye)
    w2c[..., 3, 3] = 1.0
    return w2c


def reference_radius(depth0: torch.Tensor | np.ndarray, border_depth: float = 100.0) -> float:
    """Orbit radius the reference uses: min(frame-0 depth with its 1-px border set to 100) + 0.15.

    Args:
        depth0: (H, W) z-depth of frame 0.
    """
    d = torch.as_tensor(depth0, dtype=torch.float64)
    interior = d[1:-1, 1:-1]
    nearest = min(float(interior.min()) if interior.numel() else border_depth, border_depth)
    return nearest + RADIUS_MARGIN


def _rounds(num_frames: int) -> float:
    # The reference's quirk: the sweep angle is scaled by 49/n or n/49 (spec §5.1).
    return REFERENCE_FRAMES / num_frames if REFERENCE_FRAMES > num_frames else num_frames / REFERENCE_FRAMES


def _angles(total: float, num_frames: int) -> np.ndarray:
    return total * np.arange(num_frames) / max(num_frames - 1, 1)


def reference_orbit(angle_deg: float, num_frames: int, radius: float, reference_rounds: bool = False) -> np.ndarray:
    """The reference's integer preset: orbit to ``angle_deg`` yaw, rising slightly (spec §5.2)."""
    rho = _rounds(num_frames) if reference_rounds else 1.0
    a = _angles(math.radians(angle_deg) * rho, num_frames)
    r = radius
    eye = np.stack([r * np.sin(a), 0.2 * r * (np.abs(np.cos(a)) - 1), r - r * np.abs(np.cos(a))], -1)
    return look_at(eye, np.array([0.0, 0.0, r]))


def reference_sweep(num_frames: int, radius: float, outer: bool = False, reference_rounds: bool = False):
    """The reference's "180" (±45° sweep in the image plane) or, with ``outer``, "180_outer" (±90° orbit)."""
    rho = _rounds(num_frames) if reference_rounds else 1.0
    a = _angles(2 * math.pi * rho, num_frames)
    r = radius
    z = r - r * np.abs(np.cos(a)) if outer else np.zeros_like(a)
    eye = np.stack([r * np.sin(a), 0.2 * r * (np.cos(a) - 1), z], -1)
    return look_at(eye, np.array([0.0, 0.0, r]))


def orbit(num_frames: int, radius: float, angle: float = 90.0, elevation: float = 0.0) -> np.ndarray:
    """Orbit the pivot (0, 0, r) by ``angle`` degrees of yaw (positive = camera moves right), at a fixed
    ``elevation`` reached progressively (positive = camera rises)."""
    a = _angles(math.radians(angle), num_frames)
    e = _angles(math.radians(elevation), num_frames)
    r = radius
    eye = np.stack([r * np.sin(a) * np.cos(e), -r * np.sin(e), r - r * np.cos(a) * np.cos(e)], -1)
    return look_at(eye, np.array([0.0, 0.0, r]))


def spiral(num_frames: int, radius: float, angle: float = 15.0, turns: float = 2.0) -> np.ndarray:
    """Eye spirals outwards in the source image plane while looking at the pivot; ``angle`` is the final
    viewing angle off the source axis, ``turns`` the number of revolutions."""
    s = np.arange(num_frames) / max(num_frames - 1, 1)
    rho = radius * math.tan(math.radians(angle)) * s
    phi = 2 * math.pi * turns * s
    # Starts at the source camera (rho = 0) and circles it with a growing radius, first upwards.
    eye = np.stack([rho * np.sin(phi), -rho * np.cos(phi), np.zeros_like(s)], -1)
    return look_at(eye, np.array([0.0, 0.0, radius]))


def dolly(num_frames: int, radius: float, distance: float | None = None) -> np.ndarray:
    """Move straight along the optical axis by ``distance`` (default 0.5 r; negative = backwards), no rotation."""
    d = 0.5 * radius if distance is None else distance
    w2c = np.tile(np.eye(4), (num_frames, 1, 1))
    w2c[:, 2, 3] = -_angles(d, num_frames)
    return w2c


def _rotation_in_place(num_frames: int, angle: float, axis: int, sign: float) -> np.ndarray:
    a = _angles(math.radians(angle), num_frames) * sign
    c, s = np.cos(a), np.sin(a)
    c2w = np.tile(np.eye(4), (num_frames, 1, 1))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    c2w[:, i, i], c2w[:, i, j], c2w[:, j, i], c2w[:, j, j] = c, -s, s, c
    return np.linalg.inv(c2w)


def pan(num_frames: int, radius: float, angle: float = 30.0) -> np.ndarray:
    """Turn the camera in place about its vertical axis (positive = look right)."""
    return _rotation_in_place(num_frames, angle, axis=1, sign=1.0)


def tilt(num_frames: int, radius: float, angle: float = 15.0) -> np.ndarray:
    """Turn the camera in place about its horizontal axis (positive = look up)."""
    return _rotation_in_place(num_frames, angle, axis=0, sign=1.0)


PresetFn = Callable[..., np.ndarray]

#: Parametrised presets of ours: name -> (function, allowed parameters).
OUR_PRESETS: dict[str, tuple[PresetFn, tuple[str, ...]]] = {
    "orbit": (orbit, ("angle", "elevation", "radius")),
    "spiral": (spiral, ("angle", "turns", "radius")),
    "dolly": (dolly, ("distance", "radius")),
    "zoom_in": (lambda n, r, distance=None: dolly(n, r, 0.5 * r if distance is None else abs(distance)),
                ("distance", "radius")),
    "zoom_out": (lambda n, r, distance=None: dolly(n, r, -0.5 * r if distance is None else -abs(distance)),
                 ("distance", "radius")),
    "pan": (pan, ("angle",)),
    "tilt": (tilt, ("angle",)),
}
REFERENCE_PRESETS = ("<integer angle>", "180", "180_outer")


def available_presets() -> list[str]:
    """Names accepted by :func:`make_trajectory` (besides trajectory files)."""
    return ["30", "60", "90", "180", "180_outer", *OUR_PRESETS]


def _parse_params(text: str, allowed: tuple[str, ...], preset: str) -> dict[str, float]:
    params = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in allowed:
            raise InputError(f"preset '{preset}': bad parameter '{item}'; allowed: {', '.join(allowed)} (key=value)")
        try:
            params[key] = float(value)
        except ValueError:
            raise InputError(f"preset '{preset}': parameter {key}='{value}' is not a number") from None
        if not math.isfinite(params[key]):
            raise InputError(f"preset '{preset}': expected a finite number for {key}, found {value}")
    return params


def make_trajectory(spec: str, num_frames: int, radius: float, reference_rounds: bool = False) -> Trajectory:
    """Build a preset trajectory.

    Args:
        spec: ``"30"``/``"-60"``/any integer, ``"180"``, ``"180_outer"``, or one of our presets with optional
            parameters, e.g. ``"orbit:angle=120,elevation=10"``. ``radius=`` overrides the pivot distance;
            ``frames=N`` (any preset) completes the path over the first N frames and then holds.
        num_frames: T, the number of video frames.
        radius: pivot distance r (see :func:`reference_radius`).
        reference_rounds: reproduce the reference's angle scaling for T != 49 (spec §5.1); off by default so
            that ``"90"`` reaches 90° whatever T is. Identical at T = 49.

    Returns:
        The trajectory, named after the preset (``spec`` before any ``:``).

    Raises:
        InputError: unknown preset or malformed parameters.
    """
    # Every caller takes the preset as its "cam" argument (--cam on the command line).
    with about("cam"):
        return _make_trajectory(spec, num_frames, radius, reference_rounds)


def _make_trajectory(spec: str, num_frames: int, radius: float, reference_rounds: bool) -> Trajectory:
    if num_frames < 1:
        raise InputError(f"a trajectory needs at least 1 frame, got {num_frames}")
    name, _, param_text = spec.strip().partition(":")
    span, param_text = _split_span(param_text, spec, num_frames)
    # "180" is a name, not an angle: it must be matched before integer angles.
    if name in ("180", "180_outer") and not param_text:
        w2c = reference_sweep(span, radius, outer=name == "180_outer", reference_rounds=reference_rounds)
    elif name.lstrip("+-").isdigit() and not param_text:
        w2c = reference_orbit(float(name), span, radius, reference_rounds)
    elif name in OUR_PRESETS:
        fn, allowed = OUR_PRESETS[name]
        params = _parse_params(param_text, allowed + ("frames",), name)
        w2c = fn(span, params.pop("radius", radius), **params)
    else:
        raise InputError(
            f"unknown camera preset '{spec}'; choose an integer angle, {', '.join(available_presets()[3:])}, "
            "or a trajectory file (.json/.npz)"
        )
    w2c = w2c.astype(np.float64)
    if span < num_frames:  # the path is complete after `span` frames; the camera then holds its last pose
        w2c = np.concatenate([w2c, np.repeat(w2c[-1:], num_frames - span, axis=0)])
    if not np.isfinite(w2c).all():  # e.g. radius=1e308: the path overflows
        raise InputError(f"preset '{spec}' with radius {radius:g} gives non-finite cameras; expected a moderate "
                         "radius (the scene's depth scale)")
    return Trajectory(w2c=w2c, name=name)


def _split_span(param_text: str, spec: str, num_frames: int) -> tuple[int, str]:
    """The number of frames over which the path completes (``frames=N``, default the whole clip, at most the
    clip's length), and the parameters left for the preset itself."""
    items = [item for item in param_text.split(",") if item.strip()]
    rest = [item for item in items if item.partition("=")[0].strip() != "frames"]
    spans = [item.partition("=")[2] for item in items if item.partition("=")[0].strip() == "frames"]
    if not spans:
        return num_frames, param_text
    try:
        span = int(spans[-1])
    except ValueError:
        span = 0
    if len(spans) > 1 or span < 1:
        raise InputError(f"preset '{spec}': expected frames=N once, with N a whole number >= 1, found "
                         f"frames={spans[-1]}")
    return min(span, num_frames), ",".join(rest)
