"""``ex4d run``: video -> depth -> DW-Mesh render -> fill, each stage cached in the output folder.

:func:`run` is a sequence of stage functions (:func:`depth_stage`, :func:`mesh_stage`, then per camera
:func:`render_stage`, :func:`trajectory_stage`, :func:`fill_stage`, :func:`preview_stage`). Each declares a
:class:`ex4d.stages.Stage` — the files it reads (the video, a depth file, a trajectory file, the model weights),
the keys of the stages before it, its settings and result version — and :class:`ex4d.stages.StageRunner` reruns it
iff that declaration's key changed or an output is missing. ``<stage>.json`` holds the key and the inputs it was
derived from; ``run.json`` records versions, settings, timings and device.

Stages: ``depth`` (once, unless a depth file is given), ``mesh`` (frame 0's DW-Mesh as ``mesh.glb``), then per
camera ``recon_<cam>`` (render), ``trajectory_<cam>`` (``trajectory_<cam>.png``), ``fill_<cam>``
(``output_<cam>.mp4``) and ``preview_<cam>`` (``preview_<cam>.mp4`` + ``.gif``).
"""

from __future__ import annotations

import dataclasses
import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ex4d import __version__
from ex4d.depth.options import DepthOptions
from ex4d.errors import InputError, InputWarning
from ex4d.generation_options import GenerationOptions, ModelOptions, as_generation_options
from ex4d.io.atomic import atomic_path, save_npz_atomic
from ex4d.stages import Stage, StageRunner, canonical, stable_hash
from ex4d.utils.device import resolve_device

if TYPE_CHECKING:
    from ex4d.io.video import Video

FILLS = ("offline", "ex4d", "none")
# Result versions: bump one when ex4d's code for that stage changes what it writes, so old outputs are recomputed.
DEPTH_VERSION = 1
MESH_VERSION = 1
RENDER_VERSION = 1
TRAJECTORY_PLOT_VERSION = 1
OFFLINE_FILL_VERSION = 3  # 2: static-background plate + background-biased inpainting; 3: plate depth summed in float64
NO_FILL_VERSION = 1
EX4D_FILL_VERSION = 3  # 2: frames, size and rate derived from the render; 3: every frame, windows
PREVIEW_VERSION = 1
#: Frames laid side by side and encoded at a time by the preview stage.
PREVIEW_CHUNK = 16


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
    never loads it). Callable like the pipeline itself, which is all :func:`ex4d.inpaint.generate` needs.

    Args:
        options: how to load it (:class:`ModelOptions`; a :class:`GenerationOptions` or the older dict form is
            accepted, its model part used).
    """

    def __init__(self, options: ModelOptions | GenerationOptions | dict | None = None, device: str = "auto",
                 progress: bool = True):
        if not isinstance(options, ModelOptions):
            options = as_generation_options(options).model
        self.options, self.device, self.progress = options, device, progress
        self.pipe, self.loads = None, 0

    def get(self):
        if self.pipe is None:
            self.pipe = self.options.load(self.device, self.progress)
            self.loads += 1
        return self.pipe

    def __call__(self, *args, **kwargs):
        return self.get()(*args, **kwargs)


def check_generation_options(options: ModelOptions | GenerationOptions | dict | None, device: str = "auto") -> None:
    """What loading the model would refuse, checked before the depth and render stages so that a bad
    ``--fill ex4d`` set-up fails in seconds, not after them; also a one-line error without the diffusion extra."""
    model = options if isinstance(options, ModelOptions) else as_generation_options(options).model
    try:
        import ex4d.inpaint.generate  # noqa: F401
    except ImportError as exc:
        raise InputError(f'--fill ex4d needs the diffusion extra: pip install "ex4d[diffusion]" ({exc})') from None
    model.check(device)


@dataclass
class RunContext:
    """What every stage of one run shares: where it writes, the runner, the decoded video and the run's flags."""

    out: Path
    runner: StageRunner
    video_path: Path
    video: Video  # already cut to the run's frames and resized to its working size
    device: str
    progress: bool
    save_arrays: bool

    def video_inputs(self) -> dict:
        """The declaration parts of a stage that reads the decoded video: its file and how it was cut."""
        return {"files": {"video": self.video_path},
                "settings": {"frames": self.video.num_frames, "size": [self.video.height, self.video.width]}}


@dataclass
class DepthSource:
    """The depth file of a run and how a stage declares it: the ``depth`` stage's key, or the given file."""

    path: Path
    stage_key: str | None  # None: a file given by the user (keyed by its content)

    def declare(self) -> dict:
        if self.stage_key is not None:
            return {"upstream": {"depth": self.stage_key}, "files": {}}
        return {"upstream": {}, "files": {"depth": self.path}}


