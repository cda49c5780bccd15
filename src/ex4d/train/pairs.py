"""Training pairs from monocular clips (spec §9.2): target video, simulated mask, masked colour video.

:func:`build_pairs` turns every clip of a folder into ``DATA/<clip>/`` (layout in ``docs/training.md``):
``target.mp4`` (the clip), ``cond.mp4`` (clip × mask), ``mask.mp4`` (255 = kept), ``pair.npz`` (the exact mask)
and ``meta.json``, plus ``DATA/index.jsonl`` listing the finished clips. Each clip's random choices (mask kind,
trajectory, hole) come from a generator seeded by (seed, clip name), so results do not depend on the order of the
clips or on the number of worker processes. A clip is written to a hidden temporary folder that is renamed into
place when complete, so a killed run leaves no partial clip; a rerun skips every clip whose ``meta.json`` holds the
same settings.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import secrets
import shutil
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ex4d import __version__
from ex4d.errors import InputError, option
from ex4d.io.atomic import atomic_path
from ex4d.utils.sorting import natural_key

__all__ = ["Clip", "ClipOutcome", "MASK_KINDS", "PairSettings", "PrepareResult", "TRACKERS", "TRACK_HOLES",
           "build_pairs", "find_clips", "make_pair", "parse_mask_kinds", "parse_trajectories", "process_clip"]

#: Mask kinds: a rendering mask, a tracking mask, or both combined (a pixel is kept only if both keep it).
MASK_KINDS = ("render", "track", "both")
#: Default weights of the kinds when none are given (``render,track`` -> 70 % / 30 %).
DEFAULT_KIND_WEIGHTS = {"render": 0.7, "track": 0.3, "both": 0.3}
#: What a tracking mask's hole is made of (see :attr:`PairSettings.track_hole`).
TRACK_HOLES = ("blobs", "render")
#: What tracking masks' holes move along (see :attr:`PairSettings.tracker`); a callable is also accepted.
TRACKERS = ("flow", "tracks")
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".gif"})
PAIR_FILES = ("target.mp4", "cond.mp4", "mask.mp4", "pair.npz", "meta.json")
INDEX_NAME = "index.jsonl"


@dataclass(frozen=True)
class PairSettings:
    """What a pair is made from; everything here (but ``device``/``batch_size``) is recorded in ``meta.json``."""

    trajectories: tuple[str, ...] = ("30", "60", "90", "180")
    """Presets a clip's novel camera path is drawn from (uniformly)."""
    random_sign: bool = True
    """Integer-angle presets orbit left or right at random (``60`` or ``-60``)."""
    num_frames: int = 49
    """Frames taken from the start of each clip (shorter clips fail)."""
    height: int = 512
    """Working height (frames are resized, as the generator's 512² squash)."""
    width: int = 512
    """Working width."""
    mask_kinds: tuple[tuple[str, float], ...] = (("render", 0.7), ("track", 0.3))
    """(kind, weight) pairs; a clip's kind is drawn with these weights."""
    seed: int = 0
    """Global seed; each clip's generator is seeded by (seed, clip name)."""
    depth_backend: str = "depthcrafter"
    """Backend used for clips without a ``<stem>.npz`` depth file beside them."""
    depth_options: dict = field(default_factory=dict)
    """Constructor options of the depth backend (model paths, dtype, ...)."""
    depth_file_options: dict = field(default_factory=dict)
    """Options for reading the ``<stem>.npz`` files (``units``, ``scale``)."""
    intrinsics: dict = field(default_factory=lambda: {"intrinsics": "auto"})
    """Intrinsics policy passed to :func:`ex4d.depth.api.estimate_depth` (``intrinsics``, ``focal_px``, ...)."""
    track_hole: str = "blobs"
    """What a tracking mask carries along the flow: ``blobs`` (random ellipses) or ``render`` (the hidden region of
    the rendering mask of a random frame: a disocclusion's shape; needs depth)."""
    tracker: object = "flow"
    """What tracking masks' holes move along: ``"flow"`` (OpenCV Farnebäck optical flow), ``"tracks"`` (point
    tracks from ``<stem>.tracks.npz`` beside each clip, see ``docs/training.md``) or a callable
    ``(frames: (T, H, W, 3) uint8) -> (tracks (T, N, 2), visible (T, N) bool)`` run on each working clip, e.g. a
    learned point tracker (coordinates in the clip's pixels, pixel centres at ``u + 0.5``)."""
    save_frames: bool = False
    """Also store the exact frames in ``pair.npz`` (``frames``), since H.264 is lossy."""
    device: str = "cpu"
    """Where meshes are built and rendered (and the depth model runs): ``cpu``, ``cuda`` or ``auto``."""
    batch_size: int = 8
    """Frames meshed and rendered together."""

    def record(self, clip: "Clip") -> dict:
        """The settings a finished clip is compared against on resume (JSON-ready)."""
        out = asdict(replace(self, tracker="flow"))  # asdict would deep-copy a tracker object (and its model)
        out.pop("device"), out.pop("batch_size")
        if callable(self.tracker):
            out["tracker"] = _callable_name(self.tracker)
        elif self.tracker == "flow":
            out.pop("tracker")  # pairs made before this setting existed stay valid
        else:
            out["tracker"] = self.tracker
        out["trajectories"], out["mask_kinds"] = list(self.trajectories), dict(self.mask_kinds)
        out["video"] = clip.video.name
        out["depth_source"] = clip.depth_source(self)
        if clip.depth_file is None:
            out.pop("depth_file_options")
        else:
            out.pop("depth_backend"), out.pop("depth_options")
        return json.loads(json.dumps(out, default=str))


