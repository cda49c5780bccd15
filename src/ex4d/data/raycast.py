"""Analytic primitives for the synthetic benchmark scenes: closed-form ray intersections, textures, motion.

Everything here is vectorised torch in float64. Rays come as ``origins: (B, N, 3)`` (or ``(B, 1, 3)``) and
``dirs: (B, N, 3)`` in world coordinates, one time value per batch row ``ts: (B,)``; a ray is
``x(s) = origin + s * dir`` with ``s > 0``. Directions are *not* normalised: a camera ray built from
``K^-1 [u, v, 1]`` has ``s`` equal to the camera z-depth of the hit.

Each object is posed at time t by its :class:`Motion`: ``x_world = R_y(yaw(t)) x_obj + center + offset(t)``.
Intersections, normals and textures are evaluated in object space, so textures move with the object.
Planes are static and two-sided; their texture coordinates are in-plane ``(e1, e2)`` plus the (zero) distance
to the plane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

INF = float("inf")
#: Smallest accepted ray parameter (rays start at a camera centre, never on a surface).
RAY_EPS = 1e-9
DTYPE = torch.float64


def _vec(x, ref: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(x, dtype=ref.dtype, device=ref.device)


@dataclass(frozen=True)
class Texture:
    """A procedural colour as a function of the object-space surface point.

    Attributes:
        kind: ``"checker"`` (3D parity of ``floor(p_i / scale_i + phase_i)``), ``"stripes"`` (hard bands of
            width ``scale[0]`` along ``direction``) or ``"gradient"`` (smooth per-channel sinusoid of period
            ``scale[0]`` along ``direction``, with per-channel ``phase`` in cycles).
        color0, color1: RGB in [0, 1].
        scale: (3,) checker cell sizes per object axis (``inf`` = constant along that axis); stripes/gradient
            use ``scale[0]``.
        direction: (3,) unit vector for stripes/gradient.
        phase: (3,) offsets in cells/cycles.
    """

    kind: str
    color0: tuple[float, float, float]
    color1: tuple[float, float, float]
    scale: tuple[float, float, float] = (0.3, 0.3, 0.3)
    direction: tuple[float, float, float] = (0.0, 1.0, 0.0)
    phase: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        """Colour of points.

        Args:
            p: (M, 3) float64 texture-space points.

        Returns:
            rgb: (M, 3) float64 in [0, 1].
        """
        c0, c1 = _vec(self.color0, p), _vec(self.color1, p)
        if self.kind == "checker":
            cells = torch.floor(p / _vec(self.scale, p) + _vec(self.phase, p))
            w = torch.remainder(cells.sum(-1), 2.0)[:, None]
        elif self.kind == "stripes":
            x = p @ _vec(self.direction, p) / self.scale[0] + self.phase[0]
            w = torch.remainder(torch.floor(x), 2.0)[:, None]
        elif self.kind == "gradient":
            x = (p @ _vec(self.direction, p))[:, None] / self.scale[0] + _vec(self.phase, p)
            w = 0.5 + 0.5 * torch.sin(2 * math.pi * x)
        else:
            raise ValueError(f"unknown texture kind {self.kind!r}")
        return c0 + (c1 - c0) * w


@dataclass(frozen=True)
class Motion:
    """Rigid motion of an object over (possibly fractional) frame time t.

    Attributes:
        kind: ``"static"``; ``"linear"``: translate by ``vector`` over ``span`` frames, then back (ping-pong, so
            the path stays bounded for any t); ``"bob"``: ``vector * sin(2 pi t / span + phase)``;
            ``"bounce"``: ``vector * |sin(pi t / span + phase)|`` (a ball hopping off the floor, vector = up).
        vector: (3,) displacement / amplitude in scene units.
        span: frames (see ``kind``).
        phase: radians.
        spin: yaw rate about the object's vertical (y) axis, radians per frame (spins the texture).
    """

    kind: str = "static"
    vector: tuple[float, float, float] = (0.0, 0.0, 0.0)
    span: float = 48.0
    phase: float = 0.0
    spin: float = 0.0

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) scalar multiplying ``vector`` at times ``t: (B,)``."""
        if self.kind == "static":
            return torch.zeros_like(t)
        if self.kind == "linear":
            return torch.abs(torch.remainder(t / self.span + 1.0, 2.0) - 1.0)
        if self.kind == "bob":
            return torch.sin(2 * math.pi * t / self.span + self.phase)
        if self.kind == "bounce":
            return torch.abs(torch.sin(math.pi * t / self.span + self.phase))
        raise ValueError(f"unknown motion kind {self.kind!r}")

    def offset(self, t: torch.Tensor) -> torch.Tensor:
        """(B, 3) translation at times ``t: (B,)``."""
        return self.weight(t)[:, None] * _vec(self.vector, t)

    @property
    def moves(self) -> bool:
        return (self.kind != "static" and any(v != 0 for v in self.vector)) or self.spin != 0


