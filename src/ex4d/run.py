"""``ex4d run``: video -> depth -> DW-Mesh render -> fill, with each stage cached in the output folder.

Every stage writes its outputs (atomically) and a ``<stage>.json`` holding the settings it was computed with; a
later run whose settings for a stage are unchanged and whose outputs exist skips that stage, and a changed
setting recomputes that stage and the ones after it. ``run.json`` records versions, settings, timings and device.

Stages: ``depth`` (once), ``mesh`` (frame 0's DW-Mesh as ``mesh.glb``, once), then per camera ``recon_<cam>``
(render), ``trajectory_<cam>`` (``trajectory_<cam>.png``), ``fill_<cam>`` (``output_<cam>.mp4``) and
``preview_<cam>`` (``preview_<cam>.mp4`` + ``.gif``). A stage's record is written after its files, so an
interrupted stage has no record and reruns.
"""

from __future__ import annotations

import json
import platform
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ex4d import __version__
from ex4d.errors import InputError
from ex4d.io.atomic import atomic_path, save_npz_atomic
from ex4d.utils.device import resolve_device

FILLS = ("offline", "ex4d", "none")
OFFLINE_FILL_VERSION = 2  # 2: static-background plate + background-biased inpainting


#: ``generate_options`` keys that configure loading the generation pipeline, not one generation.
_LOAD_KEYS = ("model_dir", "adapter", "device", "torch_dtype", "offload", "fp8", "group_offload_type", "cpu_offload",
              "speed", "extra_loras", "parallel", "parallel_mode")


@dataclass
class RunResult:
    """What :func:`run` did: the output videos per camera, every file per camera, which stages ran or were reused."""

    outputs: dict[str, Path] = field(default_factory=dict)  # cam -> output_<cam>.mp4
    stages: dict[str, str] = field(default_factory=dict)  # stage -> "ran" | "cached"
    files: dict[str, dict[str, Path]] = field(default_factory=dict)  # cam -> kind -> path
    mesh: Path | None = None
    output_dir: Path | None = None

    def record(self) -> dict:
        """JSON-ready summary: output folder, mesh, stages and files per camera (paths as strings)."""
        return {"output_dir": str(self.output_dir), "mesh": str(self.mesh) if self.mesh else None,
                "stages": dict(self.stages),
                "files": {cam: {k: str(v) for k, v in files.items()} for cam, files in self.files.items()}}


class LazyPipeline:
    """The generation pipeline, loaded on first use and then reused (a batch shares one; a fully cached run
    never loads it). Callable like the pipeline itself, which is all :func:`ex4d.inpaint.generate` needs."""

    def __init__(self, generate_options: dict | None = None, device: str = "auto", progress: bool = True):
        self.options, self.device, self.progress = dict(generate_options or {}), device, progress
        self.pipe, self.loads = None, 0

    def get(self):
        if self.pipe is None:
            self.pipe = load_generation_pipeline(self.options, self.device, self.progress)
            self.loads += 1
        return self.pipe

    def __call__(self, *args, **kwargs):
        return self.get()(*args, **kwargs)


def load_generation_pipeline(options: dict, device: str = "auto", progress: bool = True):
    """Load Wan2.1-I2V + the EX-4D adapter as ``generate`` would (``options``: ``model_dir``, ``adapter`` and
    optionally ``device``, ``torch_dtype``, ``offload``, ``fp8``, ``group_offload_type``, ``speed``,
    ``extra_loras``; context parallelism is ``ex4d generate``'s alone)."""
    load = _generation_module().load_generation_pipeline
    if options.get("model_dir") is None or options.get("adapter") is None:
        raise InputError("--fill ex4d needs the Wan2.1-I2V folder (--wan-dir) and ex4d.ckpt (--ex4d-ckpt)")
    pipe = load(options["model_dir"], options["adapter"], resolve_device(str(options.get("device") or device)),
                torch_dtype=options.get("torch_dtype"), offload=options.get("offload", "none"),
                fp8=options.get("fp8", False), group_offload_type=options.get("group_offload_type", "block_level"),
                speed=options.get("speed"), extra_loras=options.get("extra_loras") or ())
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=not progress)
    return pipe