def _callable_name(fn) -> str:
    fn_type = fn if isinstance(fn, type) or hasattr(fn, "__qualname__") else type(fn)
    return f"callable:{getattr(fn_type, '__module__', '?')}.{getattr(fn_type, '__qualname__', repr(fn_type))}"


@dataclass(frozen=True)
class Clip:
    """One input clip: ``name`` (its stem, the output folder's name), the video and an optional depth file."""

    name: str
    video: Path
    depth_file: Path | None = None

    def depth_source(self, settings: PairSettings) -> str:
        return f"file:{self.depth_file.name}" if self.depth_file is not None else settings.depth_backend


@dataclass
class ClipOutcome:
    """What happened to one clip: ``status`` is ``done``, ``skipped`` (already there) or ``failed``."""

    name: str
    status: str
    message: str = ""
    seconds: float = 0.0
    error: InputError | None = field(default=None, repr=False, compare=False)
    """The bad-input error of a failed clip, for a CLI to render with its flags (``InputError.render``)."""


@dataclass
class PrepareResult:
    """Outcome of :func:`build_pairs`."""

    outcomes: list[ClipOutcome]
    index: Path

    def names(self, status: str) -> list[str]:
        return [o.name for o in self.outcomes if o.status == status]

    @property
    def failed(self) -> dict[str, str]:
        return {o.name: o.message for o in self.outcomes if o.status == "failed"}


# ------------------------------------------------------------------------------------------------------------
# Options
# ------------------------------------------------------------------------------------------------------------

def parse_trajectories(text: str) -> tuple[str, ...]:
    """``"30,60,orbit:angle=120,elevation=10,180"`` -> ``("30", "60", "orbit:angle=120,elevation=10", "180")``:
    a ``key=value`` item continues the preceding preset's parameters."""
    items: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" in part and ":" not in part and items:
            items[-1] += "," + part
        else:
            items.append(part)
    if not items:
        raise InputError("no trajectories given (e.g. 30,60,90,180)")
    from ex4d.geometry.trajectory import make_trajectory

    for spec in items:
        make_trajectory(spec, 2, 1.0)  # unknown presets and bad parameters fail here, before any clip
    return tuple(items)


