"""What the web app's buttons do, without Gradio: build a path, preview it, plot it, generate, export.

Every function takes a :class:`ex4d.ui.session.Clip` (the video, its depth and intrinsics) and writes only inside
that clip's folder. Bad input raises :class:`ex4d.errors.InputError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ex4d.errors import InputError
from ex4d.geometry.trajectory import Trajectory, make_trajectory
from ex4d.ui.session import Clip

#: Choices of the preset dropdown; "keyframes" uses the table, "imported file" the last imported trajectory.
PRESETS = ("orbit", "180", "180_outer", "spiral", "dolly", "pan", "tilt", "keyframes", "imported file")
KEYFRAME_COLUMNS = ("t", "eye_x", "eye_y", "eye_z", "look_x", "look_y", "look_z")
PREVIEW_FRAMES = 8


@dataclass
class PathDesign:
    """The path controls of the page.

    Attributes:
        preset: one of :data:`PRESETS`.
        angle: degrees; the orbit's yaw, the spiral's final off-axis angle, pan/tilt's turn.
        elevation: degrees the orbit rises (positive = camera moves up).
        radius_scale: pivot distance as a multiple of the reference radius (nearest frame-0 depth + 0.15).
        zoom: focal-length factor reached at the last frame (1 = none, 2 = twice the focal length).
        keyframes: rows of :data:`KEYFRAME_COLUMNS` (t in [0, 1], camera centre, point looked at).
        imported: a trajectory file inside the work dir (preset "imported file").
    """

    preset: str = "orbit"
    angle: float = 30.0
    elevation: float = 0.0
    radius_scale: float = 1.0
    zoom: float = 1.0
    keyframes: list[list[float]] = field(default_factory=list)
    imported: str | None = None


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()[:10]


def build_trajectory(clip: Clip, design: PathDesign) -> Trajectory:
    """The per-frame cameras (and, with a zoom, per-frame intrinsics) the controls describe.

    Raises:
        InputError: unknown preset, bad keyframes, unreadable or mismatched imported file, bad numbers.
    """
    from ex4d.io.trajectory_file import load_trajectory

    T, radius = clip.num_frames, clip.radius * float(design.radius_scale)
    if not np.isfinite([design.angle, design.elevation, design.radius_scale, design.zoom]).all():
        raise InputError("path settings must be finite numbers")
    if design.radius_scale <= 0 or design.zoom <= 0:
        raise InputError("radius and zoom must be positive")
    specs = {"orbit": f"orbit:angle={design.angle:g},elevation={design.elevation:g}", "180": "180",
             "180_outer": "180_outer", "spiral": f"spiral:angle={design.angle:g}", "dolly": "dolly",
             "pan": f"pan:angle={design.angle:g}", "tilt": f"tilt:angle={design.angle:g}"}
    if design.preset in specs:
        trajectory = make_trajectory(specs[design.preset], T, radius)
    elif design.preset == "keyframes":
        path = _write_keyframes(clip, design.keyframes)
        trajectory = load_trajectory(path, T)
    elif design.preset == "imported file":
        if not design.imported:
            raise InputError("no trajectory file imported yet")
        trajectory = load_trajectory(design.imported, T)
    else:
        raise InputError(f"unknown preset {design.preset!r}; choose one of {', '.join(PRESETS)}")
    K = trajectory.K if trajectory.K is not None else np.repeat(clip.K[None].astype(np.float64), T, 0)
    if design.zoom != 1.0:
        # A zoom is a focal-length ramp from 1x at frame 0 to `zoom` at the last frame (camera still moves).
        factor = 1.0 + (design.zoom - 1.0) * np.linspace(0.0, 1.0, T)
        K = K.copy()
        K[:, 0, 0] *= factor
        K[:, 1, 1] *= factor
    w2c = trajectory.w2c
    return Trajectory(w2c, K, name=f"path-{_digest(w2c, K)}")


def keyframe_rows(path: str | Path) -> list[list[float]] | None:
    """The table rows of a keyframe file whose keyframes all use ``t`` + ``eye`` + ``look_at``; else ``None``."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        frames = doc["keyframes"]
        return [[float(f["t"]), *map(float, f["eye"]), *map(float, f["look_at"])] for f in frames]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def rows_from_trajectory(clip: Clip, trajectory: Trajectory, count: int = 3) -> list[list[float]]:
    """``count`` keyframe rows sampled from a trajectory (camera centre and a point one radius ahead)."""
    T = len(trajectory)
    rows = []
    for t in np.linspace(0.0, 1.0, count):
        c2w = np.linalg.inv(trajectory.w2c[int(round(t * (T - 1)))])
        eye = c2w[:3, 3]
        look = eye + clip.radius * c2w[:3, 2]
        rows.append([round(float(t), 4), *np.round(eye, 4).tolist(), *np.round(look, 4).tolist()])
    return rows