def _declare(name, compute, outputs, *parts: dict, settings: dict | None = None, version: int = 1) -> Stage:
    """A :class:`Stage` from declaration parts (``files`` / ``upstream`` / ``settings`` dicts, merged)."""
    files, upstream, merged = {}, {}, {}
    for part in parts:
        files.update(part.get("files", {}))
        upstream.update(part.get("upstream", {}))
        merged.update(part.get("settings", {}))
    merged.update(settings or {})
    return Stage(name, compute, list(outputs), files, upstream, merged, version)


def run(input_video: str | Path, output_dir: str | Path, cams: list[str] = ("180",), depth: str | Path | None = None,
        depth_backend: str | None = None, depth_options: DepthOptions | dict | None = None, fill: str = "offline",
        num_frames: int | None = 49, height: int | None = None, width: int | None = None, device: str = "auto",
        generate_options: GenerationOptions | dict | None = None, save_arrays: bool = False, progress: bool = True,
        pipe=None) -> RunResult:
    """Run the whole pipeline on one video for one or more camera paths.

    Args:
        input_video: video file or image folder.
        output_dir: where every stage writes (created if missing).
        cams: presets or trajectory files; depth and meshes are computed once for all of them.
        depth: a ``D.npz`` to use instead of estimating depth; else the depth is estimated as ``depth_options`` say
            (:class:`~ex4d.depth.options.DepthOptions`: backend, default ``depthcrafter``, and its options, as
            ``ex4d depth``), or as ``depth_backend`` + a dict of its constructor options (the older form).
        fill: ``offline`` (no learned weights), ``ex4d`` (the EX-4D video model, loaded and sampled with
            ``generate_options``; its frames, size and rate are the render's, rounded to what the model takes)
            or ``none`` (the render is the output).
        num_frames, height, width: frames taken from the start of the video and the working size.
        device: ``auto``, ``cpu`` or ``cuda``.
        generate_options: :class:`~ex4d.generation_options.GenerationOptions` (or a dict of
            :func:`ex4d.inpaint.generate.generate`'s option names, without geometry).
        save_arrays: also write the exact frames of every video: ``render_<cam>.npz`` (``color``, ``mask``,
            ``depth``, as ``ex4d recon --save-arrays``) and ``output_<cam>.npz`` (``frames``).
        progress: progress bars on stderr (False: none, the generation pipeline's included).
        pipe: ``fill="ex4d"`` only: an already loaded generation pipeline (or a :class:`LazyPipeline`) to use
            instead of loading one, so that many runs share one model load (the model options are then only
            keyed, for the cache).

    Returns:
        A :class:`RunResult`; ``outputs[cam]`` is ``output_<cam>.mp4``.

    Raises:
        InputError: bad input or options.
    """
    from ex4d.io.source import load_source, load_working_video

    if fill not in FILLS:
        raise InputError(f"unknown fill '{fill}'; choose {', '.join(FILLS)}")
    if depth is not None and (depth_backend is not None or depth_options is not None):
        raise InputError("give either a depth file or a depth backend, not both")
    if isinstance(depth_options, DepthOptions):
        if depth_backend is not None and depth_backend != depth_options.backend:
            raise InputError(f"depth_backend {depth_backend!r} differs from depth_options.backend "
                             f"{depth_options.backend!r}")
    elif depth is None:
        depth_options = DepthOptions.from_backend(depth_backend, depth_options)
    if depth_options is not None:
        depth_options = depth_options.with_device(device)
    if not cams:
        raise InputError("at least one camera path is needed")
    options = as_generation_options(generate_options) if fill == "ex4d" else None
    if fill == "ex4d" and pipe is None:
        check_generation_options(options.model, device)
    # The working size and checks of ex4d recon (ex4d.io.source): a --depth file, or the file backend's, sets the size.
    if depth is not None:
        video = load_source(input_video, depth, num_frames=num_frames, height=height, width=width).video
    else:
        video = load_working_video(input_video, num_frames=num_frames, height=height, width=width,
                                   depth_file=depth_options.file_path)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)  # after the video loads: a bad input leaves no empty folder
    ctx = RunContext(out, StageRunner(out, __version__), Path(input_video), video, device, progress, save_arrays)
    result = RunResult(output_dir=out)

    source = depth_stage(ctx, depth, depth_options)
    scene = _SourceScene(source.path, video)
    result.mesh = mesh_stage(ctx, source, scene)
    if fill == "ex4d" and pipe is None:
        pipe = LazyPipeline(options.model, device, progress)
    for cam in cams:
        render = render_stage(ctx, source, cam)
        trajectory = trajectory_stage(ctx, scene, render)
        output = fill_stage(ctx, scene, render, fill, options, pipe)
        previews = preview_stage(ctx, render, output)
        result.files[cam] = {**render.files, "trajectory": trajectory, "output": output.path, **previews}
        result.outputs[cam] = output.path
    result.stages = dict(ctx.runner.states)

    _write_json(out / "run.json", {
        "ex4d": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "device": device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
        "input_video": str(input_video), "depth": None if depth is None else str(Path(depth).resolve()),
        "cams": list(cams), "fill": fill, "frames": video.num_frames,
        "size": [video.height, video.width], "stages": result.stages,
        "seconds": {k: round(v, 3) for k, v in ctx.runner.seconds.items()},
    })
    return result