def parse_mask_kinds(text: str) -> tuple[tuple[str, float], ...]:
    """``"render,track"`` (default weights, see :data:`DEFAULT_KIND_WEIGHTS`) or ``"render:0.6,both:0.4"``.

    Returns:
        (kind, weight) pairs with weights summing to 1.
    """
    pairs = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        kind, _, weight = part.partition(":")
        if kind not in MASK_KINDS:
            raise InputError(f"unknown mask kind {kind!r}; choose from {', '.join(MASK_KINDS)}")
        try:
            w = float(weight) if weight else DEFAULT_KIND_WEIGHTS[kind]
        except ValueError:
            raise InputError(f"mask kind weight {weight!r} is not a number") from None
        if not (w >= 0 and np.isfinite(w)):
            raise InputError(f"mask kind weights must be non-negative, got {part!r}")
        pairs.append((kind, w))
    total = sum(w for _, w in pairs)
    if not pairs or total <= 0 or len({k for k, _ in pairs}) != len(pairs):
        raise InputError(f"bad --mask-kinds {text!r}: list distinct kinds ({', '.join(MASK_KINDS)}) with weights "
                         "that are not all zero, e.g. render:0.7,track:0.3")
    return tuple((k, round(w / total, 6)) for k, w in pairs)


def find_clips(videos: str | os.PathLike) -> list[Clip]:
    """The clips of a folder: video files and image folders (not hidden), in natural name order (``2.mp4`` before
    ``10.mp4``); ``<stem>.npz`` beside one is its depth.

    Raises:
        InputError: missing folder, no clips, or two clips with the same stem (``a.mp4`` and ``a.mov``).
    """
    folder = Path(videos)
    if not folder.is_dir():
        raise InputError(f"{folder}: --videos must be a folder of clips")
    clips: dict[str, Clip] = {}
    for path in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if path.name.startswith(".") or not (path.is_dir() or path.suffix.lower() in VIDEO_SUFFIXES):
            continue
        name = path.stem if path.is_file() else path.name
        if name in clips:
            raise InputError(f"{folder}: two clips are named {name!r} ({clips[name].video.name}, {path.name})")
        depth = folder / f"{name}.npz"
        clips[name] = Clip(name, path, depth if depth.is_file() else None)
    if not clips:
        raise InputError(f"{folder}: holds no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) or image folders")
    return list(clips.values())


# ------------------------------------------------------------------------------------------------------------
# One clip
# ------------------------------------------------------------------------------------------------------------

def clip_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one clip's random choices: a function of the seed and the clip's name only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])


_BACKENDS: dict = {}  # one depth model per process, reused across clips


def _clip_depth(clip: Clip, video, settings: PairSettings):
    from ex4d.depth.api import estimate_depth
    from ex4d.depth.registry import create_backend

    if clip.depth_file is not None:
        backend = create_backend("file", path=clip.depth_file, **settings.depth_file_options)
    elif settings.depth_backend == "file":
        raise InputError(f"no depth file {clip.name}.npz beside {clip.video.name} (needed with --depth-backend file)")
    else:
        key = (settings.depth_backend, json.dumps(settings.depth_options, sort_keys=True, default=str))
        if key not in _BACKENDS:
            _BACKENDS.clear()
            options = dict(settings.depth_options)
            options.setdefault("device", settings.device)
            _BACKENDS[key] = create_backend(settings.depth_backend, **options)
        backend = _BACKENDS[key]
    intrinsics = {k: v for k, v in settings.intrinsics.items() if v is not None}
    return estimate_depth(video, backend, progress=False, **intrinsics)


def _signed(spec: str, rng: np.random.Generator, random_sign: bool) -> str:
    # Only integer-angle presets have a direction to flip ("180" is a symmetric sweep).
    if random_sign and spec.lstrip("+-").isdigit() and rng.uniform() < 0.5:
        return spec[1:] if spec.startswith("-") else "-" + spec.lstrip("+")
    return spec


