"""What ``ex4d view`` shows: the source clip, its z-depth and intrinsics, camera paths and output videos.

Two kinds of input: an ``ex4d run`` output folder (``run.json`` names the input video, the frame count and working
size; the depth is the run's own ``depth.npz``, the file its stages recorded, or the one given with ``--depth``;
``camera_<cam>.npz`` and ``output_<cam>.mp4`` give each path and its fill), or a video with a depth file (plus
optional ``--cam`` paths).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ex4d.errors import InputError, about


@dataclass
class CameraPath:
    """One planned camera path: ``w2c`` (T, 4, 4) OpenCV world-to-camera, ``K`` (T, 3, 3) target intrinsics, and
    the output video rendered along it (``output_<cam>.mp4``) when there is one."""

    name: str
    w2c: np.ndarray
    K: np.ndarray
    output: Path | None = None


@dataclass
class ViewSource:
    """The clip the viewer plays.

    Attributes:
        frames: (T, H, W, 3) uint8 RGB source frames at the depth maps' size.
        depth: (T, H, W) float32 z-depth in the source camera (the world frame).
        K: (T, 3, 3) float32 source intrinsics.
        fps: frame rate.
        paths: planned camera paths, by name.
        title: what the page calls the clip.
    """

    frames: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    fps: float
    paths: dict[str, CameraPath] = field(default_factory=dict)
    title: str = "clip"
    _outputs: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def num_frames(self) -> int:
        return int(self.depth.shape[0])

    def output_frames(self, name: str) -> np.ndarray:
        """(T, H', W', 3) uint8 frames of path ``name``'s output video, decoded once on first use."""
        from ex4d.io.video import load_video

        with self._lock:
            if name not in self._outputs:
                path = self.paths[name].output
                if path is None:
                    raise KeyError(name)
                self._outputs[name] = load_video(path, num_frames=None).frames[: self.num_frames]
            return self._outputs[name]


def _load_depth(path: Path, num_frames: int | None) -> tuple[np.ndarray, np.ndarray]:
    from ex4d.geometry.conventions import reference_intrinsics
    from ex4d.reconstruction import check_depth, check_intrinsics, load_depth_file

    with about("depth"):
        depth, K = load_depth_file(path)
        depth = np.asarray(depth)
        if depth.ndim == 4 and depth.shape[1] == 1:
            depth = depth[:, 0]
        if num_frames is not None:
            if depth.ndim >= 1 and depth.shape[0] < num_frames:
                raise InputError(f"{path}: has {depth.shape[0]} depth maps, fewer than the {num_frames} frames used")
            depth = depth[:num_frames]
        depth = check_depth(depth, depth.shape[0])
        H, W = depth.shape[1:]
        K = check_intrinsics(reference_intrinsics(H, W).numpy() if K is None else K, len(depth))
    return depth, K


def _load_frames(path: Path, num_frames: int, height: int, width: int) -> tuple[np.ndarray, float]:
    from ex4d.io.video import load_video

    with about("input_video"):
        video = load_video(path, num_frames=num_frames, height=height, width=width)
    return video.frames, video.fps


def _extra_paths(source: ViewSource, cams: list[str]) -> None:
    from ex4d.geometry.trajectory import reference_radius
    from ex4d.reconstruction import _trajectory, check_intrinsics, output_name

    radius = reference_radius(source.depth[0])
    for cam in cams:
        with about("cam"):
            trajectory = _trajectory(cam, source.num_frames, radius)
            K = source.K if trajectory.K is None else check_intrinsics(trajectory.K, source.num_frames)
        source.paths[output_name(cam)] = CameraPath(output_name(cam), trajectory.w2c.astype(np.float64), K)


def from_video(input_video: str | Path, depth: str | Path, cams: list[str] = (), num_frames: int | None = None
               ) -> ViewSource:
    """A video + ``D.npz`` depth file (its ``intrinsics``, else the reference's f = 500 px), frames taken from the
    start; the video is resized to the depth maps' size. ``cams``: presets or trajectory files to show."""
    depth_z, K = _load_depth(Path(depth), num_frames)
    frames, fps = _load_frames(Path(input_video), len(depth_z), *depth_z.shape[1:])
    source = ViewSource(frames, depth_z, K, fps, title=Path(input_video).name)
    _extra_paths(source, list(cams))
    return source