def depth_stage(ctx: RunContext, depth: str | Path | None, options: DepthOptions | None) -> DepthSource:
    """``depth``: the given depth file as is, else ``OUT/depth.npz`` estimated once for all cameras."""
    if depth is not None:
        return DepthSource(Path(depth), None)
    path = ctx.out / "depth.npz"

    def estimate():
        from ex4d.depth.api import estimate_depth, save_depth_npz

        save_depth_npz(path, estimate_depth(ctx.video, options.backend, progress=ctx.progress,
                                            **options.estimate_kwargs()))

    # The file backend's depth file is keyed by its contents, not its path; where a model runs is not keyed.
    settings = {k: v for k, v in dataclasses.asdict(options).items() if k not in ("file", "device")}
    stage = _declare("depth", estimate, [path], ctx.video_inputs(), {"files": {"option_path": options.file_path}},
                     settings={"backend": options.backend, "options": canonical(settings)}, version=DEPTH_VERSION)
    key, _ = ctx.runner.run(stage)
    return DepthSource(path, key)


def mesh_stage(ctx: RunContext, source: DepthSource, scene: _SourceScene) -> Path:
    """``mesh``: frame 0's DW-Mesh as ``mesh.glb``, for viewers."""
    path = ctx.out / "mesh.glb"
    ctx.runner.run(_declare("mesh", lambda: scene.export_mesh(path), [path], ctx.video_inputs(), source.declare(),
                            version=MESH_VERSION))
    return path


class Render:
    """One camera's render: its stage key, its files, and the :class:`ReconResult` (read back from
    ``OUT/cache/`` only when a later stage needs it)."""

    def __init__(self, ctx: RunContext, name: str, key: str, files: dict[str, Path], cache: Path, result=None):
        self.ctx, self.name, self.key, self.files, self.cache, self._result = ctx, name, key, files, cache, result

    @property
    def result(self):
        if self._result is None:
            self._result = _load_recon_cache(self.cache, self.ctx.video, self.name)
        return self._result


def render_stage(ctx: RunContext, source: DepthSource, cam: str) -> Render:
    """``recon_<cam>``: the DW-Mesh of every frame rendered along ``cam`` (``ex4d recon``'s outputs), and the
    exact render kept in ``OUT/cache/`` (the mp4s are lossy) for the later stages."""
    from ex4d.io.trajectory_file import TRAJECTORY_SUFFIXES
    from ex4d.reconstruction import output_name, recon, write_recon_outputs

    name = output_name(cam)
    out = ctx.out
    files = {"color": out / f"color_{name}.mp4", "mask": out / f"mask_{name}.mp4",
             "camera": out / f"camera_{name}.npz"}
    cache = out / "cache" / f"render_{name}.npz"
    outputs = [*files.values(), cache] + ([out / f"render_{name}.npz"] if ctx.save_arrays else [])

    def render():
        res = recon(ctx.video, str(source.path), cam=cam, num_frames=None, device=ctx.device, progress=ctx.progress)
        write_recon_outputs(res, out, name, save_arrays=ctx.save_arrays)
        save_npz_atomic(cache, color=res.color, mask=res.mask, depth=res.depth, w2c=res.trajectory.w2c, K=res.K,
                        source_K=res.source_K)
        return res

    trajectory_file = Path(cam) if Path(cam).suffix.lower() in TRAJECTORY_SUFFIXES else None
    stage = _declare(f"recon_{name}", render, outputs, ctx.video_inputs(), source.declare(),
                     {"files": {"trajectory": trajectory_file}},
                     settings={"cam": None if trajectory_file else cam, "arrays": ctx.save_arrays},
                     version=RENDER_VERSION)
    key, res = ctx.runner.run(stage)
    return Render(ctx, name, key, files, cache, res)