def _generation_module():
    """``ex4d.inpaint.generate``, or a one-line error naming the extra it needs."""
    try:
        from ex4d.inpaint import generate
    except ImportError as exc:
        raise InputError(f'--fill ex4d needs the diffusion extra: pip install "ex4d[diffusion]" ({exc})') from None
    return generate


def check_generation_options(options: dict, device: str = "auto") -> None:
    """:func:`ex4d.inpaint.generate.check_generation_setup` for ``generate_options``, run before the depth and render
    stages so that a bad ``--fill ex4d`` set-up fails in seconds, not after them."""
    _generation_module().check_generation_setup(
        resolve_device(str(options.get("device") or device)), torch_dtype=options.get("torch_dtype"),
        offload=options.get("offload", "none"), fp8=options.get("fp8", False), speed=options.get("speed"))


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
        generate_options: dict | None = None, save_arrays: bool = False, progress: bool = True,
        pipe=None) -> RunResult:
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
        progress: progress bars on stderr (False: none, the generation pipeline's included).
        pipe: ``fill="ex4d"`` only: an already loaded generation pipeline (or a :class:`LazyPipeline`) to use
            instead of loading one, so that many runs share one model load (``generate_options``' loading keys
            are then only recorded, for the cache).

    Returns:
        A :class:`RunResult`; ``outputs[cam]`` is ``output_<cam>.mp4``.

    Raises:
        InputError: bad input or options.
    """
    from ex4d.io.source import load_source, load_working_video
    from ex4d.io.video import save_video
    from ex4d.reconstruction import output_name, recon, write_recon_outputs

    if fill not in FILLS:
        raise InputError(f"unknown fill '{fill}'; choose {', '.join(FILLS)}")
    if depth is not None and depth_backend is not None:
        raise InputError("give either a depth file or a depth backend, not both")
    if not cams:
        raise InputError("at least one camera path is needed")
    if fill == "ex4d" and pipe is None:
        check_generation_options(generate_options or {}, device)
    # The working size and checks of ex4d recon (ex4d.io.source): a --depth file, or the file backend's, sets the size.
    if depth is not None:
        video = load_source(input_video, depth, num_frames=num_frames, height=height, width=width).video
    else:
        file = (depth_options or {}).get("path") if depth_backend == "file" else None
        video = load_working_video(input_video, num_frames=num_frames, height=height, width=width, depth_file=file)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)  # after the video loads: a bad input leaves no empty folder
    result, timings = RunResult(output_dir=out), {}

    def stage(name: str, settings: dict, files: list[Path], compute) -> None:
        """Run ``compute()`` unless the stage's record matches ``settings`` and its ``files`` exist."""
        if _cached(out, name, settings, files):
            result.stages[name] = "cached"
            return
        start = time.perf_counter()
        compute()
        timings[name] = time.perf_counter() - start
        _record(out, name, settings, timings[name])  # last: an interrupted stage leaves no record
        result.stages[name] = "ran"

    # 1. depth, computed once for all cameras
    depth_path = Path(depth) if depth is not None else out / "depth.npz"
    if depth is None:
        backend = depth_backend or "depthcrafter"

        def estimate():
            from ex4d.depth.api import estimate_depth, save_depth_npz

            save_depth_npz(depth_path, estimate_depth(video, backend, progress=progress, **(depth_options or {})))

        stage("depth", {"video": str(Path(input_video).resolve()), "frames": video.num_frames,
                        "size": [video.height, video.width], "backend": backend, "options": depth_options or {}},
              [depth_path], estimate)
    depth_stamp = depth_path.stat().st_mtime_ns if depth_path.is_file() else None
    scene = _SourceScene(depth_path, video)

    # 2. frame 0's DW-Mesh, for viewers (a 3D look at what the renders come from)
    result.mesh = out / "mesh.glb"
    stage("mesh", {"depth": str(depth_path.resolve()), "depth_mtime": depth_stamp,
                   "video": str(Path(input_video).resolve()), "frames": video.num_frames,
                   "size": [video.height, video.width]}, [result.mesh], lambda: scene.export_mesh(result.mesh))

    if fill == "ex4d" and pipe is None:
        pipe = LazyPipeline(generate_options, device, progress)
    for cam in cams:
        name = output_name(cam)
        files = result.files.setdefault(cam, {})
        # 3. DW-Mesh + render
        recon_settings = {"depth": str(depth_path.resolve()), "depth_mtime": depth_stamp, "cam": cam,
                          "frames": video.num_frames, "size": [video.height, video.width], "arrays": save_arrays}
        # The exact render is kept for the cache (the mp4s are lossy) in OUT/cache/.
        recon_files = [out / f"{n}_{name}.mp4" for n in ("color", "mask")] + [out / "cache" / f"render_{name}.npz"]
        files.update(color=recon_files[0], mask=recon_files[1], camera=out / f"camera_{name}.npz")
        rendered = []

        def render():
            res = recon(video, str(depth_path), cam=cam, num_frames=None, device=device, progress=progress)
            write_recon_outputs(res, out, name, save_arrays=save_arrays)
            save_npz_atomic(recon_files[2], color=res.color, mask=res.mask, depth=res.depth,
                            w2c=res.trajectory.w2c, K=res.K, source_K=res.source_K)
            rendered.append(res)

        stage(f"recon_{name}", recon_settings, recon_files, render)
        res = rendered[0] if rendered else _load_recon_cache(recon_files[2], video, name)
        # Later stages depend on the record (settings + when it ran), so a re-rendered camera redoes them.
        recon_record = json.loads((out / f"recon_{name}.json").read_text())

        # 4. the camera path drawn over the scene
        files["trajectory"] = out / f"trajectory_{name}.png"
        stage(f"trajectory_{name}", {"recon_record": recon_record}, [files["trajectory"]],
              lambda: scene.plot_trajectory(files["trajectory"], res.trajectory.w2c, name))

        # 5. fill
        output = out / f"output_{name}.mp4"
        output_arrays = out / f"output_{name}.npz"

        def fill_holes():
            if fill == "ex4d":
                from ex4d.inpaint.generate import generate

                options = {k: v for k, v in (generate_options or {}).items() if k not in _LOAD_KEYS}
                generate(recon_files[0], recon_files[1], output, npz=output_arrays if save_arrays else None,
                         pipe=pipe, **options)
                return
            frames = res.color
            if fill == "offline":
                from ex4d.fill.offline import offline_fill

                frames = offline_fill(res, scene.depth, device=resolve_device(device))
            save_video(output, frames, fps=video.fps)
            if save_arrays:
                save_npz_atomic(output_arrays, frames=frames)

        # The offline fill's algorithm version is part of its settings: an improved fill recomputes old outputs.
        fill_version = OFFLINE_FILL_VERSION if fill == "offline" else None
        stage(f"fill_{name}", {"fill": fill, "fill_version": fill_version, "recon_record": recon_record,
                               "generate": generate_options or {}, "arrays": save_arrays},
              [output] + ([output_arrays] if save_arrays else []), fill_holes)
        result.outputs[cam] = files["output"] = output

        # 6. previews: input | render | mask | output as mp4 and as a small gif
        files.update(preview_mp4=out / f"preview_{name}.mp4", preview_gif=out / f"preview_{name}.gif")
        stage(f"preview_{name}", {"fill_record": json.loads((out / f"fill_{name}.json").read_text())},
              [files["preview_mp4"], files["preview_gif"]],
              lambda: _write_previews(files["preview_mp4"], files["preview_gif"], video, res.color, res.mask,
                                      output))

    _write_json(out / "run.json", {
        "ex4d": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "device": device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
        "input_video": str(input_video), "cams": list(cams), "fill": fill, "frames": video.num_frames,
        "size": [video.height, video.width], "stages": result.stages,
        "seconds": {k: round(v, 3) for k, v in timings.items()},
    })
    return result


class _SourceScene:
    """The source depth, intrinsics and frame 0 of a run, read from ``depth_path`` only when a stage needs them."""

    def __init__(self, depth_path: Path, video):
        self.depth_path, self.video = depth_path, video
        self._depth = self._K = None

    def _load(self) -> None:
        from ex4d.geometry.conventions import reference_intrinsics
        from ex4d.reconstruction import check_depth, check_intrinsics, load_depth_file

        if self._depth is None:
            depth, K = load_depth_file(self.depth_path)
            self._depth = check_depth(depth, self.video.num_frames)
            H, W = self._depth.shape[1:]
            # As recon: the depth file's intrinsics, else the reference's f = 500 px.
            self._K = check_intrinsics(reference_intrinsics(H, W).numpy() if K is None else K, len(self._depth))

    @property
    def depth(self) -> np.ndarray:
        """(T, H, W) float32 source z-depth."""
        self._load()
        return self._depth

    def export_mesh(self, path: Path) -> None:
        from ex4d.mesh.build import build_dw_mesh
        from ex4d.mesh.export import export_mesh

        self._load()
        if self._depth.shape[1:] != self.video.frames.shape[1:3]:
            raise InputError(f"{self.depth_path}: depth maps are {self._depth.shape[1]}×{self._depth.shape[2]} "
                             f"but the video frames are {self.video.height}×{self.video.width}")
        mesh = build_dw_mesh(torch.from_numpy(self._depth[:1]), torch.from_numpy(self.video.frames[:1]),
                             torch.from_numpy(self._K[:1]))
        export_mesh(path, mesh)

    def plot_trajectory(self, path: Path, w2c: np.ndarray, name: str) -> None:
        from ex4d.geometry.conventions import unproject_depth
        from ex4d.io.trajectory_plot import save_trajectory_plot

        self._load()
        points = unproject_depth(torch.from_numpy(self._depth[0]), torch.from_numpy(self._K[0])).numpy()
        save_trajectory_plot(path, w2c, points, self.video.frames[0], title=f"CAM {name}")


def _load_recon_cache(path: Path, video, name: str):
    """The :class:`ReconResult` a previous run kept in ``OUT/cache/render_<cam>.npz``."""
    from ex4d.geometry.trajectory import Trajectory
    from ex4d.reconstruction import ReconResult

    with np.load(path) as cache:
        return ReconResult(cache["color"], cache["mask"], cache["depth"], Trajectory(cache["w2c"], name=name),
                           cache["K"], cache["source_K"], video.fps, video)


def _write_previews(mp4: Path, gif: Path, video, color: np.ndarray, mask: np.ndarray, output: Path) -> None:
    """``mp4``: input | render | mask | output in a row at 15 fps; ``gif``: the same as a 2×2 grid, small."""
    from ex4d.io.preview import save_grid_gif, side_by_side
    from ex4d.io.video import load_video, save_video

    source = video.frames
    filled = load_video(output, num_frames=None, height=source.shape[1], width=source.shape[2]).frames
    n = min(len(source), len(filled))
    panels = [source[:n], color[:n], mask[:n], filled[:n]]
    labels = ["input", "render", "mask", "output"]
    save_video(mp4, side_by_side(panels, labels), fps=15.0)
    save_grid_gif(gif, panels, labels, fps=video.fps)


class _CallableModule(types.ModuleType):
    """This module called as a function is :func:`run`: ``ex4d.run(...)`` works whether ``ex4d.run`` resolves to
    the module (after ``import ex4d.run``) or comes from ``ex4d``'s lazy API."""

    def __call__(self, *args, **kwargs) -> RunResult:
        return run(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
