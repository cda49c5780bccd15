"""Reconstruction stage: video + depth -> per-frame DW-Mesh -> render along a trajectory (spec §2–§5).

This module chains the geometric stages; :func:`recon` is the Python twin of ``ex4d recon`` and
:func:`write_recon_outputs` writes what the CLI writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ex4d.errors import InputError, about, load_failure
from ex4d.geometry.conventions import reference_intrinsics, w2c_to_reference
from ex4d.geometry.trajectory import Trajectory, make_trajectory, reference_radius
from ex4d.io.atomic import save_npz_atomic
from ex4d.io.trajectory_file import TRAJECTORY_SUFFIXES, load_trajectory
from ex4d.io.video import Video, load_video, probe_video, save_video
from ex4d.mesh.build import MeshBatch, MeshSettings, build_dw_mesh
from ex4d.render.dwmesh import RenderSettings, render_dw_mesh_into
from ex4d.utils.device import resolve_device


@dataclass
class ReconResult:
    """What the reconstruction stage produces.

    Attributes:
        color: (T, H, W, 3) uint8 render, black where ``mask`` is False.
        mask: (T, H, W) bool, True = seen in the source.
        depth: (T, H, W) float32 z-depth in each target camera, 0 where nothing was hit.
        trajectory: the cameras (``w2c`` (T, 4, 4), OpenCV).
        K: (T, 3, 3) float32 intrinsics used to render each frame.
        source_K: (T, 3, 3) float32 intrinsics of the source frames.
        fps: frame rate of the source video.
        source: the (resized) source video frames.
        mesh0: frame 0's DW-Mesh, kept for export.
    """

    color: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    trajectory: Trajectory
    K: np.ndarray
    source_K: np.ndarray
    fps: float
    source: Video
    mesh0: MeshBatch | None = field(default=None, repr=False)


def load_depth_file(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``D.npz``: key ``depth`` (T, H, W) z-depth, optional ``intrinsics`` (3, 3) or (T, 3, 3).

    Raises:
        InputError: missing/unreadable file or missing ``depth`` key.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: depth file not found")
    try:
        data = np.load(path, allow_pickle=False)  # allow_pickle=False: a data file never runs code
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise InputError(f"{path}: expected an .npz archive with a 'depth' array, found a single .npy array "
                             "(save it with np.savez(path, depth=...))")
        with data:
            if "depth" not in data.files:
                raise InputError(f"{path}: no 'depth' array (found: {', '.join(data.files) or 'nothing'})")
            depth = np.asarray(data["depth"])
            intrinsics = np.asarray(data["intrinsics"]) if "intrinsics" in data.files else None
    except InputError:
        raise
    except Exception as exc:  # numpy raises many types for a file that is not an npz
        raise InputError(f"{path}: cannot read depth file: expected an .npz archive with a 'depth' array "
                         f"({load_failure(exc)})") from None
    return depth, intrinsics


def check_depth(depth: np.ndarray, num_frames: int) -> np.ndarray:
    """Validate a (T, H, W) z-depth array; returns it as float32.

    Raises:
        InputError: wrong rank or frame count, non-finite or non-positive values.
    """
    depth = np.asarray(depth)
    if depth.ndim == 4 and depth.shape[1] == 1:  # (T, 1, H, W), as the reference stores it
        depth = depth[:, 0]
    if depth.ndim != 3 or not np.issubdtype(depth.dtype, np.number) or np.iscomplexobj(depth):
        raise InputError(f"expected a (T, H, W) numeric depth array, found shape {depth.shape} {depth.dtype}")
    if depth.shape[0] != num_frames:
        raise InputError(
            f"depth has {depth.shape[0]} frames but {num_frames} video frames were used; "
            f"pass --num-frames {depth.shape[0]} or depth with {num_frames} frames"
        )
    if depth.shape[1] < 2 or depth.shape[2] < 2:
        raise InputError(f"expected depth maps of at least 2×2, found {depth.shape[1]}×{depth.shape[2]}")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, reported below
        depth = depth.astype(np.float32)
    finite = np.isfinite(depth)
    if not finite.all():
        t = int(np.argwhere(~finite)[0, 0])
        raise InputError(f"expected finite z-depth, found {int((~finite).sum())} NaN or inf values "
                         f"(depth contains NaN or inf values, first in frame {t})")
    if (depth <= 0).any():
        raise InputError(f"expected positive z-depth, found {int((depth <= 0).sum())} values ≤ 0 "
                         f"(depth must be positive z-depth; minimum is {depth.min():g})")
    return depth


def check_intrinsics(K, num_frames: int, what: str = "intrinsics") -> np.ndarray:
    """Validate (3, 3) or (T, 3, 3) intrinsics; returns (T, 3, 3) float32."""
    try:
        K = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"expected {what} as a (3, 3) or ({num_frames}, 3, 3) numeric array, "
                         f"found {type(K).__name__}") from None
    if K.shape == (3, 3):
        K = np.repeat(K[None], num_frames, 0)
    if K.shape != (num_frames, 3, 3):
        raise InputError(f"{what} must be (3, 3) or ({num_frames}, 3, 3), got {K.shape}")
    if not np.isfinite(K).all() or (K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any():
        raise InputError(f"{what} must be finite with positive focal lengths")
    return K.astype(np.float32)


def _working_size(video_size: tuple[int, int], depth_size: tuple[int, int], height, width) -> tuple[int, int]:
    if height is not None or width is not None:
        if (height, width) != depth_size:
            raise InputError(f"depth maps are {depth_size[0]}×{depth_size[1]} but --height/--width ask for "
                             f"{height}×{width}")
        return depth_size
    # Without an explicit size the depth maps set the working size, if their aspect ratio is the video's.
    (h0, w0), (hd, wd) = video_size, depth_size
    if abs(w0 / h0 - wd / hd) > 0.02 * (w0 / h0):
        raise InputError(f"depth maps are {hd}×{wd} (H×W) but the video is {h0}×{w0}: aspect ratios differ")
    return depth_size


def _trajectory(cam: str | Trajectory, num_frames: int, radius: float) -> Trajectory:
    if isinstance(cam, Trajectory):
        if len(cam) != num_frames:
            raise InputError(f"trajectory has {len(cam)} cameras but the video has {num_frames} frames")
        return cam
    if Path(cam).suffix.lower() in TRAJECTORY_SUFFIXES:
        return load_trajectory(cam, num_frames)
    return make_trajectory(cam, num_frames, radius)


def recon(input_video: str | Path | Video, depth: str | Path | np.ndarray, cam: str | Trajectory = "180",
          num_frames: int | None = 49, intrinsics: np.ndarray | None = None, height: int | None = None,
          width: int | None = None, mesh_settings: MeshSettings = MeshSettings(),
          render_settings: RenderSettings = RenderSettings(), device: str = "auto", batch_size: int = 8,
          progress: bool = True) -> ReconResult:
    """Build the DW-Mesh of every frame and render it along a camera trajectory.

    Args:
        input_video: path to a video/image folder, or an already loaded :class:`Video`.
        depth: ``D.npz`` path or a (T, H, W) z-depth array (frame t's camera = the source camera).
        cam: preset (``"30"``, ``"180"``, ``"orbit:angle=120"``, ...), trajectory file, or a Trajectory.
        num_frames: frames taken from the start of the video (``None`` = all).
        intrinsics: (3, 3) or (T, 3, 3) source intrinsics; default: the depth file's, else the reference's
            f = 500 px with the principal point at the image centre.
        height, width: working size; default: the depth maps' size.
        mesh_settings, render_settings: stage options (defaults = the reference DW-Mesh).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        batch_size: frames meshed and rendered together (memory vs. speed).
        progress: show a progress bar on stderr.

    Returns:
        A :class:`ReconResult`. Frame 0 equals the source frame with an all-True mask when the trajectory
        starts at the source camera (as the reference).

    Raises:
        InputError: any unusable input (see the messages).
    """
    depth_intrinsics = None
    # Each check names the argument its input came from (the CLI shows it as the flag: --depth, --cam, ...).
    with about("depth"):
        if isinstance(depth, (str, Path)):
            depth, depth_intrinsics = load_depth_file(depth)
        depth_arr = np.asarray(depth)
        if depth_arr.ndim not in (3, 4):
            raise InputError(f"expected a (T, H, W) depth array, found shape {depth_arr.shape}")
    if isinstance(input_video, Video):
        video = input_video
    else:
        video = _load_matching(input_video, num_frames, depth_arr.shape[-2:], height, width)
    T = video.frames.shape[0]
    with about("depth"):
        depth_arr = check_depth(depth_arr, T)
        if video.frames.shape[1:3] != depth_arr.shape[1:]:
            raise InputError(f"video frames are {video.frames.shape[1]}×{video.frames.shape[2]} but depth maps are "
                             f"{depth_arr.shape[1]}×{depth_arr.shape[2]}")
    H, W = depth_arr.shape[1:]
    with about("depth" if intrinsics is None else "intrinsics"):
        if intrinsics is None:
            intrinsics = depth_intrinsics if depth_intrinsics is not None else reference_intrinsics(H, W).numpy()
        source_K = check_intrinsics(intrinsics, T)

    with about("cam"):
        trajectory = _trajectory(cam, T, reference_radius(depth_arr[0], mesh_settings.border_depth))
        target_K = source_K if trajectory.K is None else check_intrinsics(trajectory.K, T, "trajectory intrinsics")

    dev = resolve_device(device)
    # Every frame is written below; torch views of the numpy outputs avoid an intermediate copy per batch.
    color, mask, depth_out = np.empty((T, H, W, 3), np.uint8), np.empty((T, H, W), bool), np.empty((T, H, W), np.float32)
    color_t, mask_t, depth_t = torch.from_numpy(color), torch.from_numpy(mask), torch.from_numpy(depth_out)
    w2c_all = trajectory.w2c_tensor()
    mesh0 = None
    for start in tqdm(range(0, T, batch_size), desc="DW-Mesh + render", unit="batch", disable=not progress):
        sl = slice(start, min(start + batch_size, T))
        mesh = build_dw_mesh(torch.from_numpy(depth_arr[sl]).to(dev), torch.from_numpy(video.frames[sl]).to(dev),
                             torch.from_numpy(source_K[sl]).to(dev), mesh_settings)
        if start == 0:
            mesh0 = _first_frame(mesh)
        # straight into the host outputs (on a GPU: converted to uint8 there, then copied over)
        render_dw_mesh_into(mesh, w2c_all[sl].to(dev), torch.from_numpy(target_K[sl]).to(dev), render_settings,
                            color_t[sl], mask_t[sl], depth_t[sl])
    if trajectory.starts_at_source() and np.allclose(target_K[0], source_K[0]):
        # As the reference: frame 0 is the source frame itself, fully seen.
        color[0], mask[0], depth_out[0] = video.frames[0], True, depth_arr[0]
    return ReconResult(color, mask, depth_out, trajectory, target_K, source_K, video.fps, video, mesh0)


def _check_output_size(height: int, width: int) -> None:
    # The working size is the depth maps'; the output videos (H.264 yuv420p) need it even and at least 2×2.
    if height < 2 or width < 2:
        raise InputError(f"expected depth maps of at least 2×2, found {height}×{width}")
    if height % 2 or width % 2:
        raise InputError(f"expected even height and width for the H.264 outputs, found depth maps of "
                         f"{height}×{width}; crop or resize the depth maps by one pixel")


def _load_matching(path, num_frames, depth_size, height, width) -> Video:
    with about("input_video"):
        info = probe_video(path)
    with about("depth"):
        size = _working_size((info["height"], info["width"]), tuple(int(s) for s in depth_size), height, width)
        _check_output_size(*size)
    with about("input_video"):
        return load_video(path, num_frames=num_frames, height=size[0], width=size[1])


def _first_frame(mesh: MeshBatch) -> MeshBatch:
    return MeshBatch(mesh.vertices[:1], mesh.colors[:1], mesh.faces, mesh.face_valid[:1],
                     None if mesh.face_mask is None else mesh.face_mask[:1], mesh.height, mesh.width)


def output_name(cam: str | Trajectory) -> str:
    """``<cam>`` in output file names: the preset name, or the trajectory file's stem."""
    if isinstance(cam, Trajectory):
        return cam.name
    if Path(cam).suffix.lower() in TRAJECTORY_SUFFIXES:
        return Path(cam).stem
    return re.sub(r"[^\w.+-]", "_", cam.split(":")[0])


def write_recon_outputs(result: ReconResult, output_dir: str | Path, name: str, save_mesh: bool = False,
                        save_arrays: bool = False) -> list[Path]:
    """Write ``color_<name>.mp4``, ``mask_<name>.mp4``, ``camera_<name>.npz`` and optional extras, each
    atomically. Returns the written paths."""
    from ex4d.mesh.export import export_mesh

    with about("depth"):
        _check_output_size(*result.color.shape[1:3])  # before anything is written
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    K = result.K[0] if np.allclose(result.K, result.K[:1]) else result.K
    writers = {
        f"color_{name}.mp4": lambda p: save_video(p, result.color, fps=result.fps),
        f"mask_{name}.mp4": lambda p: save_video(p, result.mask.astype(np.uint8) * 255, fps=result.fps),
        f"camera_{name}.npz": lambda p: save_npz_atomic(
            p, extrinsics=w2c_to_reference(result.trajectory.w2c).astype(np.float32),
            intrinsics=K.astype(np.float32), w2c=result.trajectory.w2c.astype(np.float32)),
    }
    if save_mesh and result.mesh0 is not None:
        writers["DW-Mesh.ply"] = lambda p: export_mesh(p, result.mesh0)
    if save_arrays:
        writers[f"render_{name}.npz"] = lambda p: save_npz_atomic(
            p, color=result.color, mask=result.mask, depth=result.depth)
    written: list[Path] = []
    try:
        for file_name, write in writers.items():
            write(out / file_name)
            written.append(out / file_name)
    except BaseException:
        # All or nothing: a failure (or Ctrl-C) part-way removes what this call already wrote.
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written