def _write_keyframes(clip: Clip, rows) -> Path:
    from ex4d.io.atomic import atomic_path

    rows = [list(r) for r in (rows or []) if any(str(v).strip() not in ("", "nan", "None") for v in r)]
    if not rows:
        raise InputError("the keyframe table is empty: add rows t, eye_x, eye_y, eye_z, look_x, look_y, look_z")
    try:
        values = np.asarray([[float(v) for v in r] for r in rows], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("every keyframe cell must be a number") from None
    if values.shape[1] != len(KEYFRAME_COLUMNS) or not np.isfinite(values).all():
        raise InputError(f"each keyframe row needs {len(KEYFRAME_COLUMNS)} finite numbers: "
                         f"{', '.join(KEYFRAME_COLUMNS)}")
    doc = {"keyframes": [{"t": r[0], "eye": r[1:4].tolist(), "look_at": r[4:7].tolist()} for r in values]}
    path = clip.folder / "paths" / f"keyframes-{_digest(values)}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc))
    return path


def export_trajectory(clip: Clip, trajectory: Trajectory) -> Path:
    """``paths/<name>.json`` in the clip folder: per-frame ``w2c`` + ``intrinsics`` (docs/trajectories.md)."""
    from ex4d.io.trajectory_file import save_trajectory

    path = clip.folder / "paths" / f"{trajectory.name}.json"
    if not path.is_file():
        save_trajectory(path, trajectory)
    return path


@dataclass
class Preview:
    """Files of one preview: a strip of render frames over their masks, and the render | mask video."""

    strip: Path
    video: Path
    frames: list[int]
    seen_fraction: float


def preview_indices(num_frames: int, count: int | None) -> list[int]:
    """Evenly spaced frame indices from first to last (all when ``count`` is None or >= T)."""
    if count is None or count >= num_frames:
        return list(range(num_frames))
    return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, max(count, 2))})


def render_preview(clip: Clip, trajectory: Trajectory, count: int | None = PREVIEW_FRAMES,
                   device: str = "auto") -> Preview:
    """Render the DW-Mesh along the path at ``count`` evenly spaced frames (``None`` = the whole clip).

    Frames are meshed from their own depth and rendered from their own camera, exactly as the full render
    does, so the preview frames equal those frames of the full render.
    """
    from ex4d.io.preview import side_by_side
    from ex4d.io.video import Video, save_video
    from ex4d.reconstruction import recon

    idx = preview_indices(clip.num_frames, count)
    sub = Trajectory(trajectory.w2c[idx], None if trajectory.K is None else trajectory.K[idx], trajectory.name)
    video = Video(clip.frames[idx], clip.fps, clip.frames.shape[1:3])
    result = recon(video, clip.depth[idx], cam=sub, intrinsics=clip.K, device=device, progress=False)
    tag = f"{trajectory.name}-{'all' if count is None else len(idx)}"
    folder = clip.folder / "preview"
    strip = _save_png(folder / f"strip-{tag}.png", _strip(result.color, result.mask))
    video_path = save_video(folder / f"preview-{tag}.mp4", side_by_side([result.color, result.mask],
                                                                        ["render", "mask"]),
                            fps=clip.fps if count is None else 4.0)
    return Preview(strip, video_path, idx, float(result.mask.mean()))


def _strip(color: np.ndarray, mask: np.ndarray, max_width: int = 160) -> np.ndarray:
    """Render frames side by side over their masks (white = seen), each tile at most ``max_width`` wide."""
    step = max(1, int(np.ceil(color.shape[2] / max_width)))
    color, mask = color[:, ::step, ::step], mask[:, ::step, ::step]
    top = np.concatenate(list(color), axis=1)
    bottom = np.concatenate(list(np.repeat(mask[..., None].astype(np.uint8) * 255, 3, -1)), axis=1)
    return np.concatenate([top, bottom], axis=0)


