import math
from collections import Counter

import numpy as np
import pytest
import torch

from ex4d.geometry.conventions import reference_intrinsics
from ex4d.mesh.build import MeshSettings, build_dw_mesh, grid_faces
from ex4d.mesh.filters import interior_angles_deg


def reference_loop_mesh(depth, frame, f=500.0, offset=0.5, border=100.0, min_angle=2.5, keep=True):
    """A deliberately naive, loop-based reading of spec §3 (one frame)."""
    H, W = depth.shape
    d = depth.astype(np.float64).copy()
    d[0, :] = d[-1, :] = d[:, 0] = d[:, -1] = border
    verts = [((u + offset - W / 2) / f * d[v, u], (v + offset - H / 2) / f * d[v, u], d[v, u])
             for v in range(H) for u in range(W)]
    first, second = [], []
    for v in range(H - 1):
        for u in range(W - 1):
            tl, tr, bl, br = v * W + u, v * W + u + 1, (v + 1) * W + u, (v + 1) * W + u + 1
            first.append((bl, tl, tr))
            second.append((bl, tr, br))
    faces = first + second + [(W - 1, 0, H * W - 1), (H * W - 1, 0, (H - 1) * W)]
    colors = [[*(c / 255.0), 1.0] for c in frame.reshape(-1, 3).astype(np.float64)]
    valid = []
    for face in faces:
        p = [np.array(verts[i]) for i in face]
        angles = []
        for a, b, c in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
            e1, e2 = p[b] - p[a], p[c] - p[a]
            cos = np.dot(e1, e2) / (np.linalg.norm(e1) * np.linalg.norm(e2) + 1e-12)
            angles.append(math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
        valid.append(min(angles) >= min_angle)
    if keep:
        for face, ok in zip(faces, valid):
            if not ok:
                for i in face:
                    colors[i] = [0.0, 0.0, 0.0, 0.0]
        # ex4d's one difference (docs/conventions.md): the cap corners are occluders as well.
        for i in (0, W - 1, (H - 1) * W, H * W - 1):
            colors[i] = [0.0, 0.0, 0.0, 0.0]
    return np.array(verts), np.array(faces), np.array(colors), np.array(valid)


def random_scene(seed, H=8, W=9):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(3.0, 4.0, (H, W))
    depth[2:5, 3:7] = rng.uniform(1.0, 1.2)  # a foreground block: depth steps on its outline
    frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return depth.astype(np.float32), frame


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("keep", [True, False])
def test_vectorised_builder_matches_loop_reference(seed, keep):
    depth, frame = random_scene(seed)
    H, W = depth.shape
    settings = MeshSettings(occluders="keep" if keep else "delete")
    mesh = build_dw_mesh(torch.from_numpy(depth)[None], torch.from_numpy(frame)[None], reference_intrinsics(H, W),
                         settings)
    verts, faces, colors, valid = reference_loop_mesh(depth, frame, keep=keep)
    assert np.allclose(mesh.vertices[0].numpy(), verts, atol=1e-5)
    assert np.array_equal(mesh.faces.numpy(), faces)
    assert np.array_equal(mesh.face_valid[0].numpy(), valid)
    assert np.allclose(mesh.colors[0].numpy(), colors, atol=1e-6)
    if keep:
        assert mesh.face_mask is None
    else:
        assert np.array_equal(mesh.face_mask[0].numpy(), valid)
    assert 0 < (~valid).sum() < len(valid)  # the scene does exercise both kinds of face


def test_face_count_winding_and_caps():
    H, W = 4, 5
    faces = grid_faces(H, W).numpy()
    assert faces.shape == (2 * (H - 1) * (W - 1) + 2, 3)
    assert faces[0].tolist() == [W, 0, 1]  # (BL, TL, TR) of block (0, 0)
    assert faces[(H - 1) * (W - 1)].tolist() == [W, 1, W + 1]  # (BL, TR, BR)
    assert faces[-2].tolist() == [W - 1, 0, H * W - 1] and faces[-1].tolist() == [H * W - 1, 0, (H - 1) * W]
    # Consistent orientation: no directed edge is used twice.
    directed = Counter((int(f[i]), int(f[(i + 1) % 3])) for f in faces for i in range(3))
    assert max(directed.values()) == 1
    assert grid_faces(H, W, cap=False).shape[0] == 2 * (H - 1) * (W - 1)


def test_front_sheet_normals_point_away_from_camera_and_caps_toward_it():
    depth = torch.full((1, 6, 7), 5.0)
    mesh = build_dw_mesh(depth, torch.zeros(1, 6, 7, 3, dtype=torch.uint8), reference_intrinsics(6, 7))
    p = mesh.vertices[0][mesh.faces]
    normals = torch.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], dim=-1)
    interior = (p[:, :, 2] == 5.0).all(1)
    assert (normals[interior, 2] > 0).all()
    assert (normals[-2:, 2] < 0).all()


