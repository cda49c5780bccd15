"""Property-based fuzzing (hypothesis) of the three parsers of untrusted input and the mesh builder behind them:
random structures, shapes, dtypes and values either load into what the docs promise or raise the documented
:class:`InputError` — never anything else — and the DW-Mesh invariants of spec §3 hold on whatever passes."""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ex4d.depth.files import load_depth_array
from ex4d.errors import InputError
from ex4d.geometry.conventions import reference_intrinsics
from ex4d.io.trajectory_file import FILE_KEYS, KEYFRAME_KEYS, load_trajectory
from ex4d.mesh.build import MeshSettings, build_dw_mesh
from ex4d.reconstruction import check_depth, load_depth_file
from ex4d.render.dwmesh import RenderSettings, render_dw_mesh

# CI runs the same 40 examples each time (derandomized: no flaky failures); EX4D_FUZZ_EXAMPLES=2000 fuzzes afresh.
_EXAMPLES = os.environ.get("EX4D_FUZZ_EXAMPLES")
FUZZ = settings(max_examples=int(_EXAMPLES or 40), derandomize=_EXAMPLES is None, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------- trajectory files
numbers = st.one_of(st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True), st.booleans())
json_values = st.recursive(st.none() | numbers | st.text(max_size=4),
                           lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=4),
                           max_leaves=30)


@st.composite
def matrices(draw):
    """Near-rigid (T, 4, 4) stacks, sometimes perturbed: most examples reach the rigidity and count checks."""
    n = draw(st.integers(0, 6))
    angles = draw(hnp.arrays(np.float64, (n, 3), elements=st.floats(-4, 4)))
    from scipy.spatial.transform import Rotation

    w2c = np.tile(np.eye(4), (n, 1, 1))
    if n:
        w2c[:, :3, :3] = Rotation.from_euler("xyz", angles).as_matrix()
        w2c[:, :3, 3] = draw(hnp.arrays(np.float64, (n, 3), elements=st.floats(-1e3, 1e3)))
    if n and draw(st.booleans()):
        i, j, k = draw(st.integers(0, n - 1)), draw(st.integers(0, 3)), draw(st.integers(0, 3))
        w2c[i, j, k] = draw(st.floats(allow_nan=True, allow_infinity=True))
    return w2c.tolist()


keyframe = st.dictionaries(st.sampled_from(KEYFRAME_KEYS + ("x",)),
                           st.one_of(numbers, st.lists(numbers, min_size=3, max_size=3), json_values), max_size=5)
trajectory_docs = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(FILE_KEYS + ("name",)), st.one_of(json_values, matrices()), max_size=3),
    st.fixed_dictionaries({"w2c": matrices()}, optional={"K": json_values, "intrinsics": matrices()}),
    st.fixed_dictionaries({"keyframes": st.lists(keyframe, max_size=4)}),
)


def _check_trajectory(path, num_frames):
    try:
        trajectory = load_trajectory(path, num_frames)
    except InputError:
        return
    w2c = trajectory.w2c
    assert w2c.shape == (num_frames, 4, 4) and np.isfinite(w2c).all()
    rot = w2c[:, :3, :3]
    assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-3)
    assert (np.linalg.det(rot) > 0).all()
    if trajectory.K is not None:
        assert trajectory.K.shape == (num_frames, 3, 3) and np.isfinite(trajectory.K).all()


@FUZZ
@given(doc=trajectory_docs, num_frames=st.integers(1, 6))
def test_trajectory_json_parser(tmp_path_factory, doc, num_frames):
    path = tmp_path_factory.mktemp("traj") / "cam.json"
    path.write_text(json.dumps(doc))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning (e.g. overflow) is a sign of an unchecked value
        _check_trajectory(path, num_frames)


@FUZZ
@given(arrays=st.dictionaries(st.sampled_from(FILE_KEYS + ("other",)),
                              hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.uint8, bool, "U2"]),
                                         hnp.array_shapes(min_dims=0, max_dims=4, max_side=5)), max_size=3),
       num_frames=st.integers(1, 5))
def test_trajectory_npz_parser(tmp_path_factory, arrays, num_frames):
    path = tmp_path_factory.mktemp("traj") / "cam.npz"
    np.savez(path, **arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check_trajectory(path, num_frames)


# ---------------------------------------------------------------------------------------------- depth files
depth_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                         st.floats(min_value=0.0625, max_value=1024.0, width=32))
depth_arrays = st.one_of(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6)), elements=depth_values),
    hnp.arrays(st.sampled_from([np.float16, np.float64, np.int16, np.uint8, np.int64, bool, np.complex64, "U1"]),
               hnp.array_shapes(min_dims=0, max_dims=5, max_side=4)),
)


@FUZZ
@given(depth=depth_arrays, key=st.sampled_from(["depth", "depth", "disparity"]),
       intrinsics=st.none() | hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=3)),
       num_frames=st.integers(1, 4), garbage=st.none() | st.binary(max_size=64))
