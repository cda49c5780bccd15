"""Property-based fuzzing (hypothesis) of the three parsers of untrusted input and the mesh builder behind them:
random structures, shapes, dtypes and values either load into what the docs promise or raise the documented
:class:`InputError` — never anything else — and the DW-Mesh invariants of spec §3 hold on whatever passes.

Each parser has two strategies: *garbage* (anything: must load or raise InputError, nothing else) and *valid*
(documented formats with random content: must load, and every example then checks the post-conditions). Garbage
alone almost never gets through a parser, so without the valid strategies the post-conditions would not run.
"""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ex4d.depth.files import load_depth_array
from ex4d.errors import InputError
from ex4d.geometry.conventions import reference_intrinsics, w2c_to_reference
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


def rigid_stack(draw, n: int, reach: float) -> np.ndarray:
    """(n, 4, 4) float64 rigid world-to-camera matrices: random rotations, translations within ±reach."""
    from scipy.spatial.transform import Rotation

    angles = draw(hnp.arrays(np.float64, (n, 3), elements=st.floats(-4, 4)))
    w2c = np.tile(np.eye(4), (n, 1, 1))
    w2c[:, :3, :3] = Rotation.from_euler("xyz", angles).as_matrix()
    w2c[:, :3, 3] = draw(hnp.arrays(np.float64, (n, 3), elements=st.floats(-reach, reach)))
    return w2c


@st.composite
def valid_intrinsics(draw, num_frames: int) -> np.ndarray:
    """(3, 3) or (T, 3, 3) pinhole intrinsics with positive focal lengths."""
    n = draw(st.sampled_from([None, num_frames]))
    shape = () if n is None else (n,)
    K = np.zeros(shape + (3, 3))
    K[..., 0, 0] = draw(hnp.arrays(np.float64, shape, elements=st.floats(1.0, 5000.0)))
    K[..., 1, 1] = draw(hnp.arrays(np.float64, shape, elements=st.floats(1.0, 5000.0)))
    K[..., :2, 2] = draw(hnp.arrays(np.float64, shape + (2,), elements=st.floats(-1e3, 1e3)))
    K[..., 2, 2] = 1.0
    return K


@st.composite
def valid_per_frame_files(draw):
    """(suffix, document, num_frames, expected w2c (T, 4, 4), expected K (T, 3, 3) or None) of a per-frame file."""
    num_frames = draw(st.integers(1, 6))
    w2c = rigid_stack(draw, num_frames, 1e3)
    key = draw(st.sampled_from(["w2c", "extrinsics"]))
    doc = {key: w2c if key == "w2c" else w2c_to_reference(w2c)}  # the reference's layout: diag(1,-1,-1,1) @ w2c
    K = None
    k_key = draw(st.sampled_from([None, "intrinsics", "K"]))
    if k_key is not None:
        doc[k_key] = draw(valid_intrinsics(num_frames))
        K = np.broadcast_to(doc[k_key], (num_frames, 3, 3))
    suffix = draw(st.sampled_from([".json", ".npz"]))
    if suffix == ".npz" and draw(st.booleans()):  # float32, as save_trajectory and the reference write them
        doc = {k: v.astype(np.float32) for k, v in doc.items()}
        w2c = w2c_to_reference(doc[key].astype(np.float64)) if key == "extrinsics" else doc[key].astype(np.float64)
        K = None if K is None else np.broadcast_to(doc[k_key].astype(np.float64), (num_frames, 3, 3))
    return suffix, doc, num_frames, w2c, K


def write_trajectory_doc(path, doc: dict) -> None:
    if path.suffix == ".npz":
        np.savez(path, **doc)
    else:
        path.write_text(json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in doc.items()}))


def assert_rigid_path(w2c: np.ndarray, num_frames: int) -> None:
    assert w2c.shape == (num_frames, 4, 4) and np.isfinite(w2c).all()
    rot = w2c[:, :3, :3]
    assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-6)
    assert (np.linalg.det(rot) > 0).all()
    assert np.array_equal(w2c[:, 3], np.tile([0.0, 0.0, 0.0, 1.0], (num_frames, 1)))