def test_flat_plane_has_no_stretched_interior_faces_and_border_goes_to_the_far_wall():
    H, W = 10, 12
    depth = torch.full((2, H, W), 4.0)
    frames = torch.randint(0, 256, (2, H, W, 3), dtype=torch.uint8)
    K = reference_intrinsics(H, W)
    mesh = build_dw_mesh(depth, frames, K)
    z = mesh.vertices[..., 2].reshape(2, H, W)
    assert (z[:, 0] == 100).all() and (z[:, :, -1] == 100).all() and (z[:, 1:-1, 1:-1] == 4.0).all()
    corners = mesh.vertices[0][mesh.faces]
    interior = (corners[:, :, 2] == 4.0).all(1)
    assert mesh.face_valid[:, interior].all()
    # Skirt faces (interior ring to the far wall) are stretched; the two caps are not.
    far = (corners[:, :, 2] == 100.0).all(1)
    skirt = ~interior & ~far
    # Blocks touching the border, less the one all-far face in the TL and BR corner blocks (spec §3.4).
    assert skirt.sum() == 2 * ((H - 1) * (W - 1) - (H - 3) * (W - 3)) - 2
    assert not mesh.face_valid[:, skirt].any()
    assert mesh.face_valid[:, -2:].all()
    # Interior vertices away from the skirt keep their colour and alpha 1.
    alpha = mesh.colors[..., 3].reshape(2, H, W)
    assert (alpha[:, 2:-2, 2:-2] == 1).all() and (alpha[:, 1, 3] == 0).all()
    rgb = mesh.colors[..., :3].reshape(2, H, W, 3)
    assert torch.allclose(rgb[:, 2:-2, 2:-2], frames[:, 2:-2, 2:-2].float() / 255)


def test_every_face_across_a_depth_step_is_flagged():
    H, W = 10, 12
    depth = torch.full((1, H, W), 8.0)
    depth[:, :, 6:] = 4.0  # a vertical step between columns 5 and 6
    mesh = build_dw_mesh(depth, torch.zeros(1, H, W, 3, dtype=torch.uint8), reference_intrinsics(H, W))
    cols = mesh.faces[:-2] % W
    rows = mesh.faces[:-2] // W
    inner = (rows > 0).all(1) & (rows < H - 1).all(1) & (cols > 0).all(1) & (cols < W - 1).all(1)
    across = (cols.min(1).values == 5) & (cols.max(1).values == 6)
    flat = inner & ~across
    assert not mesh.face_valid[0, :-2][inner & across].any()
    assert mesh.face_valid[0, :-2][flat].all()


