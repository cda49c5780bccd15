"""Path design, preview, plot, mesh and generation of the web app, against independent expectations."""

import json

import av
import numpy as np
import pytest
import torch

from ex4d.errors import InputError
from ex4d.geometry.conventions import unproject_depth
from ex4d.io.trajectory_file import load_trajectory
from ex4d.reconstruction import recon
from ex4d.ui import actions
from ex4d.ui.actions import PathDesign


def _centres(w2c):
    return np.linalg.inv(w2c)[:, :3, 3]


def test_orbit_reaches_the_angle_at_the_scaled_radius(clip):
    trajectory = actions.build_trajectory(clip, PathDesign("orbit", angle=40, elevation=0, radius_scale=1.5))
    r = 1.5 * clip.radius
    a = np.radians(40)
    # Orbit of the pivot (0, 0, r): the last camera sits at yaw 40° on the circle of radius r.
    np.testing.assert_allclose(_centres(trajectory.w2c)[-1], [r * np.sin(a), 0, r - r * np.cos(a)], atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(_centres(trajectory.w2c) - [0, 0, r], axis=1), r, atol=1e-9)
    np.testing.assert_allclose(trajectory.K, np.repeat(clip.K[None], clip.num_frames, 0))


def test_zoom_ramps_the_focal_length_and_names_follow_the_content(clip):
    plain = actions.build_trajectory(clip, PathDesign("pan", angle=10))
    zoomed = actions.build_trajectory(clip, PathDesign("pan", angle=10, zoom=2.0))
    np.testing.assert_array_equal(plain.w2c, zoomed.w2c)
    f = zoomed.K[:, 0, 0] / clip.K[0, 0]
    np.testing.assert_allclose(f, np.linspace(1, 2, clip.num_frames))
    np.testing.assert_allclose(zoomed.K[:, 1, 1] / clip.K[1, 1], f)
    np.testing.assert_array_equal(zoomed.K[:, :2, 2], np.repeat(clip.K[None, :2, 2], clip.num_frames, 0))
    assert plain.name != zoomed.name
    assert actions.build_trajectory(clip, PathDesign("pan", angle=10)).name == plain.name