@FUZZ
@given(case=valid_per_frame_files())
def test_valid_per_frame_files_load_as_written(tmp_path_factory, case):
    suffix, doc, num_frames, w2c, K = case
    path = tmp_path_factory.mktemp("traj") / f"cam{suffix}"
    write_trajectory_doc(path, doc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trajectory = load_trajectory(path, num_frames)  # a documented file: never an InputError
    assert_rigid_path(trajectory.w2c, num_frames)
    assert np.allclose(trajectory.w2c, w2c, rtol=0, atol=1e-12 * max(1.0, np.abs(w2c).max()))
    assert trajectory.name == "cam"
    if K is None:
        assert trajectory.K is None
    else:
        assert np.array_equal(trajectory.K, K)
    # one camera more or fewer than the video's frames is refused
    with pytest.raises(InputError, match="cameras but the video has"):
        load_trajectory(path, num_frames + 1)


UP = np.array([0.0, 1.0, 0.0])


@st.composite
def look_at_keyframe(draw):
    """{"eye", "look_at"[, "up"]} with eye and look_at apart and up away from the viewing direction."""
    eye = draw(hnp.arrays(np.float64, 3, elements=st.floats(-50, 50)))
    direction = draw(hnp.arrays(np.float64, 3, elements=st.floats(-10, 10)).filter(
        lambda d: np.linalg.norm(d) > 0.1))
    up = draw(st.none() | hnp.arrays(np.float64, 3, elements=st.floats(-1, 1)))
    unit = direction / np.linalg.norm(direction)
    used_up = UP if up is None else up
    assume(np.linalg.norm(np.cross(used_up, unit)) > 0.2 * max(np.linalg.norm(used_up), 1e-9))
    frame = {"eye": eye.tolist(), "look_at": (eye + direction).tolist()}
    if up is not None:
        frame["up"] = up.tolist()
    return frame


@st.composite
def valid_keyframe_files(draw):
    """(document, num_frames, {frame index: keyframe}) of a keyframe file; keyframes timed by 't' or 'frame'."""
    num_frames = draw(st.integers(1, 8))
    by_frame = draw(st.booleans())
    count = draw(st.integers(1, min(4, num_frames) if by_frame else 4))
    if by_frame:
        slots = sorted(draw(st.sets(st.integers(0, num_frames - 1), min_size=count, max_size=count)))
    else:
        slots = sorted(draw(st.sets(st.integers(0, 20), min_size=count, max_size=count)))  # t on a 1/20 grid
    keyframes = []
    for slot in slots:
        kind = draw(st.sampled_from(["look_at", "w2c", "c2w"]))
        frame = draw(look_at_keyframe()) if kind == "look_at" else {kind: rigid_stack(draw, 1, 50.0)[0].tolist()}
        frame.update({"frame": slot} if by_frame else {"t": slot / 20})
        keyframes.append(frame)
    at_frames = {}
    for frame in keyframes:  # frames that sit exactly at a keyframe's time
        if by_frame:
            at_frames[frame["frame"]] = frame
        elif num_frames > 1 and (frame["t"] * 20 * (num_frames - 1)) % 20 == 0:
            at_frames[round(frame["t"] * (num_frames - 1))] = frame
    return {"keyframes": keyframes}, num_frames, at_frames


def keyframe_w2c(frame: dict) -> np.ndarray | None:
    if "w2c" in frame:
        return np.asarray(frame["w2c"])
    if "c2w" in frame:
        return np.linalg.inv(np.asarray(frame["c2w"]))
    return None


@FUZZ
@given(case=valid_keyframe_files())
def test_valid_keyframe_files_pass_through_their_keyframes(tmp_path_factory, case):
    doc, num_frames, at_frames = case
    path = tmp_path_factory.mktemp("traj") / "keys.json"
    path.write_text(json.dumps(doc))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trajectory = load_trajectory(path, num_frames)  # a documented file: never an InputError
    w2c = trajectory.w2c
    assert_rigid_path(w2c, num_frames)
    assert trajectory.K is None
    for index, frame in at_frames.items():  # keyframes are reproduced at their times
        expected = keyframe_w2c(frame)
        if expected is not None:
            assert np.allclose(w2c[index], expected, atol=1e-6), index
        else:  # eye/look_at: the camera sits at eye, its optical axis (+z) points at look_at, image down is "up"
            eye, target = np.asarray(frame["eye"]), np.asarray(frame["look_at"])
            rot, t = w2c[index, :3, :3], w2c[index, :3, 3]
            assert np.allclose(-rot.T @ t, eye, atol=1e-6)
            assert np.allclose(rot[2], (target - eye) / np.linalg.norm(target - eye), atol=1e-6)
            assert rot[1] @ np.asarray(frame.get("up", UP)) > 0


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


@st.composite
def valid_depth_files(draw):
    """(arrays to save, num_frames, expected maps (T, H, W) float32, expected K or None) of a documented depth file:
    ``depth`` (T, H, W) or the reference's (T, 1, H, W), positive finite values in any numeric dtype."""
    T, H, W = draw(st.integers(1, 4)), draw(st.integers(2, 6)), draw(st.integers(2, 6))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16, np.uint16, np.int32]))
    elements = {np.float32: st.floats(2.0**-100, 2.0**100, width=32), np.float64: st.floats(1e-30, 1e30),
                np.float16: st.floats(2.0**-10, 2.0**15, width=16), np.uint16: st.integers(1, 65535),
                np.int32: st.integers(1, 2**31 - 1)}[dtype]
    depth = draw(hnp.arrays(dtype, (T, H, W), elements=elements))
    arrays = {"depth": depth[:, None] if draw(st.booleans()) else depth}
    K = draw(st.none() | valid_intrinsics(T))
    if K is not None:
        arrays["intrinsics"] = K
    return arrays, T, depth.astype(np.float32), K


