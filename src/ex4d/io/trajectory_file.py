"""Read and write trajectory files (format documented in ``docs/trajectories.md``).

Per-frame files (``.npz`` or ``.json``) hold one of:

* ``w2c``: (T, 4, 4) OpenCV world-to-camera matrices (ours), or
* ``extrinsics``: (T, 4, 4) in the reference's saved layout (``diag(1,-1,-1,1) @ w2c``), as in the reference's
  ``camera_<cam>.npz``;

and optionally ``intrinsics`` (or ``K``): (3, 3) or (T, 3, 3) in pixels.

Keyframe files (``.json``) hold ``{"keyframes": [{"t": 0.0, "eye": [x, y, z], "look_at": [x, y, z]}, ...]}``;
each keyframe gives ``t`` in [0, 1] (or ``frame``, an index) and either ``eye`` + ``look_at`` (+ optional
``up``), ``w2c`` or ``c2w``. They are interpolated smoothly (:mod:`ex4d.geometry.keyframes`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ex4d.errors import InputError, load_failure
from ex4d.geometry.conventions import reference_to_w2c, w2c_to_reference
from ex4d.geometry.keyframes import interpolate_keyframes
from ex4d.geometry.trajectory import Trajectory, look_at
from ex4d.io.atomic import atomic_path, save_npz_atomic

TRAJECTORY_SUFFIXES = (".npz", ".json")
#: Keys a trajectory file may hold; anything else (e.g. a typo such as "intrinsic") is an error, not ignored.
FILE_KEYS = ("w2c", "extrinsics", "intrinsics", "K", "keyframes")
KEYFRAME_KEYS = ("t", "frame", "eye", "look_at", "up", "w2c", "c2w")
# What numpy raises for JSON that is not a number array: strings, ragged lists, objects, huge integers.
_NOT_NUMERIC = (TypeError, ValueError, OverflowError)


def _as_matrices(value, key: str, path: Path) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except _NOT_NUMERIC:
        raise InputError(f"{path}: '{key}' is not a numeric array") from None
    if arr.ndim != 3 or arr.shape[1:] != (4, 4):
        raise InputError(f"{path}: '{key}' must have shape (T, 4, 4), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{path}: '{key}' contains NaN or inf")
    rot = arr[:, :3, :3]
    with np.errstate(over="ignore", invalid="ignore"):  # huge entries overflow to inf: not a rotation either
        err = np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
        det = np.linalg.det(rot)
    bad = np.flatnonzero(~(err <= 1e-4) | ~(det > 0))
    if len(bad) or not np.allclose(arr[:, 3], [0, 0, 0, 1], atol=1e-6):
        found = (f"matrix {bad[0]} has |R Rᵀ − I| = {err[bad[0]]:.3g}, det R = {det[bad[0]]:.3g}" if len(bad)
                 else "a last row other than [0, 0, 0, 1]")
        raise InputError(f"{path}: '{key}' matrices are not rigid transforms (rotation + translation): "
                         f"expected orthonormal rotations with det +1, found {found}")
    return arr


def _intrinsics(data: dict, path: Path, num_frames: int) -> np.ndarray | None:
    key = "intrinsics" if "intrinsics" in data else "K" if "K" in data else None
    if key is None:
        return None
    try:
        K = np.asarray(data[key], dtype=np.float64)
    except _NOT_NUMERIC:
        raise InputError(f"{path}: '{key}' is not a numeric array") from None
    if K.shape == (3, 3):
        K = np.repeat(K[None], num_frames, axis=0)
    if K.shape != (num_frames, 3, 3) or not np.isfinite(K).all() or (K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any():
        raise InputError(f"{path}: '{key}' must be (3, 3) or ({num_frames}, 3, 3) with positive focal lengths")
    return K


def _vector3(frame: dict, key: str, index: int, path: Path) -> np.ndarray:
    try:
        v = np.asarray(frame[key], np.float64)
    except _NOT_NUMERIC:
        v = None
    if v is None or v.shape != (3,) or not np.isfinite(v).all():
        raise InputError(f"{path}: keyframe {index}: expected '{key}' as 3 finite numbers, found {frame[key]!r:.60}")
    return v


def _keyframe_c2w(frame: dict, index: int, path: Path) -> np.ndarray:
    if "eye" in frame and "look_at" in frame:
        eye, centre = _vector3(frame, "eye", index, path), _vector3(frame, "look_at", index, path)
        up = _vector3(frame, "up", index, path) if "up" in frame else np.array([0.0, 1.0, 0.0])
        with np.errstate(all="ignore"):  # degenerate inputs give NaN, rejected just below
            w2c = look_at(eye, centre, up)
        if np.allclose(eye, centre) or not np.isfinite(w2c).all():
            raise InputError(f"{path}: keyframe {index}: 'eye' and 'look_at' must be distinct 3-vectors, with "
                             "'up' not along the viewing direction")
        return np.linalg.inv(_as_matrices(w2c[None], f"keyframes[{index}]", path)[0])
    for key in ("w2c", "c2w"):
        if key in frame:
            mat = _as_matrices([frame[key]], f"keyframes[{index}].{key}", path)[0]
            return np.linalg.inv(mat) if key == "w2c" else mat
    raise InputError(f"{path}: keyframe {index} needs 'eye' + 'look_at', 'w2c' or 'c2w'")


def _from_keyframes(frames: list, path: Path, num_frames: int) -> np.ndarray:
    if not isinstance(frames, list) or not frames or not all(isinstance(f, dict) for f in frames):
        raise InputError(f"{path}: 'keyframes' must be a non-empty list of objects")
    times = []
    for i, frame in enumerate(frames):
        unknown = sorted(set(frame) - set(KEYFRAME_KEYS))
        if unknown:
            raise InputError(f"{path}: keyframe {i}: expected keys among {', '.join(KEYFRAME_KEYS)}, "
                             f"found unknown {', '.join(map(repr, unknown))}")
        key = "t" if "t" in frame else "frame" if "frame" in frame else None
        if key is None:
            raise InputError(f"{path}: keyframe {i} needs a time 't' in [0, 1] or a 'frame' index")
        value = frame[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise InputError(f"{path}: keyframe {i}: expected '{key}' as a finite number, found {value!r:.60}")
        times.append(float(value) if key == "t" else float(value) / max(num_frames - 1, 1))
    times = np.asarray(times)
    if (times < 0).any() or (times > 1).any() or (np.diff(times) <= 0).any():
        raise InputError(f"{path}: keyframe times must increase strictly within [0, 1] (frames within [0, T-1])")
    c2w = np.stack([_keyframe_c2w(f, i, path) for i, f in enumerate(frames)])
    with np.errstate(all="ignore"):
        w2c = interpolate_keyframes(times, c2w, num_frames)
    # Far-apart keyframes can still overflow the spline: the result is checked like a per-frame file.
    return _as_matrices(w2c, "keyframes (interpolated)", path)


def _read(path: Path) -> dict:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: cannot read trajectory file ({load_failure(exc)})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a trajectory file must hold a JSON object")
    return data


def load_trajectory(path: str | Path, num_frames: int) -> Trajectory:
    """Load a trajectory file and check it against the video's frame count.

    Args:
        path: ``.npz`` or ``.json`` file (see the module docstring).
        num_frames: T of the video; per-frame files must have exactly T cameras, keyframes are sampled at T.

    Returns:
        The trajectory, named after the file's stem.

    Raises:
        InputError: missing file, unknown suffix, malformed content or wrong frame count.
    """
    path = Path(path)
    if path.suffix not in TRAJECTORY_SUFFIXES:
        raise InputError(f"{path}: trajectory files must end in .npz or .json")
    if not path.is_file():
        raise InputError(f"{path}: trajectory file not found")
    data = _read(path)
    if "keyframes" in data:
        w2c = _from_keyframes(data["keyframes"], path, num_frames)
    elif "w2c" in data:
        w2c = _as_matrices(data["w2c"], "w2c", path)
    elif "extrinsics" in data:
        w2c = reference_to_w2c(_as_matrices(data["extrinsics"], "extrinsics", path))
    else:
        raise InputError(f"{path}: no 'w2c', 'extrinsics' or 'keyframes' entry")
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        raise InputError(f"{path}: expected keys among {', '.join(FILE_KEYS)}, found unknown "
                         f"{', '.join(map(repr, unknown))} (see docs/trajectories.md)")
    if len(w2c) != num_frames:
        raise InputError(f"{path}: has {len(w2c)} cameras but the video has {num_frames} frames; a per-frame file must "
                         f"match the clip (--num-frames {len(w2c)} takes that many frames), a keyframe file is "
                         "interpolated to any length")
    return Trajectory(w2c=w2c, K=_intrinsics(data, path, num_frames), name=path.stem)


def save_trajectory(path: str | Path, trajectory: Trajectory, K=None) -> Path:
    """Write a trajectory as ``.npz`` or ``.json`` (atomically), readable by :func:`load_trajectory`.

    The file holds ``w2c`` (ours), ``extrinsics`` (the reference's layout) and, when known, ``intrinsics``:
    ``K`` if given, else the trajectory's own.

    Args:
        K: optional (3, 3) or (T, 3, 3) intrinsics to store.
    """
    path = Path(path)
    if path.suffix not in TRAJECTORY_SUFFIXES:
        raise InputError(f"{path}: trajectory files must end in .npz or .json")
    K = trajectory.K if K is None else np.asarray(K, dtype=np.float64)
    arrays = {"w2c": trajectory.w2c.astype(np.float32), "extrinsics": w2c_to_reference(trajectory.w2c).astype(np.float32)}
    if K is not None:
        arrays["intrinsics"] = np.asarray(K, dtype=np.float32)
    if path.suffix == ".npz":
        save_npz_atomic(path, **arrays)
    else:
        # JSON keeps float64 so a round trip is exact.
        doc = {"w2c": trajectory.w2c.tolist()}
        if K is not None:
            doc["intrinsics"] = np.asarray(K, dtype=np.float64).tolist()
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
    return path
