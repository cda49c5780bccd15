"""The web app's working directory: checked uploads, one folder per video (keyed by its content hash), cached depth.

Layout under the work dir::

    gradio/                  Gradio's own upload/cache folder (GRADIO_TEMP_DIR points here)
    clips/<hash>/input.mp4   the uploaded video (copied), <hash> = sha256 of its bytes, 16 hex digits
    clips/<hash>/depth.npz   depth + intrinsics, computed (or taken from an uploaded depth file) once per video
    clips/<hash>/depth.json  where the depth came from (a re-upload with another depth file replaces it)
    clips/<hash>/mesh.glb    frame 0's DW-Mesh, for the 3D viewer
    clips/<hash>/...         previews, trajectories and generation runs (see ``ex4d.ui.actions``)

Every path the app reads or writes goes through :meth:`Workspace.inside`, which refuses anything that resolves
outside the work dir (symlinks included).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ex4d.errors import InputError
from ex4d.io.atomic import atomic_path, save_npz_atomic

#: Video suffixes the upload accepts (what :func:`ex4d.io.video.load_video` decodes).
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif", ".m4v")
#: Depth files the upload accepts: the single-file formats every command reads (ex4d.io.depth_file).
DEPTH_SUFFIXES = (".npz", ".npy")
DEMO_NAME = "demo scene"


def default_work_dir() -> Path:
    """``~/.cache/ex4d/ui``: survives restarts, so depth computed once is reused."""
    return Path.home() / ".cache" / "ex4d" / "ui"


def content_hash(path: Path, chunk: int = 1 << 20) -> str:
    """First 16 hex digits of the sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


@dataclass
class Clip:
    """One video ready for path design.

    Attributes:
        key: content hash; the clip's folder is ``clips/<key>``.
        folder: that folder.
        video_path: the copied video in it.
        frames: (T, H, W, 3) uint8 at the depth maps' size.
        depth: (T, H, W) float32 z-depth.
        K: (3, 3) float32 source intrinsics.
        fps: source frame rate.
        radius: the reference's orbit radius (nearest frame-0 depth + 0.15).
    """

    key: str
    folder: Path
    video_path: Path
    frames: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    fps: float
    radius: float

    @property
    def depth_path(self) -> Path:
        return self.folder / "depth.npz"

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