@FUZZ
@given(case=valid_depth_files())
def test_valid_depth_files_load_in_both_readers(tmp_path_factory, case):
    arrays, num_frames, expected, K = case
    path = tmp_path_factory.mktemp("depth") / "d.npz"
    np.savez(path, **arrays)
    loaded, loaded_K = load_depth_file(path)  # recon's reader (--depth): a documented file is never refused
    checked = check_depth(loaded, num_frames)
    assert checked.dtype == np.float32 and np.array_equal(checked, expected)
    assert (loaded_K is None) == (K is None) and (K is None or np.array_equal(loaded_K, K))
    maps, file_K = load_depth_array(path)  # the `file` depth backend's reader takes it too, same maps
    assert np.array_equal(np.asarray(maps, np.float32), expected)
    assert (file_K is None) == (K is None) and (K is None or np.allclose(file_K, K, rtol=1e-6))
    with pytest.raises(InputError, match="frames"):
        check_depth(loaded, num_frames + 1)


# ---------------------------------------------------------------------------------------------- DW-Mesh builder
# valid depth only (positive, finite, within float32's range): refusing the others is the depth readers' business,
# tested above; here every example reaches the mesh invariants
mesh_depths = hnp.arrays(
    np.float64, st.tuples(st.integers(1, 2), st.integers(2, 7), st.integers(2, 7)),
    elements=st.one_of(st.floats(1e-30, 1e30), st.sampled_from([1e-6, 1.0, 3.0, 100.0, 1e6])),
)


@FUZZ
@given(depth=mesh_depths, occluders=st.sampled_from(["keep", "delete"]), focal=st.floats(0.5, 2000),
       reference=st.booleans())
def test_dw_mesh_invariants(depth, occluders, focal, reference):
    num, height, width = depth.shape
    depth32 = check_depth(depth, num)  # the library's own validation, as recon applies it: accepts these
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