def make_pair(clip: Clip, settings: PairSettings) -> tuple[dict, dict]:
    """Compute one clip's pair.

    Returns:
        ``(arrays, meta)``: ``arrays`` holds ``frames`` (T, H, W, 3) uint8 and ``mask`` (T, H, W) bool (True = kept);
        where depth was needed (rendering masks, ``track_hole="render"``) also ``K`` (T, 3, 3) float32 and ``w2c``
        (T, 4, 4) float32, the novel cameras. ``meta`` is JSON-ready.

    Raises:
        InputError: unreadable clip, too few frames, bad depth.
    """
    from ex4d.geometry.trajectory import make_trajectory, reference_radius
    from ex4d.io.video import load_video
    from ex4d.mesh.build import MeshSettings
    from ex4d.train.masks import random_hole, rendering_mask
    from ex4d.utils.device import resolve_device

    # Every draw happens whatever the kind, so that one clip's choices never depend on another setting's outcome.
    rng = clip_rng(settings.seed, clip.name)
    weights = np.array([w for _, w in settings.mask_kinds], np.float64)
    kind = settings.mask_kinds[int(rng.choice(len(weights), p=weights / weights.sum()))][0]
    spec = _signed(settings.trajectories[int(rng.integers(len(settings.trajectories)))], rng, settings.random_sign)
    hole_rng = np.random.default_rng(rng.integers(0, 2**63))
    hole_frame_u = rng.uniform()

    video = load_video(clip.video, num_frames=settings.num_frames, height=settings.height, width=settings.width)
    if settings.num_frames and video.num_frames < settings.num_frames:
        # Unlike recon and run, training wants whole-length pairs: a short clip would be padded with repeated frames.
        raise InputError(f"{clip.video}: has {video.num_frames} frames, fewer than the "
                         f"{option('num_frames', settings.num_frames)} of a training pair")
    frames = video.frames
    T, H, W = frames.shape[:3]
    mask = np.ones((T, H, W), bool)
    arrays: dict = {}
    meta: dict = {"mask_kind": kind, "trajectory": None, "hole": None, "depth_source": None}
    tracks = kind in ("track", "both")
    if tracks and settings.tracker == "tracks":
        _tracks_file(clip)  # fail before the (slow) depth, not after
    render_mask = None
    if kind in ("render", "both") or (tracks and settings.track_hole == "render"):
        depth = _clip_depth(clip, video, settings)  # only here: a depth model is the slowest step by far
        K = np.asarray(depth.intrinsics, np.float32)
        radius = reference_radius(depth.depth[0], MeshSettings().border_depth)
        trajectory = make_trajectory(spec, T, radius)
        render_mask = rendering_mask(depth.depth, K, trajectory.w2c, device=resolve_device(settings.device),
                                     batch_size=settings.batch_size)
        arrays.update(K=K, w2c=trajectory.w2c.astype(np.float32))
        meta.update(trajectory={"spec": spec, "name": trajectory.name, "radius": radius},
                    depth_source=clip.depth_source(settings), depth_kind=depth.kind)
    if kind in ("render", "both"):
        mask &= render_mask
    if tracks:
        hole, hole_meta = None, {"kind": "ellipses"}
        if settings.track_hole == "render" and T > 1:
            # The shape of a real disocclusion: what the novel camera of a random frame k cannot see.
            k = 1 + min(int(hole_frame_u * (T - 1)), T - 2)
            if not render_mask[k].all():
                hole, hole_meta = ~render_mask[k], {"kind": "render", "frame": k}
        if hole is None:
            hole = random_hole(H, W, hole_rng)
        keep, tracker = _moving_hole(clip, video, hole, settings)
        mask &= keep
        meta["hole"] = {**hole_meta, "area_fraction": round(float(hole.mean()), 6), "tracker": tracker}
    arrays.update(frames=frames, mask=mask)
    meta.update(num_frames=T, height=H, width=W, fps=video.fps, kept_fraction=round(float(mask.mean()), 6))
    return arrays, meta