def trajectory_stage(ctx: RunContext, scene: _SourceScene, render: Render) -> Path:
    """``trajectory_<cam>``: the camera path drawn over frame 0's point cloud."""
    path = ctx.out / f"trajectory_{render.name}.png"
    ctx.runner.run(_declare(f"trajectory_{render.name}",
                            lambda: scene.plot_trajectory(path, render.result.trajectory.w2c, render.name), [path],
                            {"upstream": {"recon": render.key}}, version=TRAJECTORY_PLOT_VERSION))
    return path


@dataclass
class FillOutput:
    path: Path
    key: str


def fill_stage(ctx: RunContext, scene: _SourceScene, render: Render, fill: str,
               options: GenerationOptions | None, pipe) -> FillOutput:
    """``fill_<cam>``: the holes of the render filled (``output_<cam>.mp4``): offline, by the EX-4D model, or not
    at all."""
    from ex4d.io.video import save_video

    output = ctx.out / f"output_{render.name}.mp4"
    arrays = ctx.out / f"output_{render.name}.npz"
    outputs = [output] + ([arrays] if ctx.save_arrays else [])
    upstream = {"upstream": {"recon": render.key}}
    settings = {"fill": fill, "arrays": ctx.save_arrays}

    if fill == "ex4d":
        def compute():
            # an interrupted fill resumes at its first unfinished window, for the same model and inputs only
            resume_key = stable_hash({"stage": stage.inputs(ctx.runner.fingerprints)})
            _generate(render.result, render.files, output, arrays if ctx.save_arrays else None, options, pipe,
                      resume_key)

        stage = _declare(f"fill_{render.name}", compute, outputs, upstream, {"files": options.model.weight_files()},
                         settings={**settings, "model": options.model.cache_settings(),
                                   "sampling": options.sampling}, version=EX4D_FILL_VERSION)
    else:
        def compute():
            res = render.result
            frames = res.color
            if fill == "offline":
                from ex4d.fill.offline import offline_fill

                frames = offline_fill(res, scene.depth, device=resolve_device(ctx.device))
            save_video(output, frames, fps=res.fps)
            if ctx.save_arrays:
                save_npz_atomic(arrays, frames=frames)

        stage = _declare(f"fill_{render.name}", compute, outputs, upstream, settings=settings,
                         version=OFFLINE_FILL_VERSION if fill == "offline" else NO_FILL_VERSION)
    key, _ = ctx.runner.run(stage)
    return FillOutput(output, key)


def _generate(res, files: dict[str, Path], output: Path, arrays: Path | None, options: GenerationOptions, pipe,
              resume_key: str):
    """The EX-4D model on one render: every frame (overlapping windows beyond one window, so the output has the
    render's frame count), at the render's size (rounded to multiples of 16 as the model needs) and frame rate."""
    from ex4d.generation_options import fill_geometry
    from ex4d.inpaint.generate import generate

    T, H, W = res.color.shape[:3]
    geometry, note = fill_geometry(T, H, W, res.fps)
    if note:
        warnings.warn(note, InputWarning, stacklevel=2)
    generate(files["color"], files["mask"], output, npz=arrays, pipe=pipe, height=geometry.height,
             width=geometry.width, num_frames=None, fps=geometry.fps, resume_key=resume_key,
             **options.sampling.generate_kwargs())


def preview_stage(ctx: RunContext, render: Render, output: FillOutput) -> dict[str, Path]:
    """``preview_<cam>``: input | render | mask | output side by side, as mp4 and as a small gif."""
    files = {"preview_mp4": ctx.out / f"preview_{render.name}.mp4",
             "preview_gif": ctx.out / f"preview_{render.name}.gif"}
    ctx.runner.run(_declare(
        f"preview_{render.name}",
        lambda: _write_previews(files["preview_mp4"], files["preview_gif"], ctx.video, render.result.color,
                                render.result.mask, output.path),
        list(files.values()), {"upstream": {"recon": render.key, "fill": output.key}}, version=PREVIEW_VERSION))
    return files


def _write_json(path: Path, data: dict) -> None:
    import json

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))


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
    # a few frames at a time: the side-by-side frames of a whole long clip would be 4 clips' worth of memory
    save_video(mp4, (side_by_side([p[lo:lo + PREVIEW_CHUNK] for p in panels], labels)
                     for lo in range(0, n, PREVIEW_CHUNK)), fps=15.0)
    save_grid_gif(gif, panels, labels, fps=video.fps)
