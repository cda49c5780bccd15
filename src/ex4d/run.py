"""``ex4d run``: video -> depth -> DW-Mesh render -> fill, with each stage cached in the output folder.

Every stage writes its outputs (atomically) and a ``<stage>.json`` holding the settings it was computed with; a
later run whose settings for a stage are unchanged and whose outputs exist skips that stage, and a changed
setting recomputes that stage and the ones after it. ``run.json`` records versions, settings, timings and device.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ex4d import __version__
from ex4d.errors import InputError
from ex4d.io.atomic import atomic_path, save_npz_atomic
from ex4d.utils.device import resolve_device

FILLS = ("offline", "ex4d", "none")


@dataclass
class RunResult:
    """What :func:`run` did: the output videos per camera, and which stages ran or were reused."""

    outputs: dict[str, Path] = field(default_factory=dict)
    stages: dict[str, str] = field(default_factory=dict)  # stage -> "ran" | "cached"


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))


def _cached(out: Path, stage: str, settings: dict, files: list[Path]) -> bool:
    record = out / f"{stage}.json"
    if not record.is_file() or not all(f.is_file() for f in files):
        return False
    try:
        return json.loads(record.read_text()).get("settings") == json.loads(json.dumps(settings, default=str))
    except (OSError, ValueError):
        return False


def _record(out: Path, stage: str, settings: dict, seconds: float) -> None:
    _write_json(out / f"{stage}.json", {"settings": settings, "seconds": round(seconds, 3), "ex4d": __version__})


def run(input_video: str | Path, output_dir: str | Path, cams: list[str] = ("180",), depth: str | Path | None = None,
        depth_backend: str | None = None, depth_options: dict | None = None, fill: str = "offline",
        num_frames: int | None = 49, height: int | None = None, width: int | None = None, device: str = "auto",
        generate_options: dict | None = None, save_arrays: bool = False, progress: bool = True) -> RunResult:
    """Run the whole pipeline on one video for one or more camera paths.

    Args:
        input_video: video file or image folder.
        output_dir: where every stage writes (created if missing).
        cams: presets or trajectory files; depth and meshes are computed once for all of them.
        depth: a ``D.npz`` to use instead of estimating depth; else ``depth_backend`` (default ``depthcrafter``).
        depth_options: options of the depth backend (see ``ex4d depth``).
        fill: ``offline`` (no learned weights), ``ex4d`` (the EX-4D video model; ``generate_options`` are passed to
            :func:`ex4d.inpaint.generate`) or ``none`` (the render is the output).
        num_frames, height, width: frames taken from the start of the video and the working size.
        device: ``auto``, ``cpu`` or ``cuda``.
        save_arrays: also write the exact frames of every video: ``render_<cam>.npz`` (``color``, ``mask``,
            ``depth``, as ``ex4d recon --save-arrays``) and ``output_<cam>.npz`` (``frames``).

    Returns:
        A :class:`RunResult`; ``outputs[cam]`` is ``output_<cam>.mp4``.

    Raises:
        InputError: bad input or options.
    """
    from ex4d.io.video import load_video, save_video
    from ex4d.reconstruction import output_name, recon, write_recon_outputs

    if fill not in FILLS:
        raise InputError(f"unknown fill '{fill}'; choose {', '.join(FILLS)}")
    if depth is not None and depth_backend is not None:
        raise InputError("give either a depth file or a depth backend, not both")
    if not cams:
        raise InputError("at least one camera path is needed")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result, timings = RunResult(), {}
    video = load_video(input_video, num_frames=num_frames, height=height, width=width)

    # 1. depth, computed once for all cameras
    depth_path = Path(depth) if depth is not None else out / "depth.npz"
    if depth is None:
        backend = depth_backend or "depthcrafter"
        settings = {"video": str(Path(input_video).resolve()), "frames": video.num_frames,
                    "size": [video.height, video.width], "backend": backend, "options": depth_options or {}}
        if _cached(out, "depth", settings, [depth_path]):
            result.stages["depth"] = "cached"
        else:
            from ex4d.depth.api import estimate_depth, save_depth_npz

            start = time.perf_counter()
            estimate = estimate_depth(video, backend, progress=progress, **(depth_options or {}))
            save_depth_npz(depth_path, estimate)
            timings["depth"] = time.perf_counter() - start
            _record(out, "depth", settings, timings["depth"])
            result.stages["depth"] = "ran"
    depth_stamp = depth_path.stat().st_mtime_ns if depth_path.is_file() else None

    for cam in cams:
        name = output_name(cam)
        # 2. DW-Mesh + render
        recon_settings = {"depth": str(depth_path.resolve()), "depth_mtime": depth_stamp, "cam": cam,
                          "frames": video.num_frames, "size": [video.height, video.width], "arrays": save_arrays}
        # The exact render is kept for the cache (the mp4s are lossy) in OUT/cache/.
        recon_files = [out / f"{n}_{name}.mp4" for n in ("color", "mask")] + [out / "cache" / f"render_{name}.npz"]
        stage = f"recon_{name}"
        if _cached(out, stage, recon_settings, recon_files):
            result.stages[stage] = "cached"
            res = _load_recon_cache(recon_files[2], video, name)
        else:
            start = time.perf_counter()
            res = recon(video, str(depth_path), cam=cam, num_frames=None, device=device, progress=progress)
            write_recon_outputs(res, out, name, save_arrays=save_arrays)
            save_npz_atomic(recon_files[2], color=res.color, mask=res.mask, depth=res.depth, w2c=res.trajectory.w2c,
                            K=res.K, source_K=res.source_K)
            timings[stage] = time.perf_counter() - start
            _record(out, stage, recon_settings, timings[stage])
            result.stages[stage] = "ran"

        # 3. fill
        output = out / f"output_{name}.mp4"
        # The recon record (settings + when it ran) makes a re-rendered camera refill.
        fill_settings = {"fill": fill, "recon_record": json.loads((out / f"{stage}.json").read_text()),
                         "generate": generate_options or {}, "arrays": save_arrays}
        output_arrays = out / f"output_{name}.npz"
        stage = f"fill_{name}"
        if _cached(out, stage, fill_settings, [output] + ([output_arrays] if save_arrays else [])):
            result.stages[stage] = "cached"
        else:
            start = time.perf_counter()
            if fill == "ex4d":
                from ex4d.inpaint.generate import generate

                generate(recon_files[0], recon_files[1], output, npz=output_arrays if save_arrays else None,
                         **(generate_options or {}))
            else:
                frames = res.color
                if fill == "offline":
                    from ex4d.fill.offline import offline_fill
                    from ex4d.reconstruction import check_depth, load_depth_file

                    source_depth = check_depth(load_depth_file(depth_path)[0], video.num_frames)
                    frames = offline_fill(res, source_depth, device=resolve_device(device))
                save_video(output, frames, fps=video.fps)
                if save_arrays:
                    save_npz_atomic(output_arrays, frames=frames)
            timings[stage] = time.perf_counter() - start
            _record(out, stage, fill_settings, timings[stage])
            result.stages[stage] = "ran"
        result.outputs[cam] = output
        _write_preview(out, name, video.frames, res.color, res.mask, output)

    _write_json(out / "run.json", {
        "ex4d": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "device": device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
        "input_video": str(input_video), "cams": list(cams), "fill": fill, "frames": video.num_frames,
        "size": [video.height, video.width], "stages": result.stages,
        "seconds": {k: round(v, 3) for k, v in timings.items()},
    })
    return result


def _load_recon_cache(path: Path, video, name: str):
    """The :class:`ReconResult` a previous run kept in ``OUT/cache/render_<cam>.npz``."""
    from ex4d.geometry.trajectory import Trajectory
    from ex4d.reconstruction import ReconResult

    with np.load(path) as cache:
        return ReconResult(cache["color"], cache["mask"], cache["depth"], Trajectory(cache["w2c"], name=name),
                           cache["K"], cache["source_K"], video.fps, video)


def _write_preview(out: Path, name: str, source: np.ndarray, color: np.ndarray, mask: np.ndarray,
                   output: Path) -> None:
    from ex4d.io.preview import side_by_side
    from ex4d.io.video import load_video, save_video

    filled = load_video(output, num_frames=None, height=source.shape[1], width=source.shape[2]).frames
    n = min(len(source), len(filled))
    save_video(out / f"preview_{name}.mp4",
               side_by_side([source[:n], color[:n], mask[:n], filled[:n]], ["input", "render", "mask", "output"]),
               fps=15.0)