def _tracks_file(clip: Clip) -> Path:
    from ex4d.train.tracks import tracks_path

    path = tracks_path(clip.video, clip.name)
    if not path.is_file():
        raise InputError(f"no tracks file {path.name} beside {clip.video.name} (needed with --tracker tracks)")
    return path


def _moving_hole(clip: Clip, video, hole: np.ndarray, settings: PairSettings) -> tuple[np.ndarray, str]:
    """(tracking mask (T, H, W) bool, True = kept; what it moved along, for ``meta.json``)."""
    from ex4d.train.masks import tracking_mask
    from ex4d.train.tracks import check_tracks, load_tracks_file, tracks_mask

    frames = video.frames
    if settings.tracker == "flow":
        return tracking_mask(frames, hole), "flow"
    if settings.tracker == "tracks":
        path = _tracks_file(clip)
        tracks, visible = load_tracks_file(path, len(frames), frames.shape[1:3], video.source_size)
        return tracks_mask(frames.shape[:3], hole, tracks, visible), f"file:{path.name}"
    tracks, visible = check_tracks(*settings.tracker(frames), num_frames=len(frames))
    return tracks_mask(frames.shape[:3], hole, tracks, visible), _callable_name(settings.tracker)


def _write_clip(folder: Path, arrays: dict, meta: dict, save_frames: bool) -> None:
    from ex4d.io.atomic import save_npz_atomic
    from ex4d.io.video import save_video

    frames, mask, fps = arrays["frames"], arrays["mask"], meta["fps"]
    save_video(folder / "target.mp4", frames, fps=fps)
    save_video(folder / "cond.mp4", frames * mask[..., None].astype(np.uint8), fps=fps)
    save_video(folder / "mask.mp4", mask.astype(np.uint8) * 255, fps=fps)
    npz = {k: v for k, v in arrays.items() if k != "frames" or save_frames}
    save_npz_atomic(folder / "pair.npz", compressed=True, **npz)
    with atomic_path(folder / "meta.json") as tmp:  # last: its presence marks a finished clip
        tmp.write_text(json.dumps(meta, indent=2, default=str))


def _finished(folder: Path, record: dict) -> bool:
    meta = folder / "meta.json"
    if not meta.is_file() or not all((folder / f).is_file() for f in PAIR_FILES):
        return False
    try:
        return json.loads(meta.read_text()).get("settings") == record
    except (OSError, ValueError):
        return False


def process_clip(clip: Clip, output_dir: str | os.PathLike, settings: PairSettings) -> ClipOutcome:
    """Make and write one clip's pair unless it is already there; never raises for a bad clip.

    The clip is written to ``DATA/.<clip>.tmp-XXXX/`` and renamed to ``DATA/<clip>/`` when complete (an older
    ``DATA/<clip>/`` made with other settings is replaced).
    """
    start = time.perf_counter()
    out = Path(output_dir)
    final = out / clip.name
    record = settings.record(clip)
    if _finished(final, record):
        return ClipOutcome(clip.name, "skipped")
    tmp = out / f".{clip.name}.tmp-{secrets.token_hex(4)}"
    try:
        arrays, meta = make_pair(clip, settings)
        meta = {"clip": clip.name, "source": str(clip.video), **meta, "seed": settings.seed,
                "files": {"target": "target.mp4", "cond": "cond.mp4", "mask": "mask.mp4", "pair": "pair.npz"},
                "settings": record, "ex4d": __version__}
        tmp.mkdir(parents=True)
        _write_clip(tmp, arrays, meta, settings.save_frames)
        if final.exists():
            old = out / f".{clip.name}.old-{secrets.token_hex(4)}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except Exception as exc:  # a bad clip must not stop the others
        shutil.rmtree(tmp, ignore_errors=True)
        error = exc if isinstance(exc, InputError) else None
        message = exc.message if error else f"{type(exc).__name__}: {exc}"
        return ClipOutcome(clip.name, "failed", " ".join(message.split()), time.perf_counter() - start, error)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ClipOutcome(clip.name, "done", seconds=time.perf_counter() - start)