def test_keyframe_table_passes_through_its_keyframes(clip):
    rows = [[0, 0, 0, 0, 0, 0, 5], [0.5, 1.0, -0.5, 0.5, 0, 0, 5], [1.0, 2.0, 0.0, 1.0, 0, 0, 5]]
    trajectory = actions.build_trajectory(clip, PathDesign("keyframes", keyframes=rows))
    centres = _centres(trajectory.w2c)
    T = clip.num_frames  # 9: t = 0, 0.5, 1 are frames 0, 4, 8
    np.testing.assert_allclose(centres[[0, (T - 1) // 2, T - 1]], [r[1:4] for r in rows], atol=1e-9)
    # Every camera looks at (0, 0, 5) at the keyframes: its optical axis points there.
    for frame, row in zip((0, 4, 8), rows):
        c2w = np.linalg.inv(trajectory.w2c[frame])
        to_target = np.asarray(row[4:7]) - c2w[:3, 3]
        np.testing.assert_allclose(c2w[:3, 2], to_target / np.linalg.norm(to_target), atol=1e-9)
    # A path sampled into the table and read back is the same path at the sampled frames.
    orbit = actions.build_trajectory(clip, PathDesign("orbit", angle=30))
    table = actions.rows_from_trajectory(clip, orbit, count=3)
    again = actions.build_trajectory(clip, PathDesign("keyframes", keyframes=table))
    np.testing.assert_allclose(_centres(again.w2c)[[0, 4, 8]], _centres(orbit.w2c)[[0, 4, 8]], atol=1e-3)


@pytest.mark.parametrize("rows, message", [([], "table is empty"), ([[0, "a", 0, 0, 0, 0, 1]], "must be a number"),
                                           ([[0.5, 0, 0, 0, 0, 0, 1], [0.2, 1, 0, 0, 0, 0, 1]], "increase strictly"),
                                           ([[0, 0, 0, 0, 0, 0]], "7 finite numbers")])
def test_bad_keyframe_tables_are_refused(clip, rows, message):
    with pytest.raises(InputError, match=message):
        actions.build_trajectory(clip, PathDesign("keyframes", keyframes=rows))


def test_bad_path_settings_are_refused(clip):
    with pytest.raises(InputError, match="unknown preset"):
        actions.build_trajectory(clip, PathDesign("teleport"))
    with pytest.raises(InputError, match="positive"):
        actions.build_trajectory(clip, PathDesign("orbit", zoom=0))
    with pytest.raises(InputError, match="no trajectory file imported"):
        actions.build_trajectory(clip, PathDesign("imported file"))


def test_exported_trajectory_round_trips_and_imports(clip):
    trajectory = actions.build_trajectory(clip, PathDesign("orbit", angle=-50, elevation=10, zoom=1.5))
    path = actions.export_trajectory(clip, trajectory)
    assert path.parent == clip.folder / "paths"
    loaded = load_trajectory(path, clip.num_frames)
    np.testing.assert_allclose(loaded.w2c, trajectory.w2c, atol=1e-12)
    np.testing.assert_allclose(loaded.K, trajectory.K, atol=1e-9)
    imported = actions.build_trajectory(clip, PathDesign("imported file", imported=str(path)))
    np.testing.assert_allclose(imported.w2c, trajectory.w2c, atol=1e-12)
    np.testing.assert_allclose(imported.K, trajectory.K, atol=1e-9)  # no second zoom on top
    assert actions.keyframe_rows(path) is None
    doc = clip.folder / "kf.json"
    doc.write_text(json.dumps({"keyframes": [{"t": 0, "eye": [0, 0, 0], "look_at": [0, 0, 1]},
                                             {"t": 1, "eye": [1, 0, 0], "look_at": [0, 0, 1]}]}))
    assert actions.keyframe_rows(doc) == [[0, 0, 0, 0, 0, 0, 1], [1, 1, 0, 0, 0, 0, 1]]


def test_preview_frames_equal_those_of_the_full_render(clip):
    trajectory = actions.build_trajectory(clip, PathDesign("orbit", angle=60))
    preview = actions.render_preview(clip, trajectory, count=4)
    assert preview.frames == [0, 3, 5, 8]
    full = recon(clip.video_path, clip.depth, cam=trajectory, num_frames=None, progress=False)
    assert preview.seen_fraction == pytest.approx(full.mask[preview.frames].mean())
    from PIL import Image

    strip = np.asarray(Image.open(preview.strip))
    assert strip.shape == (2 * 64, 4 * 64, 3)
    for i, t in enumerate(preview.frames):
        np.testing.assert_array_equal(strip[:64, 64 * i:64 * (i + 1)], full.color[t])
        np.testing.assert_array_equal(strip[64:, 64 * i:64 * (i + 1), 0] > 127, full.mask[t])
    with av.open(str(preview.video)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 4
    assert actions.preview_indices(9, None) == list(range(9))
    assert actions.preview_indices(49, 8)[0] == 0 and actions.preview_indices(49, 8)[-1] == 48


def test_path_picture_follows_the_path(clip):
    from PIL import Image

    from ex4d.io.trajectory_plot import trajectory_image
    from ex4d.geometry.conventions import unproject_depth

    orbit = actions.build_trajectory(clip, PathDesign("orbit", angle=30))
    pan = actions.build_trajectory(clip, PathDesign("pan", angle=30))
    a, b = actions.plot_path(clip, orbit), actions.plot_path(clip, pan)
    assert a != b and a.parent == b.parent == clip.folder / "preview"
    points = unproject_depth(torch.from_numpy(clip.depth[0]), torch.from_numpy(clip.K)).numpy().reshape(-1, 3)
    # The picture is the plot module's drawing of this path over frame 0's points.
    expected = trajectory_image(orbit.w2c, points, clip.frames[0].reshape(-1, 3))
    np.testing.assert_array_equal(np.asarray(Image.open(a).convert("RGB")), expected)


def test_mesh_glb_is_frame_zero_in_gltf_axes(clip):
    import trimesh

    path = actions.mesh_glb(clip)
    mesh = trimesh.load(path, force="mesh", process=False)
    points = unproject_depth(torch.from_numpy(clip.depth[0]), torch.from_numpy(clip.K)).numpy()
    H, W = clip.depth.shape[1:]
    vertices = np.asarray(mesh.vertices[: H * W]).reshape(H, W, 3)
    # Vertex i is pixel i unprojected (OpenCV), with y and z flipped for glTF's y-up axes; the 1-px border is
    # the reference's far wall, pushed back.
    np.testing.assert_allclose(vertices[1:-1, 1:-1], points[1:-1, 1:-1] * [1, -1, -1], atol=1e-4)
    assert (vertices[0, :, 2] < -50).all()


def test_generate_writes_the_downloads_and_reuses_the_cache(clip):
    trajectory = actions.build_trajectory(clip, PathDesign("orbit", angle=45))
    result = actions.generate(clip, trajectory, "offline", device="cpu")
    for path in (result.output, result.mask, result.side_by_side, result.trajectory, result.mesh):
        assert path.is_file() and path.resolve().is_relative_to(clip.folder)
    with av.open(str(result.output)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == clip.num_frames and frames[0].shape == (64, 64, 3)
    np.testing.assert_allclose(load_trajectory(result.trajectory, clip.num_frames).w2c, trajectory.w2c, atol=1e-12)
    stamp = result.output.stat().st_mtime_ns
    actions.generate(clip, trajectory, "offline", device="cpu")
    assert result.output.stat().st_mtime_ns == stamp
    assert json.loads((clip.folder / "runs" / "run.json").read_text())["stages"][f"fill_{trajectory.name}"] == "cached"
    with pytest.raises(InputError, match="unknown fill"):
        actions.generate(clip, trajectory, "magic")


def test_viewer_glb_keeps_the_visible_surface_only(clip):
    import trimesh

    from ex4d.mesh.build import build_dw_mesh

    view = trimesh.load(actions.viewer_glb(clip), force="mesh", process=False)
    mesh = build_dw_mesh(torch.from_numpy(clip.depth[:1]), torch.from_numpy(clip.frames[:1]),
                         torch.from_numpy(clip.K[None]))
    H, W = clip.depth.shape[1:]
    faces = mesh.faces.numpy()
    v, u = faces // W, faces % W
    interior = ((v > 0) & (v < H - 1) & (u > 0) & (u < W - 1)).all(1) & mesh.face_valid[0].numpy()
    assert len(view.faces) == 2 * interior.sum()  # each kept face in both windings
    # No far wall (depth 100) and no occluder: every vertex is an interior pixel's point, in glTF axes.
    points = unproject_depth(torch.from_numpy(clip.depth[0]), torch.from_numpy(clip.K)).numpy()[1:-1, 1:-1]
    assert -view.vertices[:, 2].min() <= clip.depth[0, 1:-1, 1:-1].max() + 1e-4
    assert view.bounds[0, 2] >= -points[..., 2].max() - 1e-4 and view.bounds[1, 2] <= -points[..., 2].min() + 1e-4
