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

from ex4d.errors import InputError, about
from ex4d.geometry.conventions import w2c_to_reference
from ex4d.geometry.trajectory import Trajectory, make_trajectory, reference_radius
from ex4d.io.atomic import save_npz_atomic
from ex4d.io.trajectory_file import TRAJECTORY_SUFFIXES, load_trajectory
# load_depth_file, check_depth and check_intrinsics are re-exported: older callers import them from here.
from ex4d.io.depth_file import check_depth, check_intrinsics, load_depth_file  # noqa: F401
from ex4d.io.source import check_output_size, load_source, match_video
from ex4d.io.video import Video, save_video
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
        depth: a depth file or folder in any format of :mod:`ex4d.io.depth_file` (``D.npz``, ``.npy``, PNG/EXR
            frames) or a (T, H, W) z-depth array (frame t's camera = the source camera).
        cam: preset (``"30"``, ``"180"``, ``"orbit:angle=120"``, ...), trajectory file, or a Trajectory.
        num_frames: at most this many frames from the start of the video (a shorter clip is taken whole;
            ``None`` = all); the depth must hold at least as many maps (extra ones are ignored).
        intrinsics: (3, 3) or (T, 3, 3) source intrinsics; default: the depth file's, else the reference's
            f = 500 px with the principal point at the image centre.
        height, width: working size; default: the depth maps' size (see :mod:`ex4d.io.source`).
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
    # One reader and one policy for every command (ex4d.io.source); each check names the argument its input
    # came from (the CLI shows it as the flag: --depth, --num-frames, ...).
    if isinstance(input_video, Video):
        source = match_video(input_video, depth, intrinsics)
    else:
        source = load_source(input_video, depth, num_frames, height, width, intrinsics)
    video, depth_arr, source_K = source.video, source.depth, source.K
    T, (H, W) = video.num_frames, depth_arr.shape[1:]

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
        check_output_size(*result.color.shape[1:3])  # before anything is written
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