# ------------------------------------------------------------------------------------------------------------
# All clips
# ------------------------------------------------------------------------------------------------------------

def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)  # the workers share the cores


def _write_index(out: Path, names: list[str]) -> Path:
    lines = []
    for name in sorted(names):
        meta = json.loads((out / name / "meta.json").read_text())
        entry = {"clip": name, **{k: f"{name}/{v}" for k, v in meta["files"].items()}}
        entry.update({k: meta[k] for k in ("num_frames", "height", "width", "fps", "mask_kind", "kept_fraction")})
        entry["trajectory"] = (meta.get("trajectory") or {}).get("spec")
        lines.append(json.dumps(entry))
    with atomic_path(out / INDEX_NAME) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines))
    return out / INDEX_NAME


def build_pairs(videos: str | os.PathLike | list[Clip], output_dir: str | os.PathLike,
                settings: PairSettings = PairSettings(), workers: int = 1, progress: bool = True) -> PrepareResult:
    """Make the training pair of every clip (see the module docstring and ``docs/training.md``).

    Args:
        videos: a folder of clips (video files or image folders, with optional ``<stem>.npz`` depth beside them),
            or clips from :func:`find_clips`.
        output_dir: ``DATA``; created if missing.
        settings: how pairs are made.
        workers: clips processed in parallel (processes, spawn context); 1 runs in this process.
        progress: show a progress bar over clips.

    Returns:
        A :class:`PrepareResult`: each clip's outcome (failed clips carry a one-line message) and the path of
        ``index.jsonl``, which lists every finished clip of ``videos`` (new or skipped).

    Raises:
        InputError: no clips, bad settings, or OpenCV missing while tracking masks along optical flow are asked
            for.
    """
    clips = find_clips(videos) if not isinstance(videos, list) else videos
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    if settings.track_hole not in TRACK_HOLES:
        raise InputError(f"track_hole must be one of {', '.join(TRACK_HOLES)}, got {settings.track_hole!r}")
    if settings.height % 2 or settings.width % 2 or min(settings.height, settings.width) < 2:
        raise InputError(f"height and width must be even (H.264 yuv420p), got {settings.height}×{settings.width}")
    if not (callable(settings.tracker) or settings.tracker in TRACKERS):
        raise InputError(f"tracker must be one of {', '.join(TRACKERS)} or a callable, got {settings.tracker!r}")
    if settings.tracker == "flow" and any(k in ("track", "both") and w > 0 for k, w in settings.mask_kinds):
        from ex4d.train.masks import require_cv2

        try:
            require_cv2()
        except ImportError as exc:
            raise InputError(str(exc)) from None
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp-*"):  # left by a killed run
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)

    outcomes: list[ClipOutcome] = []
    bar = tqdm(total=len(clips), desc="training pairs", unit="clip", disable=not progress)
    if workers == 1:
        for clip in clips:
            outcomes.append(process_clip(clip, out, settings))
            bar.update()
    else:
        ctx = multiprocessing.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // workers)
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                                      initargs=(threads,))
        try:
            futures = {pool.submit(process_clip, clip, out, settings): clip for clip in clips}
            for future in concurrent.futures.as_completed(futures):
                try:
                    outcomes.append(future.result())
                except Exception as exc:  # the worker process itself died
                    outcomes.append(ClipOutcome(futures[future].name, "failed", f"{type(exc).__name__}: {exc}"))
                bar.update()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: no new clips; started ones clean up
            raise
        pool.shutdown(wait=True)
    bar.close()
    order = {c.name: i for i, c in enumerate(clips)}
    outcomes.sort(key=lambda o: order[o.name])
    index = _write_index(out, [o.name for o in outcomes if o.status in ("done", "skipped")])
    return PrepareResult(outcomes, index)