class Workspace:
    """The app's work dir and the rules for what enters it.

    Args:
        root: the work dir (created if missing).
        max_upload_mb: size cap of one uploaded file.
        max_frames: frames taken from the start of an uploaded video.
        depth_backend: backend used when no depth file is uploaded (needs its weights).
    """

    def __init__(self, root: str | Path, max_upload_mb: float = 200.0, max_frames: int = 49,
                 depth_backend: str = "depthcrafter"):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self.max_frames = max_frames
        self.depth_backend = depth_backend

    @property
    def gradio_dir(self) -> Path:
        return self.root / "gradio"

    def inside(self, path: str | Path) -> Path:
        """``path`` resolved, if it lies inside the work dir.

        Raises:
            InputError: it resolves outside (``..``, absolute paths elsewhere, symlinks out).
        """
        resolved = Path(path).expanduser().resolve()
        if not resolved.is_relative_to(self.root):
            raise InputError(f"{Path(path).name}: refused, the file is outside the app's working directory")
        return resolved

    def checked_upload(self, path: str | Path | None, suffixes: tuple[str, ...], what: str) -> Path:
        """An uploaded file's path after the location, type (suffix) and size checks.

        Raises:
            InputError: nothing uploaded, outside the work dir, wrong suffix, too large.
        """
        if path is None or str(path) == "":
            raise InputError(f"no {what} uploaded")
        resolved = self.inside(path)
        if not resolved.is_file():
            raise InputError(f"{resolved.name}: uploaded {what} not found")
        if resolved.suffix.lower() not in suffixes:
            raise InputError(f"{resolved.name}: not a {what} (accepted: {', '.join(suffixes)})")
        size = resolved.stat().st_size
        if size > self.max_upload_bytes:
            raise InputError(f"{resolved.name}: {size / 2**20:.1f} MB is over the "
                             f"{self.max_upload_bytes / 2**20:.0f} MB upload limit")
        return resolved

    def clip_folder(self, key: str) -> Path:
        if not (len(key) == 16 and all(c in "0123456789abcdef" for c in key)):
            raise InputError(f"bad clip id {key!r}")
        return self.inside(self.root / "clips" / key)

    def add_video(self, upload: str | Path | None, depth_upload: str | Path | None = None,
                  progress=None) -> Clip:
        """Check an uploaded video (and optional ``D.npz``), copy it into its clip folder, get its depth once.

        Depth comes from the uploaded file when given, else from the clip's cache, else from
        ``self.depth_backend`` (run once; its weights must be on disk).

        Raises:
            InputError: bad upload, undecodable video, unusable depth, missing depth weights.
        """
        from ex4d.io.video import probe_video

        video = self.checked_upload(upload, VIDEO_SUFFIXES, "video")
        try:
            info = probe_video(video)
        except InputError as exc:  # not a decodable video; the message names the file, not the work dir's path
            raise InputError(str(exc).replace(str(video), video.name)) from None
        if info["frames"] < 2:
            raise InputError(f"{video.name}: a video of at least 2 frames is needed")
        key = content_hash(video)
        folder = self.clip_folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / f"input{video.suffix.lower()}"
        if not copy.is_file():
            with atomic_path(copy) as tmp:
                shutil.copyfile(video, tmp)
        frames = min(info["frames"], self.max_frames)
        if depth_upload:
            depth_file = self.checked_upload(depth_upload, DEPTH_SUFFIXES, "depth file (.npz/.npy)")
            self._store_depth_file(folder, depth_file, copy, frames)
        elif not self._depth_cached(folder, f"backend:{self.depth_backend}", frames):
            self._estimate_depth(folder, copy, frames, progress)
        return self.load_clip(key, copy)

    def add_demo(self, seed: int = 0, num_frames: int = 17, height: int = 96, width: int = 128) -> Clip:
        """The bundled synthetic scene (exact depth, no weights needed), written as a clip like an upload."""
        from ex4d.data import default_intrinsics, ground_truth_for_trajectory, make_scene
        from ex4d.io.video import save_video

        scene = make_scene(seed, motion_frames=max(num_frames, 17))
        K = default_intrinsics(height, width).numpy()
        view = ground_truth_for_trajectory(scene, np.tile(np.eye(4), (num_frames, 1, 1)), K, height, width)
        frames = np.asarray(view["source"]["frames"])
        depth = np.asarray(view["source"]["depth"])
        depth = np.where(depth > 0, depth, 1e4).astype(np.float32)  # rays that miss: far away, as in ex4d demo
        staging = self.root / "demo"
        video = save_video(staging / f"demo-{seed}-{num_frames}x{height}x{width}.mp4", frames, fps=15.0)
        key = content_hash(video)
        folder = self.clip_folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / "input.mp4"
        if not copy.is_file():
            with atomic_path(copy) as tmp:
                shutil.copyfile(video, tmp)
        if not self._depth_cached(folder, DEMO_NAME, num_frames):
            save_npz_atomic(folder / "depth.npz", depth=depth, intrinsics=K.astype(np.float32))
            self._write_depth_record(folder, DEMO_NAME, num_frames)
        return self.load_clip(key, copy)

    def load_clip(self, key: str, video: Path | None = None) -> Clip:
        """A clip whose folder already holds its video and depth."""
        from ex4d.geometry.trajectory import reference_radius
        from ex4d.io.depth_file import read_depth_file
        from ex4d.io.source import load_source

        folder = self.clip_folder(key)
        video = video or next(iter(sorted(folder.glob("input.*"))), None)
        if video is None:
            raise InputError("this video is no longer in the working directory; upload it again")
        # The stored depth has one map per frame the app uses; the shared loader reads the video at its size.
        depth = read_depth_file(folder / "depth.npz")
        source = load_source(video, depth, num_frames=len(depth.maps))
        return Clip(key, folder, Path(video), source.video.frames, source.depth, source.K[0], source.video.fps,
                    reference_radius(source.depth[0]))

    # -- depth ------------------------------------------------------------------------------------------------

    def _depth_cached(self, folder: Path, source: str, frames: int) -> bool:
        record = folder / "depth.json"
        if not (folder / "depth.npz").is_file() or not record.is_file():
            return False
        try:
            return json.loads(record.read_text()) == {"source": source, "frames": frames}
        except (OSError, ValueError):
            return False

    def _write_depth_record(self, folder: Path, source: str, frames: int) -> None:
        with atomic_path(folder / "depth.json") as tmp:
            tmp.write_text(json.dumps({"source": source, "frames": frames}))

    def _store_depth_file(self, folder: Path, depth_file: Path, video: Path, frames: int) -> None:
        from ex4d.io.source import load_source

        source = f"file:{content_hash(depth_file)}"
        if self._depth_cached(folder, source, frames):
            return
        try:  # the checks of ex4d recon / ex4d run, so the app accepts and refuses the same files
            checked = load_source(video, depth_file, num_frames=frames)
        except InputError as exc:  # name the uploaded file, not the work dir's copy
            text = exc.message.replace(str(depth_file), depth_file.name).replace(str(video), video.name)
            raise InputError(text) from None
        arrays = {"depth": checked.depth}
        if checked.file_intrinsics:
            arrays["intrinsics"] = checked.K
        save_npz_atomic(folder / "depth.npz", **arrays)
        self._write_depth_record(folder, source, frames)

    def _estimate_depth(self, folder: Path, video: Path, frames: int, progress) -> None:
        from ex4d.depth.api import estimate_depth, save_depth_npz
        from ex4d.io.video import load_video

        clip = load_video(video, num_frames=frames)
        try:
            estimate = estimate_depth(clip, self.depth_backend, progress=progress is not None)
        except ImportError as exc:
            raise InputError(f"depth estimation needs the diffusion extra ({exc}); or upload a depth .npz") from None
        except (OSError, EnvironmentError) as exc:
            raise InputError(f"no weights for the depth model '{self.depth_backend}' ({_first_line(exc)}); "
                             "download them (docs/depth.md) or upload a depth .npz with the video") from None
        save_depth_npz(folder / "depth.npz", estimate)
        self._write_depth_record(folder, f"backend:{self.depth_backend}", frames)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
