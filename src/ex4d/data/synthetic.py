"""Procedural dynamic 3D scenes with exact ground truth, ray-cast analytically (no mesh, no rasteriser).

Used to benchmark ex4d's mesh renderer: :func:`ground_truth_for_trajectory` gives the source video (identity
camera) with its exact z-depth, the exact target views along a camera path, and which target pixels show a
surface point that the source camera sees at the same time (``observable``).

Conventions are those of :mod:`ex4d.geometry.conventions`: OpenCV camera axes (x right, y down, z forward),
world = source camera, ``w2c`` world-to-camera, pixel (v, u) sampled at (u + 0.5, v + 0.5), depth = camera z.

Default layout (scene units; y is down, so the floor is *below* the camera):

* back wall: plane z = 8 facing the camera, checkerboard;
* floor: plane y = +1.5, anisotropic checkerboard;
* ``num_objects`` spheres / axis-aligned boxes / thin vertical poles with centres at depth z in [2.6, 6.3],
  laterally within ±60 % of the half-width of a 55° field of view at their depth, sized in proportion to
  their depth (so their image size is FoV-independent up to the focal length); resting on the floor or
  floating; moving by ping-pong translation, vertical bobbing, bouncing, and/or spinning (texture motion).

Colours are unlit albedo times a view-independent Lambert term (fixed world light), so a surface point has the
same colour from every camera at a given time.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ex4d.data.raycast import (
    DTYPE, Box, Motion, Plane, Pole, Primitive, Sphere, Texture, camera_rays, cast_rays, observable_rows,
    shade_hits,
)

#: Default layout, in scene units.
WALL_Z = 8.0
FLOOR_Y = 1.5
NEAR_Z, FAR_Z = 2.6, 6.3
#: Nominal half field of view used to place objects (55°); placements scale with depth, so 50–60° works.
NOMINAL_HALF_TAN = math.tan(math.radians(27.5))
#: Default number of frames over which linear motions travel their full displacement (then ping-pong back).
MOTION_FRAMES = 49
#: Rays per internal chunk (bounds the float64 temporaries to some tens of MB).
CHUNK_RAYS = 1 << 20


@dataclass
class Scene:
    """A dynamic scene: static planes plus moving textured primitives.

    Attributes:
        objects: primitives; the index in this list is the ``object_id`` of ray-cast views.
        light_dir: (3,) world direction towards the light (y down: negative y = from above).
        ambient: ambient share of the shading (1 = unlit albedo).
        background: RGB where no object is hit.
        seed: seed it was made from (``None`` for a hand-built scene).
    """

    objects: list[Primitive] = field(default_factory=list)
    light_dir: tuple[float, float, float] = (-0.3, -1.0, -0.5)
    ambient: float = 0.55
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seed: int | None = None

    @property
    def moving_ids(self) -> list[int]:
        """Indices of objects whose pose changes over time."""
        return [i for i, o in enumerate(self.objects) if o.motion.moves]

    def describe(self) -> str:
        """One line per object (for logs)."""
        lines = []
        for i, o in enumerate(self.objects):
            geo = {"sphere": lambda: f"r={o.radius:.2f}", "box": lambda: f"half={np.round(o.half_size, 2).tolist()}",
                   "pole": lambda: f"r={o.radius:.3f} hh={o.half_height:.2f}",
                   "plane": lambda: f"n={o.normal_vec} off={o.offset}"}[o.kind]()
            lines.append(f"{i}: {o.kind:6s} {o.name:10s} c={np.round(o.center, 2).tolist()} {geo} "
                         f"tex={o.texture.kind} motion={o.motion.kind}{' spin' if o.motion.spin else ''}")
        return "\n".join(lines)


@dataclass
class GroundTruthView:
    """One ray-cast view.

    Attributes:
        color: (H, W, 3) uint8.
        depth_z: (H, W) float32 camera z of the first hit (0 where nothing is hit).
        points: (H, W, 3) float32 world coordinates of the hit (0 where nothing is hit).
        object_id: (H, W) int64 index into ``scene.objects`` (-1 where nothing is hit).
    """

    color: torch.Tensor
    depth_z: torch.Tensor
    points: torch.Tensor
    object_id: torch.Tensor


# ----------------------------------------------------------------------------------------------------------
# Scene generation
# ----------------------------------------------------------------------------------------------------------

def _colors(rng: np.random.Generator, pastel: bool = False):
    h = rng.uniform()
    if pastel:
        c0 = colorsys.hsv_to_rgb(h, rng.uniform(0.1, 0.3), rng.uniform(0.85, 0.95))
        c1 = colorsys.hsv_to_rgb((h + rng.uniform(0.3, 0.7)) % 1, rng.uniform(0.2, 0.5), rng.uniform(0.3, 0.45))
    else:
        c0 = colorsys.hsv_to_rgb(h, rng.uniform(0.5, 0.9), rng.uniform(0.85, 1.0))
        c1 = colorsys.hsv_to_rgb((h + rng.uniform(0.3, 0.7)) % 1, rng.uniform(0.5, 0.9), rng.uniform(0.12, 0.4))
    return tuple(float(c) for c in c0), tuple(float(c) for c in c1)


def _unit(rng: np.random.Generator) -> tuple[float, float, float]:
    v = rng.normal(size=3)
    return tuple(float(x) for x in v / np.linalg.norm(v))


def _texture(rng: np.random.Generator, kind: str, depth: float, size: float) -> Texture:
    c0, c1 = _colors(rng)
    cell = depth * rng.uniform(0.045, 0.07)  # ~5–9 px at 128 px wide and 55° FoV
    phase = tuple(float(x) for x in rng.uniform(0.2, 0.8, 3))
    if kind == "pole":
        return Texture("stripes", c0, c1, (cell, cell, cell), (0.0, 1.0, 0.0), phase)
    choice = rng.choice(["checker", "checker", "stripes", "gradient"] if kind == "sphere" else
                        ["checker", "checker", "stripes"])
    if choice == "checker":
        return Texture("checker", c0, c1, (cell, cell, cell), phase=phase)
    if choice == "stripes":
        return Texture("stripes", c0, c1, (cell, cell, cell), _unit(rng), phase)
    period = 2 * size * rng.uniform(0.6, 1.2)
    return Texture("gradient", c0, c1, (period, period, period), _unit(rng), tuple(float(x) for x in
                                                                                 rng.uniform(0, 1, 3)))


def _sample_object(rng: np.random.Generator, kind: str, moving: bool, motion_frames: int) -> Primitive:
    z = rng.uniform(NEAR_Z, FAR_Z)
    half_w = z * NOMINAL_HALF_TAN
    x = rng.uniform(-0.6, 0.6) * half_w
    on_floor = rng.uniform() < (0.5 if kind == "sphere" else 0.6)
    span_lin = float(max(motion_frames - 1, 1))
    motion = Motion()
    if kind == "sphere":
        r = z * rng.uniform(0.07, 0.13)
        y = FLOOR_Y - r if on_floor else rng.uniform(-0.5, 0.2) * half_w
        if moving:
            m = rng.choice(["linear", "bob", "bounce"] if on_floor else ["linear", "bob"])
            spin = float(rng.choice([-1, 1]) * rng.uniform(0.03, 0.08)) if rng.uniform() < 0.5 else 0.0
            motion = _motion(rng, m, z, span_lin, spin)
        obj = Sphere(center=(x, y, z), radius=r)
        size = r
    elif kind == "box":
        h = tuple(float(v) for v in z * rng.uniform(0.045, 0.11, 3))
        y = FLOOR_Y - h[1] if on_floor else rng.uniform(-0.5, 0.2) * half_w
        if moving:
            motion = _motion(rng, rng.choice(["linear", "bob"]), z, span_lin, 0.0)
        obj = Box(center=(x, y, z), half_size=h)
        size = max(h)
    else:
        r = z * rng.uniform(0.012, 0.02)
        top = -rng.uniform(0.3, 1.1) * half_w
        if moving:
            motion = _motion(rng, "linear", z, span_lin, 0.0, vertical=False)
        obj = Pole(center=(x, (FLOOR_Y + top) / 2, z), radius=r, half_height=(FLOOR_Y - top) / 2)
        size = 3 * r
    obj.center = tuple(float(c) for c in obj.center)
    obj.motion = motion
    obj.texture = _texture(rng, kind, z, size)
    return obj


def _motion(rng, kind: str, z: float, span_lin: float, spin: float, vertical: bool = True) -> Motion:
    sign = float(rng.choice([-1, 1]))
    if kind == "linear":
        dy = z * rng.uniform(-0.03, 0.03) if vertical else 0.0
        vec = (sign * z * rng.uniform(0.1, 0.25), dy, rng.uniform(-0.9, 0.9))
        return Motion("linear", tuple(float(v) for v in vec), span_lin, 0.0, spin)
    if kind == "bob":
        vec = (z * rng.uniform(-0.03, 0.03), sign * z * rng.uniform(0.04, 0.09), 0.0)
        return Motion("bob", tuple(float(v) for v in vec), float(rng.uniform(16, 36)),
                      float(rng.uniform(0, 2 * math.pi)), spin)
    vec = (0.0, -z * rng.uniform(0.06, 0.12), 0.0)  # bounce: upwards (y down)
    return Motion("bounce", vec, float(rng.uniform(10, 20)), 0.0, spin)


def _check_times(motion_frames: int) -> torch.Tensor:
    return torch.arange(0, max(2 * motion_frames, 100), dtype=DTYPE)


def _fits(obj: Primitive, others: list[Primitive], ts: torch.Tensor) -> bool:
    trans, _ = obj.pose(ts)
    x, y, z = trans.unbind(-1)
    rb = obj.bounding_radius()
    depth_extent = rb if obj.kind != "pole" else obj.radius
    if not bool(((z - depth_extent >= 1.9) & (z + depth_extent <= WALL_Z - 0.4)).all()):
        return False
    if not bool((x.abs() <= 0.7 * z * NOMINAL_HALF_TAN).all()):
        return False
    if obj.kind in ("sphere", "box"):
        half_y = obj.radius if obj.kind == "sphere" else obj.half_size[1]
        if not bool(((y + half_y <= FLOOR_Y + 1e-9) & (y - half_y >= -0.9 * z * NOMINAL_HALF_TAN)).all()):
            return False
    for other in others:
        if other.kind == "plane":
            continue
        t2, _ = other.pose(ts)
        diff = trans - t2
        if "pole" in (obj.kind, other.kind):
            diff = diff[:, [0, 2]]
        if not bool((torch.linalg.norm(diff, dim=-1) > rb + other.bounding_radius() + 0.05).all()):
            return False
    return True


def make_scene(seed: int = 0, num_objects: int = 5, moving: bool = True, *,
               motion_frames: int = MOTION_FRAMES) -> Scene:
    """A random dynamic scene (deterministic for a given seed).

    Args:
        seed: RNG seed.
        num_objects: number of primitives besides the back wall and the floor. With 3 or more, at least one
            sphere, one box and one pole.
        moving: if False, everything is static.
        motion_frames: linear motions travel their full displacement over this many frames, then back.

    Returns:
        The scene: ``objects[0]`` is the back wall (z = 8), ``objects[1]`` the floor (y = 1.5), then the
        primitives. With ``moving``, about 3/4 of them move (at least two when ``num_objects >= 2``).
    """
    rng = np.random.default_rng(seed)
    c0, c1 = _colors(rng, pastel=True)
    wall_cell = WALL_Z * rng.uniform(0.05, 0.07)
    wall = Plane(normal_vec=(0.0, 0.0, -1.0), offset=-WALL_Z, name="wall",
                 texture=Texture("checker", c0, c1, (wall_cell, wall_cell, math.inf),
                                 phase=(float(rng.uniform(0, 1)), float(rng.uniform(0, 1)), 0.5)))
    c0, c1 = _colors(rng, pastel=True)
    floor = Plane(normal_vec=(0.0, -1.0, 0.0), offset=-FLOOR_Y, name="floor",
                  texture=Texture("checker", c0, c1, (rng.uniform(0.35, 0.5), rng.uniform(0.6, 0.9), math.inf),
                                  phase=(float(rng.uniform(0, 1)), float(rng.uniform(0, 1)), 0.5)))
    objects: list[Primitive] = [wall, floor]

    kinds = ["sphere", "box", "pole"][:num_objects]
    kinds += list(rng.choice(["sphere", "box", "pole"], size=max(num_objects - 3, 0), p=[0.4, 0.35, 0.25]))
    rng.shuffle(kinds)
    flags = [moving and rng.uniform() < 0.75 for _ in kinds]
    if moving and sum(flags) < min(2, num_objects):
        for i in rng.permutation(len(flags))[: min(2, num_objects)]:
            flags[i] = True
    ts = _check_times(motion_frames)
    counts = {}
    for kind, mv in zip(kinds, flags):
        for attempt in range(300):
            obj = _sample_object(rng, str(kind), mv and attempt < 200, motion_frames)
            if _fits(obj, objects, ts) or attempt == 299:
                break
        counts[kind] = counts.get(kind, 0) + 1
        obj.name = f"{kind}{counts[kind]}"
        objects.append(obj)
    return Scene(objects=objects, seed=seed)


def default_intrinsics(height: int, width: int, fov_x_deg: float = 55.0) -> torch.Tensor:
    """Pinhole intrinsics with a horizontal field of view ``fov_x_deg``, square pixels, centred.

    Returns:
        K: (3, 3) float32 ``[[f, 0, W/2], [0, f, H/2], [0, 0, 1]]`` with ``f = W / (2 tan(fov_x / 2))``.
    """
    f = width / (2.0 * math.tan(math.radians(fov_x_deg) / 2.0))
    return torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------
# Ray casting
# ----------------------------------------------------------------------------------------------------------

def _as64(x, shape_tail) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).to(DTYPE)
    if x.shape[-len(shape_tail):] != shape_tail:
        raise ValueError(f"expected (..., {shape_tail}), got {tuple(x.shape)}")
    return x


def _render_batch(scene: Scene, ts: torch.Tensor, w2c: torch.Tensor, K: torch.Tensor, height: int, width: int,
                  supersample: int = 1):
    """Ray-cast B views. Returns float64 ``(rgb (B,HW,3), depth (B,HW), points (B,HW,3), ids (B,HW))``."""
    objs = scene.objects
    origins, dirs = camera_rays(w2c, K, height, width)
    s, ids = cast_rays(objs, ts, origins, dirs)
    hit = torch.isfinite(s)
    depth = torch.where(hit, s, 0.0)
    points = torch.where(hit[..., None], origins + depth[..., None] * dirs, 0.0)
    shade = dict(light_dir=scene.light_dir, ambient=scene.ambient, background=scene.background)
    if supersample <= 1:
        rgb = shade_hits(objs, ts, points, ids, **shade)
    else:
        rgb = torch.zeros_like(points)
        for i in range(supersample):
            for j in range(supersample):
                o, d = camera_rays(w2c, K, height, width, (j + 0.5) / supersample, (i + 0.5) / supersample)
                ss, sid = cast_rays(objs, ts, o, d)
                p = torch.where(torch.isfinite(ss)[..., None], o + ss[..., None] * d, 0.0)
                rgb += shade_hits(objs, ts, p, sid, **shade)
        rgb /= supersample ** 2
    return rgb, depth, points, ids


def _to_uint8(rgb: torch.Tensor) -> torch.Tensor:
    return torch.round(torch.clamp(rgb, 0.0, 1.0) * 255.0).to(torch.uint8)


def _frames_per_chunk(height: int, width: int) -> int:
    return max(1, CHUNK_RAYS // (height * width))


def _batch_K(K, num: int) -> torch.Tensor:
    K = _as64(K, (3, 3))
    return K.expand(num, 3, 3) if K.dim() == 2 else K


def raycast(scene: Scene, t: float, w2c, K, height: int, width: int, supersample: int = 1) -> GroundTruthView:
    """Render one exact view of the scene at time ``t``.

    Args:
        scene: the scene.
        t: frame time (may be fractional).
        w2c: (4, 4) world-to-camera (tensor or array).
        K: (3, 3) intrinsics.
        height, width: image size.
        supersample: s; with s > 1 the colour is the mean over s x s sub-samples (antialiased) while depth,
            points and object ids stay those of the pixel centre.

    Returns:
        The view (see :class:`GroundTruthView`).
    """
    out = render_scene_video(scene, _as64(w2c, (4, 4))[None], K, height, width, supersample, times=[t])
    return GroundTruthView(out["frames"][0], out["depth"][0], out["points"][0], out["object_id"][0])


def render_scene_video(scene: Scene, w2c, K, height: int, width: int, supersample: int = 1,
                       times=None) -> dict[str, torch.Tensor]:
    """Render frame t of the scene from camera ``w2c[t]`` for every t.

    Args:
        scene: the scene.
        w2c: (T, 4, 4) world-to-camera matrices.
        K: (3, 3) or (T, 3, 3) intrinsics.
        height, width: image size.
        supersample: see :func:`raycast`.
        times: (T,) frame times; default ``0, 1, ..., T-1``.

    Returns:
        ``frames`` (T, H, W, 3) uint8, ``depth`` (T, H, W) float32 (0 = no hit), ``points`` (T, H, W, 3)
        float32 world hits, ``object_id`` (T, H, W) int64.
    """
    w2c = _as64(w2c, (4, 4))
    num = w2c.shape[0]
    Kb = _batch_K(K, num)
    ts = torch.arange(num, dtype=DTYPE) if times is None else torch.as_tensor(times, dtype=DTYPE).reshape(num)
    out = {"frames": [], "depth": [], "points": [], "object_id": []}
    step = _frames_per_chunk(height, width)
    for a in range(0, num, step):
        sl = slice(a, a + step)
        rgb, depth, points, ids = _render_batch(scene, ts[sl], w2c[sl], Kb[sl], height, width, supersample)
        b = rgb.shape[0]
        out["frames"].append(_to_uint8(rgb).reshape(b, height, width, 3))
        out["depth"].append(depth.float().reshape(b, height, width))
        out["points"].append(points.float().reshape(b, height, width, 3))
        out["object_id"].append(ids.reshape(b, height, width))
    return {k: torch.cat(v) for k, v in out.items()}


# ----------------------------------------------------------------------------------------------------------
# Observability
# ----------------------------------------------------------------------------------------------------------

def observable(scene: Scene, t: float, points_world, source_w2c, source_K, height: int, width: int,
               rel_tol: float = 1e-3) -> torch.Tensor:
    """Whether the source camera sees the given world points at time ``t``.

    A point is observable iff it projects inside the source image ([0, W) x [0, H), in front of the camera)
    and the source camera's ray towards the point itself hits nothing closer than ``(1 - rel_tol)`` times the
    point's distance. Points on no surface are judged the same way (nothing in front of them).

    Args:
        scene: the scene.
        t: frame time.
        points_world: (..., 3) world points (non-finite points are not observable).
        source_w2c: (4, 4) source world-to-camera (the identity for the source video).
        source_K: (3, 3) source intrinsics.
        height, width: source image size.
        rel_tol: relative tolerance on the hit distance (absorbs float32 points and grazing self-hits).

    Returns:
        (...) bool.
    """
    pts = _as64(points_world, (3,))
    flat = pts.reshape(1, -1, 3)
    ts = torch.tensor([float(t)], dtype=DTYPE)
    valid = torch.ones(flat.shape[:2], dtype=torch.bool)
    res = observable_rows(scene.objects, ts, flat, valid, _as64(source_w2c, (4, 4)), _as64(source_K, (3, 3)),
                           height, width, rel_tol)
    return res.reshape(pts.shape[:-1])


def ground_truth_for_trajectory(scene: Scene, w2c_traj, K, height: int, width: int, supersample: int = 1,
                                rel_tol: float = 1e-3, source_K=None) -> dict:
    """Everything a renderer benchmark needs for one camera path.

    Args:
        scene: the scene.
        w2c_traj: (T, 4, 4) target world-to-camera matrices (frame t is seen from ``w2c_traj[t]`` at time t).
        K: (3, 3) target intrinsics (also the source's unless ``source_K`` is given).
        height, width: image size (source and target).
        supersample: colour antialiasing, see :func:`raycast`.
        rel_tol: see :func:`observable`.
        source_K: (3, 3) source intrinsics; default ``K``.

    Returns:
        dict with
          ``source``: ``frames`` (T, H, W, 3) uint8, ``depth`` (T, H, W) float32, ``points`` (T, H, W, 3) float32,
          ``object_id`` (T, H, W) int64 — the input video from the identity camera and its exact depth;
          ``target``: the same from ``w2c_traj[t]``;
          ``observable``: (T, H, W) bool — the target pixel's surface point is seen by the source camera at the
          same time t (False where the target pixel hits nothing).
    """
    w2c = _as64(w2c_traj, (4, 4))
    num = w2c.shape[0]
    K64 = _as64(K, (3, 3))
    sK64 = K64 if source_K is None else _as64(source_K, (3, 3))
    eye = torch.eye(4, dtype=DTYPE)
    ts_all = torch.arange(num, dtype=DTYPE)
    keys = ("frames", "depth", "points", "object_id")
    src, tgt, obs = {k: [] for k in keys}, {k: [] for k in keys}, []
    step = _frames_per_chunk(height, width)
    for a in range(0, num, step):
        ts = ts_all[a:a + step]
        b = len(ts)
        for store, cams, kk in ((src, eye.expand(b, 4, 4), sK64), (tgt, w2c[a:a + step], K64)):
            rgb, depth, points, ids = _render_batch(scene, ts, cams, kk.expand(b, 3, 3), height, width, supersample)
            store["frames"].append(_to_uint8(rgb).reshape(b, height, width, 3))
            store["depth"].append(depth.float().reshape(b, height, width))
            store["points"].append(points.float().reshape(b, height, width, 3))
            store["object_id"].append(ids.reshape(b, height, width))
        obs.append(observable_rows(scene.objects, ts, points, ids >= 0, eye, sK64, height, width, rel_tol)
                   .reshape(b, height, width))
    return {
        "source": {k: torch.cat(v) for k, v in src.items()},
        "target": {k: torch.cat(v) for k, v in tgt.items()},
        "observable": torch.cat(obs),
    }