def _stage_records(folder: Path, record: dict) -> list[dict]:
    names = [f"recon_{n}.json" for n in _run_names(record)] + ["mesh.json"]
    records = []
    for name in names:
        try:
            records.append(json.loads((folder / name).read_text()))
        except (OSError, ValueError):
            continue
    return records


def _check_depth_fingerprint(path: Path, records: list[dict]) -> None:
    """Refuse a ``--depth`` whose content differs from the depth file a run's stages fingerprinted (records that
    hold ``inputs.files.depth`` as ``sha256`` of the whole file, or its ``size``)."""
    for stage in records:
        recorded = (stage.get("inputs") or {}).get("files", {}).get("depth")
        if not isinstance(recorded, dict):
            continue
        if "sha256" in recorded:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            same = digest == recorded["sha256"]
        elif "size" in recorded:
            same = path.stat().st_size == recorded["size"]
        else:
            continue
        if not same:
            raise InputError(f"{path}: not the depth file this run used (its content differs from the run's "
                             "records)", "depth")
        return


def _run_depth_path(folder: Path, record: dict, depth: str | Path | None) -> Path:
    """The depth file of a run: ``depth`` if given, else the one ``run.json`` names (both checked against the run's
    fingerprint), else the path its stages recorded (older runs), else its own ``depth.npz`` (estimated by the run)."""
    records = _stage_records(folder, record)
    if depth is not None:
        depth = Path(depth)
        if not depth.is_file():
            raise InputError(f"{depth}: depth file not found", "depth")
        _check_depth_fingerprint(depth, records)
        return depth
    named = record.get("depth")  # run.json names a --depth file (checked: it may have changed since)
    if isinstance(named, str) and Path(named).is_file():
        _check_depth_fingerprint(Path(named), records)
        return Path(named)
    for stage in records:
        recorded = (stage.get("settings") or {}).get("depth")
        if isinstance(recorded, str) and Path(recorded).is_file():
            return Path(recorded)
    if (folder / "depth.npz").is_file():
        return folder / "depth.npz"
    raise InputError(f"{folder}: this run was given a depth file that its records do not name (no depth.npz in "
                     "it); pass that file with --depth", "run")


def _run_names(record: dict) -> list[str]:
    from ex4d.reconstruction import output_name

    return [output_name(cam) for cam in record.get("cams", [])]


def from_run(folder: str | Path, cams: list[str] = (), depth: str | Path | None = None) -> ViewSource:
    """An ``ex4d run`` output folder: its input video, depth, paths (``camera_<cam>.npz``) and outputs.

    ``depth``: the depth file the run was given (``ex4d run --depth``), where its records do not name it."""
    folder = Path(folder)
    record_path = folder / "run.json"
    if not record_path.is_file():
        raise InputError(f"{folder}: not an ex4d run output folder (no run.json)", "run")
    try:
        record = json.loads(record_path.read_text())
        video, num_frames = Path(record["input_video"]), int(record["frames"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{record_path}: not a readable ex4d run record ({type(exc).__name__}: {exc})", "run") from None
    if not video.exists() and (folder / video).exists():
        video = folder / video
    depth_path = _run_depth_path(folder, record, depth)
    depth_z, K = _load_depth(depth_path, num_frames)
    frames, fps = _load_frames(video, len(depth_z), *depth_z.shape[1:])
    source = ViewSource(frames, depth_z, K, fps, title=folder.name)
    for name in _run_names(record):
        camera = folder / f"camera_{name}.npz"
        if not camera.is_file():
            continue
        with np.load(camera) as data:
            if "w2c" in data.files:
                w2c = data["w2c"].astype(np.float64)
            else:
                from ex4d.geometry.conventions import reference_to_w2c

                w2c = reference_to_w2c(data["extrinsics"].astype(np.float64))
            path_K = data["intrinsics"] if "intrinsics" in data.files else K
        path_K = np.broadcast_to(np.asarray(path_K, np.float32), (len(w2c), 3, 3)).copy()
        output = folder / f"output_{name}.mp4"
        source.paths[name] = CameraPath(name, w2c, path_K, output if output.is_file() else None)
    _extra_paths(source, list(cams))
    return source
