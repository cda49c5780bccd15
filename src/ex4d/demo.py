"""``ex4d demo``: the whole geometric pipeline on a built-in synthetic scene with exact ground truth, offline.

A procedurally generated dynamic scene is ray-cast from a static source camera (the "input video" and its exact
depth), reconstructed as per-frame DW-Meshes, rendered along a camera path, and compared with the scene ray-cast
from that path. The "output" panel is the offline fill (no learned weights) of the render.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ex4d.data import default_intrinsics, ground_truth_for_trajectory, make_scene
from ex4d.errors import InputError
from ex4d.eval.geometric import mask_metrics, masked_psnr
from ex4d.geometry.trajectory import make_trajectory, reference_radius
from ex4d.io.atomic import atomic_path, save_npz_atomic
from ex4d.io.preview import side_by_side
from ex4d.io.video import Video, save_video
from ex4d.reconstruction import recon, write_recon_outputs
from ex4d.utils.device import resolve_device

DEMO_FPS = 15.0


@dataclass
class DemoResult:
    """Paths written by :func:`run_demo` and the mask metrics of the novel frames against ground truth."""

    paths: list[Path]
    metrics: dict


def run_demo(output_dir: str | Path, cam: str = "180", height: int = 256, width: int = 256, num_frames: int = 25,
             seed: int = 0, device: str = "auto", progress: bool = True) -> DemoResult:
    """Run the demo and write its files into ``output_dir``.

    Writes ``input.mp4`` + ``depth.npz`` (the scene from the source camera and its exact z-depth and intrinsics,
    ready for ``ex4d recon``), the ``ex4d recon`` outputs for ``cam``, ``output_<cam>.mp4`` (their offline fill),
    ``gt_<cam>.mp4`` (the scene seen along the path), ``preview.mp4`` (source | render | mask | output | ground
    truth) and ``metrics.json``.

    Raises:
        InputError: bad size, frame count or preset.
    """
    if height < 16 or width < 16 or height % 2 or width % 2:
        raise InputError(f"demo size must be even and at least 16×16, got {height}×{width}")
    if num_frames < 2:
        raise InputError(f"the demo needs at least 2 frames, got {num_frames}")
    scene = make_scene(seed, motion_frames=max(num_frames, 17))
    K = default_intrinsics(height, width).numpy()
    # The path needs the source depth for its radius; the ground truth then gives source and target views.
    source_only = ground_truth_for_trajectory(scene, np.tile(np.eye(4), (1, 1, 1)), K, height, width)
    radius = reference_radius(source_only["source"]["depth"][0])
    trajectory = make_trajectory(cam, num_frames, radius)
    truth = ground_truth_for_trajectory(scene, trajectory.w2c, K, height, width)
    frames, depth = np.asarray(truth["source"]["frames"]), np.asarray(truth["source"]["depth"])
    depth = np.where(depth > 0, depth, 1e4).astype(np.float32)  # rays that hit nothing: as far as the reference's

    video = Video(frames=frames, fps=DEMO_FPS, source_size=(height, width))
    result = recon(video, depth, cam=trajectory, intrinsics=K, device=device, progress=progress)
    result.trajectory.name = cam.split(":")[0]

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = result.trajectory.name
    observable = np.asarray(truth["observable"])
    gt_frames = np.asarray(truth["target"]["frames"])
    metrics = {
        "cam": cam, "size": [height, width], "frames": num_frames, "seed": seed,
        **mask_metrics(result.mask[1:], observable[1:]),
        "psnr_seen_db": masked_psnr(result.color[1:], gt_frames[1:], result.mask[1:]),
    }
    paths = [out / "input.mp4", out / "depth.npz"]
    save_video(paths[0], frames, fps=DEMO_FPS)
    save_npz_atomic(paths[1], depth=depth, intrinsics=K.astype(np.float32))
    paths += write_recon_outputs(result, out, name)
    paths.append(out / f"gt_{name}.mp4")
    save_video(paths[-1], gt_frames, fps=DEMO_FPS)
    from ex4d.fill.offline import offline_fill

    filled = offline_fill(result, depth, device=resolve_device(device))
    metrics["psnr_filled_db"] = masked_psnr(filled[1:], gt_frames[1:], ~result.mask[1:])
    paths.append(out / f"output_{name}.mp4")
    save_video(paths[-1], filled, fps=DEMO_FPS)
    preview = side_by_side([frames, result.color, result.mask, filled, gt_frames],
                           ["source", "render", "mask", "output", "ground truth"])
    paths.append(out / "preview.mp4")
    save_video(paths[-1], preview, fps=DEMO_FPS)
    paths.append(out / "metrics.json")
    with atomic_path(paths[-1]) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    return DemoResult(paths, metrics)