@dataclass
class Primitive:
    """Base class: an object with a rest position, a texture and a motion."""

    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    texture: Texture = field(default_factory=lambda: Texture("checker", (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    motion: Motion = field(default_factory=Motion)
    name: str = ""
    kind = "primitive"

    # --- pose -------------------------------------------------------------------------------------------
    def pose(self, t: torch.Tensor):
        """Object-to-world pose at times ``t: (B,)``: ``(translation (B, 3), yaw (B,) or None)``."""
        trans = _vec(self.center, t)[None] + self.motion.offset(t)
        yaw = self.motion.spin * t if self.motion.spin != 0 else None
        return trans, yaw

    @staticmethod
    def _rotate_y(x: torch.Tensor, yaw: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        # x: (B, N, 3), yaw: (B,). R_y(a) = [[c, 0, s], [0, 1, 0], [-s, 0, c]].
        c, s = torch.cos(yaw)[:, None], torch.sin(yaw)[:, None]
        if inverse:
            s = -s
        return torch.stack([c * x[..., 0] + s * x[..., 2], x[..., 1], -s * x[..., 0] + c * x[..., 2]], -1)

    def to_object(self, points: torch.Tensor, t: torch.Tensor, directions: bool = False) -> torch.Tensor:
        """World (B, N, 3) points (or directions) at times ``t: (B,)`` -> object space."""
        trans, yaw = self.pose(t)
        x = points if directions else points - trans[:, None]
        return x if yaw is None else self._rotate_y(x, yaw, inverse=True)

    def to_world_dirs(self, dirs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        _, yaw = self.pose(t)
        return dirs if yaw is None else self._rotate_y(dirs, yaw)

    # --- geometry (object space) ------------------------------------------------------------------------
    def intersect(self, o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """First hit parameter ``s > RAY_EPS`` of object-space rays (..., 3); ``inf`` where missed."""
        raise NotImplementedError

    def normal(self, p: torch.Tensor) -> torch.Tensor:
        """Object-space unit normals (M, 3) at surface points (M, 3)."""
        raise NotImplementedError

    def texture_coords(self, p: torch.Tensor) -> torch.Tensor:
        return p

    def bounding_radius(self) -> float:
        raise NotImplementedError


def _first_positive(*cands: torch.Tensor) -> torch.Tensor:
    out = None
    for s in cands:
        s = torch.where(s > RAY_EPS, s, INF)
        out = s if out is None else torch.minimum(out, s)
    return out


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1)


@dataclass
class Sphere(Primitive):
    """Sphere of ``radius`` around ``center``."""

    radius: float = 0.5
    kind = "sphere"

    def intersect(self, o, d):
        a, b = _dot(d, d), _dot(o, d)
        disc = b * b - a * (_dot(o, o) - self.radius ** 2)
        sq = torch.sqrt(torch.clamp(disc, min=0.0))
        s = _first_positive((-b - sq) / a, (-b + sq) / a)
        return torch.where(disc >= 0, s, INF)

    def normal(self, p):
        return p / torch.linalg.norm(p, dim=-1, keepdim=True)

    def bounding_radius(self):
        return self.radius


@dataclass
class Box(Primitive):
    """Axis-aligned box with ``half_size`` (3,) around ``center`` (slab intersection)."""

    half_size: tuple[float, float, float] = (0.3, 0.3, 0.3)
    kind = "box"

    def intersect(self, o, d):
        h = _vec(self.half_size, o)
        zero = d == 0
        safe = torch.where(zero, 1.0, d)
        t1, t2 = (-h - o) / safe, (h - o) / safe
        inside = (o >= -h) & (o <= h)
        lo = torch.where(zero, torch.where(inside, -INF, INF), torch.minimum(t1, t2))
        hi = torch.where(zero, torch.where(inside, INF, -INF), torch.maximum(t1, t2))
        near, far = lo.amax(-1), hi.amin(-1)
        s = torch.where(near > RAY_EPS, near, torch.where(far > RAY_EPS, far, INF))
        return torch.where(near <= far, s, INF)

    def normal(self, p):
        h = _vec(self.half_size, p)
        axis = (p.abs() / h).argmax(-1)
        n = torch.zeros_like(p)
        n.scatter_(-1, axis[:, None], torch.sign(p.gather(-1, axis[:, None])))
        return n

    def bounding_radius(self):
        return math.sqrt(sum(h * h for h in self.half_size))


@dataclass
class Pole(Primitive):
    """Vertical capped cylinder (axis = y) of ``radius`` and ``half_height`` around ``center``."""

    radius: float = 0.08
    half_height: float = 1.0
    kind = "pole"

    def intersect(self, o, d):
        r, hh = self.radius, self.half_height
        ox, oy, oz = o.unbind(-1)
        dx, dy, dz = d.unbind(-1)
        a = dx * dx + dz * dz
        b = ox * dx + oz * dz
        disc = b * b - a * (ox * ox + oz * oz - r * r)
        side_ok = (disc >= 0) & (a > 0)
        sq = torch.sqrt(torch.clamp(disc, min=0.0))
        a_safe = torch.where(a > 0, a, 1.0)
        cands = []
        for s in ((-b - sq) / a_safe, (-b + sq) / a_safe):
            ok = side_ok & (torch.abs(oy + s * dy) <= hh)
            cands.append(torch.where(ok, s, INF))
        dy_safe = torch.where(dy != 0, dy, 1.0)
        for y in (-hh, hh):
            s = (y - oy) / dy_safe
            ok = (dy != 0) & ((ox + s * dx) ** 2 + (oz + s * dz) ** 2 <= r * r)
            cands.append(torch.where(ok, s, INF))
        return _first_positive(*cands)

    def normal(self, p):
        rho = torch.sqrt(p[:, 0] ** 2 + p[:, 2] ** 2)
        cap = torch.abs(p[:, 1].abs() - self.half_height) < torch.abs(rho - self.radius)
        side = torch.stack([p[:, 0], torch.zeros_like(rho), p[:, 2]], -1) / torch.clamp(rho, min=1e-12)[:, None]
        capn = torch.zeros_like(p)
        capn[:, 1] = torch.sign(p[:, 1])
        return torch.where(cap[:, None], capn, side)

    def bounding_radius(self):
        return self.radius  # horizontal extent only: poles are checked in the xz plane


@dataclass
class Plane(Primitive):
    """Infinite two-sided plane ``normal . x = offset`` (``normal`` unit, pointing towards the cameras).

    ``center`` is ignored (set to ``offset * normal``); texture coordinates are ``(e1 . p, e2 . p, n . p)``
    with ``e1 = u_axis`` and ``e2 = normal x u_axis``, p relative to ``offset * normal``.
    """

    normal_vec: tuple[float, float, float] = (0.0, 0.0, -1.0)
    offset: float = -8.0
    u_axis: tuple[float, float, float] = (1.0, 0.0, 0.0)
    kind = "plane"

    def __post_init__(self):
        self.center = tuple(self.offset * n for n in self.normal_vec)

    def intersect(self, o, d):
        n = _vec(self.normal_vec, o)
        nd = d @ n
        s = -(o @ n) / torch.where(nd != 0, nd, 1.0)
        return torch.where((nd != 0) & (s > RAY_EPS), s, INF)

    def normal(self, p):
        return _vec(self.normal_vec, p).expand_as(p)

    def texture_coords(self, p):
        n, e1 = _vec(self.normal_vec, p), _vec(self.u_axis, p)
        e2 = torch.linalg.cross(n, e1)
        return torch.stack([p @ e1, p @ e2, p @ n], -1)

    def bounding_radius(self):
        return INF


def camera_rays(w2c: torch.Tensor, K: torch.Tensor, height: int, width: int, du: float = 0.5,
                dv: float = 0.5):
    """World rays of every pixel of B cameras, sampled at (u + du, v + dv).

    Args:
        w2c: (B, 4, 4) float64; K: (B, 3, 3) float64.

    Returns:
        origins: (B, 1, 3); dirs: (B, H*W, 3) with camera-space z = 1 (so the ray parameter is z-depth).
    """
    v, u = torch.meshgrid(torch.arange(height, dtype=DTYPE) + dv, torch.arange(width, dtype=DTYPE) + du,
                          indexing="ij")
    u, v = u.reshape(1, -1), v.reshape(1, -1)
    fx, fy, cx, cy = (K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None])
    d_cam = torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u - cx)], -1)  # (B, HW, 3)
    rot, trans = w2c[:, :3, :3], w2c[:, :3, 3]
    dirs = d_cam @ rot  # row-vector form of R^T d
    origins = -(trans[:, None] @ rot)  # -R^T t, (B, 1, 3)
    return origins, dirs


def cast_rays(objects, ts: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor):
    """Nearest hit of world rays against all objects.

    Args:
        objects: sequence of :class:`Primitive`.
        ts: (B,) float64 times.
        origins: (B, N, 3) or (B, 1, 3) float64.
        dirs: (B, N, 3) float64.

    Returns:
        s: (B, N) float64 ray parameter of the first hit (``inf`` where none).
        object_id: (B, N) int64 index into ``objects`` (-1 where none).
    """
    best = torch.full(dirs.shape[:-1], INF, dtype=dirs.dtype, device=dirs.device)
    ids = torch.full(dirs.shape[:-1], -1, dtype=torch.int64, device=dirs.device)
    for k, obj in enumerate(objects):
        s = obj.intersect(obj.to_object(origins, ts), obj.to_object(dirs, ts, directions=True))
        closer = s < best
        best = torch.where(closer, s, best)
        ids = torch.where(closer, k, ids)
    return best, ids


def shade_hits(objects, ts: torch.Tensor, points: torch.Tensor, ids: torch.Tensor, light_dir, ambient: float,
               background) -> torch.Tensor:
    """Colour of hit points: texture x (ambient + (1 - ambient) max(0, n . l)); view-independent.

    Args:
        ts: (B,) times; points: (B, N, 3) world hits; ids: (B, N) object ids (-1 = background).
        light_dir: (3,) world direction towards the light (normalised here).

    Returns:
        rgb: (B, N, 3) float64 in [0, 1].
    """
    out = _vec(background, points).expand(points.shape).clone()
    light = _vec(light_dir, points)
    light = light / torch.linalg.norm(light)
    for k, obj in enumerate(objects):
        b, n = torch.nonzero(ids == k, as_tuple=True)
        if b.numel() == 0:
            continue
        tk = ts[b]
        p_obj = obj.to_object(points[b, n][:, None], tk)[:, 0]
        color = obj.texture(obj.texture_coords(p_obj))
        if ambient < 1.0:
            normal = obj.to_world_dirs(obj.normal(p_obj)[:, None], tk)[:, 0]
            lambert = torch.clamp(normal @ light, min=0.0)[:, None]
            color = color * (ambient + (1.0 - ambient) * lambert)
        out[b, n] = color
    return out


def observable_rows(objects, ts: torch.Tensor, points: torch.Tensor, valid: torch.Tensor,
                    source_w2c: torch.Tensor, source_K: torch.Tensor, height: int, width: int,
                    rel_tol: float) -> torch.Tensor:
    """Source-camera visibility of points (see :func:`ex4d.data.synthetic.observable`).

    Args:
        objects: the scene's primitives.
        ts: (B,) float64 times.
        points: (B, N, 3) float64 world points; valid: (B, N) bool (False -> not observable).
        source_w2c: (4, 4) float64; source_K: (3, 3) float64; height, width: source image size.
        rel_tol: the first hit must lie at >= (1 - rel_tol) of the way to the point.

    Returns:
        (B, N) bool.
    """
    rot, trans = source_w2c[:3, :3], source_w2c[:3, 3]
    pc = points @ rot.T + trans
    z = pc[..., 2]
    zs = torch.where(z > 0, z, 1.0)
    u = source_K[0, 0] * pc[..., 0] / zs + source_K[0, 2]
    v = source_K[1, 1] * pc[..., 1] / zs + source_K[1, 2]
    inside = valid & (z > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    inside &= torch.isfinite(points).all(-1)
    b, n = torch.nonzero(inside, as_tuple=True)
    result = torch.zeros_like(inside)
    if b.numel():
        origin = -(trans @ rot)  # source camera centre, (3,)
        dirs = (points[b, n] - origin)[:, None]  # the point is at s = 1
        s, _ = cast_rays(objects, ts[b], origin.expand(len(b), 1, 3), dirs)
        result[b, n] = s[:, 0] >= 1.0 - rel_tol
    return result