def test_min_angle_threshold_against_an_analytic_sliver():
    # Isosceles triangle whose apex angle is exactly 2 degrees (< 2.5) and one of 3 degrees (>= 2.5).
    def tri(apex_deg):
        h = 1.0 / math.tan(math.radians(apex_deg / 2))
        return torch.tensor([[[0.0, h, 0.0], [-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], dtype=torch.float64)
    assert interior_angles_deg(tri(2.0))[0, 0].item() == pytest.approx(2.0)
    from ex4d.mesh.filters import min_angle_valid
    assert not min_angle_valid(tri(2.0)).item() and min_angle_valid(tri(3.0)).item()


def test_grazing_threshold_matches_the_23x_rule():
    # Spec: a step of more than ~23 pixel spacings (D/500) between neighbours is flagged.
    H, W, D = 8, 8, 5.0
    spacing = D / 500
    ok = torch.full((1, H, W), D)
    ok[:, :, 4:] = D + 20 * spacing
    bad = torch.full((1, H, W), D)
    bad[:, :, 4:] = D + 26 * spacing
    K = reference_intrinsics(H, W)
    blank = torch.zeros(1, H, W, 3, dtype=torch.uint8)
    centre_faces = lambda m: m.face_valid[0, :-2][((m.faces[:-2] // W == 3) | (m.faces[:-2] // W == 4)).all(1)
                                                   & (m.faces[:-2] % W).min(1).values.eq(3)]
    assert centre_faces(build_dw_mesh(ok, blank, K)).all()
    assert not centre_faces(build_dw_mesh(bad, blank, K)).any()


def test_extent_filter_only_adds_invalid_faces():
    depth, frame = random_scene(7, 12, 12)
    args = torch.from_numpy(depth)[None], torch.from_numpy(frame)[None], reference_intrinsics(12, 12)
    plain = build_dw_mesh(*args)
    extent = build_dw_mesh(*args, MeshSettings(extent_filter=True))
    assert (extent.face_valid <= plain.face_valid).all()
    assert (extent.face_valid != plain.face_valid).any()
    assert not extent.face_valid[0, -2:].any()  # the big caps fail the extent test


def test_reference_pixel_offset_option():
    depth = torch.full((1, 4, 4), 2.0)
    K = reference_intrinsics(4, 4)
    centre = build_dw_mesh(depth, torch.zeros(1, 4, 4, 3, dtype=torch.uint8), K)
    corner = build_dw_mesh(depth, torch.zeros(1, 4, 4, 3, dtype=torch.uint8), K, MeshSettings(pixel_offset=0.0))
    # Vertex (v=1, u=1): x = (u + offset - W/2) / 500 * D.
    assert centre.vertices[0, 5, 0].item() == pytest.approx((1.5 - 2) / 500 * 2)
    assert corner.vertices[0, 5, 0].item() == pytest.approx((1.0 - 2) / 500 * 2)


def test_bad_settings_raise():
    with pytest.raises(ValueError):
        MeshSettings(occluders="hide")
    with pytest.raises(ValueError):
        MeshSettings(min_angle_deg=0)


@pytest.mark.parametrize("seed", range(3))
def test_grid_filters_match_the_per_face_definitions(seed):
    from ex4d.mesh.filters import extent_valid, grid_extent_valid, grid_min_angle_valid, min_angle_valid

    rng = np.random.default_rng(seed)
    depth = torch.from_numpy(rng.uniform(2, 3, (2, 12, 14)))
    depth[:, 3:7, 2:9] = 1.0
    depth[1, 5:, :] += torch.from_numpy(rng.uniform(0, 0.5, (7, 14)))
    from ex4d.geometry.conventions import unproject_depth
    points = unproject_depth(depth, reference_intrinsics(12, 14).double())
    faces = grid_faces(12, 14, cap=False)
    corners = points.reshape(2, -1, 3)[:, faces]
    first, second = grid_min_angle_valid(points)
    assert torch.equal(torch.cat([first.reshape(2, -1), second.reshape(2, -1)], 1), min_angle_valid(corners))
    z_range = depth.amax((1, 2)) - depth.amin((1, 2))
    first, second = grid_extent_valid(points, z_range, 0.05)
    expected = extent_valid(corners, z_range, 0.05)
    assert torch.equal(torch.cat([first.reshape(2, -1), second.reshape(2, -1)], 1), expected)
    assert 0 < expected.sum() < expected.numel()


def test_focal_scaled_threshold_flags_the_same_relative_step_at_any_focal():
    # At f = 500 the scaled threshold is exactly the reference's; at f = 125 a step the 2.5° test misses (it
    # is only ~8 pixel footprints deep there) is flagged once the threshold is rescaled.
    H, W, D = 8, 8, 5.0
    depth = torch.full((1, H, W), D)
    depth[:, :, 4:] = D + 0.4  # 0.4 / (5 / 125) = 10 footprints at f=125, 40 footprints at f=500
    blank = torch.zeros(1, H, W, 3, dtype=torch.uint8)
    scaled = MeshSettings(angle_reference_focal=500.0)
    K500, K125 = reference_intrinsics(H, W), reference_intrinsics(H, W, focal=125.0)
    assert torch.equal(build_dw_mesh(depth, blank, K500).face_valid, build_dw_mesh(depth, blank, K500, scaled).face_valid)
    step_faces = lambda m: m.face_valid[0, :-2][(m.faces[:-2] % W).min(1).values.eq(3) & (m.faces[:-2] // W > 0).all(1)
                                                & (m.faces[:-2] // W < H - 1).all(1)]
    assert step_faces(build_dw_mesh(depth, blank, K125)).all()  # the reference's threshold misses it
    assert not step_faces(build_dw_mesh(depth, blank, K125, scaled)).any()
    with pytest.raises(ValueError):
        MeshSettings(angle_reference_focal=0.0)