def _save_png(path: Path, image: np.ndarray) -> Path:
    from PIL import Image

    from ex4d.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


def plot_path(clip: Clip, trajectory: Trajectory) -> Path:
    """Top and side views of frame 0's points and the camera path (``ex4d.io.trajectory_plot``), as a PNG."""
    import torch

    from ex4d.geometry.conventions import unproject_depth
    from ex4d.io.trajectory_plot import save_trajectory_plot

    path = clip.folder / "preview" / f"plot-{trajectory.name}.png"
    if not path.is_file():
        points = unproject_depth(torch.from_numpy(clip.depth[0]), torch.from_numpy(clip.K)).numpy()
        save_trajectory_plot(path, trajectory.w2c, points, clip.frames[0])
    return path


def _frame0_mesh(clip: Clip):
    import torch

    from ex4d.mesh.build import build_dw_mesh

    return build_dw_mesh(torch.from_numpy(clip.depth[:1]), torch.from_numpy(clip.frames[:1]),
                         torch.from_numpy(clip.K[None]))


def mesh_glb(clip: Clip) -> Path:
    """Frame 0's DW-Mesh as ``mesh.glb`` in the clip folder (built once; it does not depend on the path)."""
    from ex4d.mesh.export import export_mesh

    path = clip.folder / "mesh.glb"
    if not path.is_file():
        export_mesh(path, _frame0_mesh(clip))
    return path


def viewer_glb(clip: Clip) -> Path:
    """``view.glb``: frame 0's visible surface only, for the 3D viewer.

    The full DW-Mesh's far wall (its 1-px border at depth 100) and its invisible occluder faces would fill the
    viewer with a black box around a tiny scene; here only valid faces away from the border are kept.
    """
    import trimesh

    from ex4d.io.atomic import atomic_path
    from ex4d.mesh.export import _OPENCV_TO_GLTF

    path = clip.folder / "view.glb"
    if not path.is_file():
        mesh = _frame0_mesh(clip)
        H, W = mesh.height, mesh.width
        faces = mesh.faces.numpy()
        v, u = faces // W, faces % W
        interior = ((v > 0) & (v < H - 1) & (u > 0) & (u < W - 1)).all(1)
        keep = faces[interior & mesh.face_valid[0].numpy()]
        keep = np.concatenate([keep, keep[:, ::-1]])  # both windings: viewers cull back faces
        colors = np.round(mesh.colors[0].numpy() * 255).astype(np.uint8)
        colors[:, 3] = 255
        tri = trimesh.Trimesh(mesh.vertices[0].numpy() * _OPENCV_TO_GLTF, keep, vertex_colors=colors, process=False)
        tri.remove_unreferenced_vertices()
        with atomic_path(path) as tmp:
            tri.export(tmp, file_type="glb")
    return path


@dataclass
class Generation:
    """Files of one generation run (all inside the clip's ``runs/`` folder, except the trajectory and mesh)."""

    output: Path
    color: Path
    mask: Path
    side_by_side: Path
    trajectory: Path
    mesh: Path


def generate(clip: Clip, trajectory: Trajectory, fill: str = "offline", device: str = "auto",
             generate_options=None, progress: bool = False) -> Generation:
    """Render the whole clip along the path and fill it (``ex4d run``'s stages, cached in ``runs/``).

    Args:
        fill: ``offline`` (no weights) or ``ex4d`` (the video model, loaded and sampled with ``generate_options``,
            a :class:`ex4d.generation_options.GenerationOptions`; frames, size and rate are the render's, rounded
            as :func:`ex4d.runner.run` does).
    """
    from ex4d.runner import run

    if fill not in ("offline", "ex4d"):
        raise InputError(f"unknown fill {fill!r}; choose offline or ex4d")
    path = export_trajectory(clip, trajectory)
    out = clip.folder / "runs"
    T, H, W = clip.depth.shape
    run(clip.video_path, out, cams=[str(path)], depth=clip.depth_path, fill=fill, num_frames=T, height=H,
        width=W, device=device, generate_options=generate_options, progress=progress)
    name = path.stem
    return Generation(out / f"output_{name}.mp4", out / f"color_{name}.mp4", out / f"mask_{name}.mp4",
                      out / f"preview_{name}.mp4", path, mesh_glb(clip))