def test_depth_file_reader(tmp_path_factory, depth, key, intrinsics, num_frames, garbage):
    path = tmp_path_factory.mktemp("depth") / "d.npz"
    if garbage is not None:
        path.write_bytes(garbage)
    else:
        np.savez(path, **{key: depth}, **({} if intrinsics is None else {"intrinsics": intrinsics}))
    try:  # the one depth reader (ex4d.io.depth_file) as the `file` backend uses it: any single array
        maps, _ = load_depth_array(path)
        assert maps.ndim == 3 and np.issubdtype(maps.dtype, np.number) and not np.iscomplexobj(maps)
    except InputError:
        pass
    try:  # the same reader for z-depth (recon --depth, run, the app) and its validation
        loaded, K = load_depth_file(path)
        checked = check_depth(loaded, num_frames)
    except InputError:
        return
    assert garbage is None and key == "depth"
    assert checked.dtype == np.float32 and checked.shape[0] == num_frames and checked.ndim == 3
    assert np.isfinite(checked).all() and (checked > 0).all()
    assert min(checked.shape[1:]) >= 2


# ---------------------------------------------------------------------------------------------- DW-Mesh builder
mesh_depths = hnp.arrays(
    np.float64, st.tuples(st.integers(1, 2), st.integers(2, 7), st.integers(2, 7)),
    elements=st.one_of(st.floats(1e-30, 1e30), st.sampled_from([1e-6, 1.0, 3.0, 100.0, 1e6]), st.just(0.0),
                       st.just(np.nan)),
)


@FUZZ
@given(depth=mesh_depths, occluders=st.sampled_from(["keep", "delete"]), focal=st.floats(0.5, 2000),
       reference=st.booleans())
def test_dw_mesh_invariants(depth, occluders, focal, reference):
    num, height, width = depth.shape
    try:
        depth32 = check_depth(depth, num)  # the library's own validation, as recon applies it
    except InputError:
        return
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (num, height, width, 3), dtype=np.uint8))
    K = reference_intrinsics(height, width).clone()
    K[0, 0] = K[1, 1] = focal
    mesh_settings = MeshSettings(occluders=occluders)
    with torch.no_grad():
        mesh = build_dw_mesh(torch.from_numpy(depth32), frames, K, mesh_settings, _reference=reference)

    n, f = height * width, 2 * (height - 1) * (width - 1) + 2  # spec §3: a vertex per pixel, 2 faces/block + caps
    assert mesh.vertices.shape == (num, n, 3) and mesh.colors.shape == (num, n, 4)
    assert mesh.faces.shape == (f, 3) and mesh.face_valid.shape == (num, f)
    assert int(mesh.faces.min()) >= 0 and int(mesh.faces.max()) < n
    assert torch.isfinite(mesh.vertices).all(), "NaN/inf vertex"
    z = mesh.vertices[..., 2].reshape(num, height, width)
    interior = torch.from_numpy(depth32)[:, 1:-1, 1:-1]
    assert torch.equal(z[:, 1:-1, 1:-1], interior)  # z-depth kept exactly
    border = torch.ones(height, width, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert (z[:, border] == mesh_settings.border_depth).all()  # the 1-pixel border is the far wall
    assert ((mesh.colors >= 0) & (mesh.colors <= 1)).all()
    if occluders == "delete":
        assert torch.equal(mesh.face_mask, mesh.face_valid)

    # Rendered from the source camera, every output is finite and in range.
    w2c = torch.eye(4).expand(num, 4, 4)
    out = render_dw_mesh(mesh, w2c, K, RenderSettings(backend="torch" if reference else "warp"))
    assert out.color.shape == (num, height, width, 3) and torch.isfinite(out.color).all()
    assert float(out.color.min()) >= 0 and float(out.color.max()) <= 1 + 1e-5  # convex combinations of colours
    assert torch.isfinite(out.depth_z).all() and (out.depth_z >= 0).all()
    assert math.isfinite(float(out.seen.float().mean()))


# Found by test_dw_mesh_invariants: with the scene ~1e4× nearer than the border wall (or far behind it) and a very
# wide field of view, samples accepted by the edge tolerance had barycentrics far outside the face; both
# rasterisers now clamp them onto the face.
@pytest.mark.parametrize("backend, depth, shape", [("torch", 0.01, (3, 3)), ("warp", 1e-4, (3, 3)),
                                                   ("torch", 1.22978314e19, (4, 5))])
def test_render_colour_stays_within_the_vertex_colours(backend, depth, shape):
    height, width = shape
    K = reference_intrinsics(height, width).clone()
    K[0, 0] = K[1, 1] = 1.0
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8))
    mesh = build_dw_mesh(torch.full((1, height, width), depth), frames, K, _reference=backend == "torch")
    out = render_dw_mesh(mesh, torch.eye(4)[None], K, RenderSettings(backend=backend))
    assert 0 <= float(out.color.min()) and float(out.color.max()) <= int(frames.max()) / 255 + 1e-4
