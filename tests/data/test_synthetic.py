import math

import numpy as np
import pytest
import torch

from ex4d.data import (
    Box, Motion, Plane, Pole, Scene, Sphere, Texture, default_intrinsics, ground_truth_for_trajectory,
    make_scene, observable, raycast, render_scene_video,
)
from ex4d.data.synthetic import FLOOR_Y, WALL_Z
from ex4d.geometry.conventions import project_points, transform_points
from ex4d.geometry.trajectory import make_trajectory, reference_radius

EYE = torch.eye(4)
TEX = Texture("checker", (0.9, 0.9, 0.9), (0.1, 0.1, 0.1), (0.3, 0.3, 0.3))


def _room(*objects):
    wall = Plane(normal_vec=(0.0, 0.0, -1.0), offset=-WALL_Z, texture=TEX, name="wall")
    floor = Plane(normal_vec=(0.0, -1.0, 0.0), offset=-FLOOR_Y, texture=TEX, name="floor")
    return Scene(objects=[wall, floor, *objects])


def test_default_intrinsics_fov():
    K = default_intrinsics(96, 128, fov_x_deg=60.0)
    assert K.shape == (3, 3) and K.dtype == torch.float32
    assert math.isclose(2 * math.degrees(math.atan(64 / float(K[0, 0]))), 60.0, rel_tol=1e-5)
    assert K[0, 2] == 64 and K[1, 2] == 48 and K[0, 0] == K[1, 1]


def test_wall_depth_is_exact_from_the_source_camera():
    scene = _room()
    K = default_intrinsics(64, 80)
    view = raycast(scene, 0, EYE, K, 64, 80)
    wall = view.object_id == 0
    assert wall.any() and (view.object_id >= 0).all()
    assert (view.depth_z[wall] == WALL_Z).all()
    assert (view.points[wall][:, 2] == WALL_Z).all()
    floor = view.object_id == 1
    assert floor.any()
    assert torch.allclose(view.points[floor][:, 1], torch.tensor(FLOOR_Y), atol=1e-5)
    # Floor depth follows from the pixel row: y = (v + 0.5 - cy) / f * z = FLOOR_Y.
    v = torch.arange(64, dtype=torch.float64)[:, None].expand(64, 80)[floor]
    expected = FLOOR_Y * float(K[1, 1]) / (v + 0.5 - float(K[1, 2]))
    assert torch.allclose(view.depth_z[floor].double(), expected, rtol=1e-6)


def test_sphere_centre_pixel_depth():
    scene = _room(Sphere(center=(0.0, 0.0, 4.0), radius=0.7, texture=TEX))
    K = default_intrinsics(65, 65)  # odd size: pixel (32, 32) looks straight down the optical axis
    view = raycast(scene, 0, EYE, K, 65, 65)
    assert view.object_id[32, 32] == 2
    assert math.isclose(float(view.depth_z[32, 32]), 4.0 - 0.7, rel_tol=1e-6)
    # Off-axis: a sphere centred on the ray of pixel (v, u) = (10, 50) is hit at |c| - r along that ray.
    ray = torch.linalg.inv(K.double()) @ torch.tensor([50.5, 10.5, 1.0], dtype=torch.float64)
    centre = 5.0 * ray
    scene = _room(Sphere(center=tuple(centre.tolist()), radius=0.3, texture=TEX))
    view = raycast(scene, 0, EYE, K, 65, 65)
    expected_z = 5.0 * (1 - 0.3 / float(centre.norm()))
    assert math.isclose(float(view.depth_z[10, 50]), expected_z, rel_tol=1e-6)


@pytest.mark.parametrize("angle", ["0", "60"])
def test_hit_points_project_to_pixel_centres(angle):
    scene = make_scene(1)
    H, W, T = 48, 64, 5
    K = default_intrinsics(H, W)
    w2c = torch.as_tensor(make_trajectory(angle, T, 3.0).w2c, dtype=torch.float32)
    for t in (0, T - 1):
        view = raycast(scene, t, w2c[t], K, H, W)
        hit = view.object_id >= 0
        assert hit.float().mean() > 0.9
        cam = transform_points(w2c[t].double(), view.points.double().reshape(-1, 3)).reshape(H, W, 3)
        uv = project_points(cam, K.double())
        u = torch.arange(W, dtype=torch.float64) + 0.5
        v = torch.arange(H, dtype=torch.float64)[:, None] + 0.5
        assert torch.allclose(uv[..., 0][hit], u.expand(H, W)[hit], atol=1e-3)
        assert torch.allclose(uv[..., 1][hit], v.expand(H, W)[hit], atol=1e-3)
        assert torch.allclose(cam[..., 2][hit].float(), view.depth_z[hit], rtol=1e-5)
        assert (view.depth_z[~hit] == 0).all() and (view.object_id[~hit] == -1).all()


def test_primitives_analytic_hits():
    # Box face, pole side and cap, seen head-on from the source camera.
    scene = _room(Box(center=(-1.0, 0.0, 4.0), half_size=(0.3, 0.3, 0.5), texture=TEX),
                  Pole(center=(1.0, 0.0, 4.0), radius=0.2, half_height=1.0, texture=TEX))
    pts = torch.tensor([[-1.0, 0.0, 3.0], [1.0, 0.0, 3.0]], dtype=torch.float64)
    K = torch.tensor([[50.0, 0, 32.5], [0, 50.0, 32.5], [0, 0, 1]])  # pixel (32, 32) on the axis
    w2c = torch.eye(4, dtype=torch.float64)
    for p, z, oid in ((pts[0], 3.5, 2), (pts[1], 3.8, 3)):
        # Camera right in front of the primitive, looking along +z.
        w2c[:3, 3] = -p + torch.tensor([0.0, 0.0, 3.0])
        view = raycast(scene, 0, w2c, K, 64, 64)
        assert view.object_id[32, 32] == oid
        assert math.isclose(float(view.points[32, 32, 2]), z, abs_tol=1e-4)
    # Looking down (+y) at the pole's top cap from above.
    down = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
    down[:3, 3] = -(down[:3, :3] @ torch.tensor([1.0, -3.0, 4.0], dtype=torch.float64))
    view = raycast(scene, 0, down, K, 64, 64)
    assert view.object_id[32, 32] == 3 and math.isclose(float(view.depth_z[32, 32]), 2.0, rel_tol=1e-6)


def test_source_camera_sees_everything_it_renders():
    scene = make_scene(2)
    T, H, W = 6, 40, 48
    gt = ground_truth_for_trajectory(scene, np.tile(np.eye(4), (T, 1, 1)), default_intrinsics(H, W), H, W)
    assert gt["observable"].shape == (T, H, W) and gt["observable"].dtype == torch.bool
    assert gt["observable"].all()
    assert torch.equal(gt["source"]["frames"], gt["target"]["frames"])
    assert torch.equal(gt["source"]["depth"], gt["target"]["depth"])


def test_wall_behind_a_sphere_is_not_observable_from_the_side():
    sphere = Sphere(center=(0.0, 0.0, 3.5), radius=0.8, texture=TEX)
    scene = _room(sphere)
    H = W = 64
    T = 9
    K = default_intrinsics(H, W)
    src = raycast(scene, 0, EYE, K, H, W)
    traj = make_trajectory("60", T, reference_radius(src.depth_z))
    gt = ground_truth_for_trajectory(scene, traj.w2c, K, H, W)
    t = T // 2  # ~30 degrees round: the wall behind the sphere is in view
    # Wall points inside the sphere's shadow cone from the source camera centre: hidden by construction.
    c = torch.tensor(sphere.center, dtype=torch.float64)
    pts = gt["target"]["points"][t].double()
    on_wall = gt["target"]["object_id"][t] == 0
    cos = (pts @ c) / (pts.norm(dim=-1) * c.norm())
    half_angle = math.asin(sphere.radius / float(c.norm()))
    shadow = on_wall & (cos > math.cos(half_angle * 0.98))
    lit = on_wall & (cos < math.cos(half_angle * 1.02))
    assert shadow.sum() > 20, "the side view should see wall behind the sphere"
    assert not gt["observable"][t][shadow].any()
    # Wall outside the shadow and inside the source frustum is observable.
    uv = project_points(pts, K.double())
    in_src = (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)
    assert (lit & in_src).sum() > 20
    assert gt["observable"][t][lit & in_src].all()
    # Sphere points facing away from the source camera centre (self-occluded) are not observable either.
    facing = ((pts - c) * -pts).sum(-1) / (sphere.radius * pts.norm(dim=-1))
    back = (gt["target"]["object_id"][t] == 2) & (facing < -0.05)
    front = (gt["target"]["object_id"][t] == 2) & (facing > 0.05)
    assert front.any() and gt["observable"][t][front].all()
    assert back.any() and not gt["observable"][t][back].any()
    # The public function agrees with the trajectory helper.
    direct = observable(scene, t, gt["target"]["points"][t], EYE, K, H, W)
    assert torch.equal(direct & (gt["target"]["object_id"][t] >= 0), gt["observable"][t])


def test_observable_false_outside_the_source_frustum():
    scene = make_scene(0)
    K = default_intrinsics(32, 32)
    pts = torch.tensor([[10.0, 0.0, 7.9], [0.0, -9.0, 7.9], [0.0, 0.0, -3.0], [1e3, 1e3, 1.0],
                        [0.0, 0.0, 1.0]])
    obs = observable(scene, 0, pts, EYE, K, 32, 32)
    assert obs.tolist() == [False, False, False, False, True]
    assert observable(scene, 0, pts.reshape(5, 1, 3), EYE, K, 32, 32).shape == (5, 1)


def test_determinism_and_variety():
    K = default_intrinsics(32, 32)
    a = raycast(make_scene(7), 3, EYE, K, 32, 32)
    b = raycast(make_scene(7), 3, EYE, K, 32, 32)
    c = raycast(make_scene(8), 3, EYE, K, 32, 32)
    assert torch.equal(a.color, b.color) and torch.equal(a.depth_z, b.depth_z)
    assert not torch.equal(a.color, c.color) and not torch.equal(a.depth_z, c.depth_z)
    assert make_scene(7).describe() == make_scene(7).describe()


@pytest.mark.parametrize("seed", range(6))
def test_default_scene_layout(seed):
    scene = make_scene(seed, num_objects=5)
    kinds = [o.kind for o in scene.objects]
    assert kinds[:2] == ["plane", "plane"] and len(kinds) == 7
    assert {"sphere", "box", "pole"} <= set(kinds)
    assert len(scene.moving_ids) >= 2
    # Each object's centre is in the source frustum for a 50–60° FoV at every frame, between camera and wall.
    ts = torch.arange(0, 49, dtype=torch.float64)
    for obj in scene.objects[2:]:
        trans, _ = obj.pose(ts)
        assert (trans[:, 2] > 1.9).all() and (trans[:, 2] < WALL_Z - 0.4).all()
        for fov in (50.0, 60.0):
            assert (trans[:, 0].abs() < trans[:, 2] * math.tan(math.radians(fov / 2))).all()
    # Objects cover a good share of the source view.
    view = raycast(scene, 0, EYE, default_intrinsics(64, 64), 64, 64)
    assert (view.object_id >= 2).float().mean() > 0.03


def test_moving_objects_move_and_static_scenes_do_not():
    T = 17
    K = default_intrinsics(48, 48)
    w2c = np.tile(np.eye(4), (T, 1, 1))
    video = render_scene_video(make_scene(3), w2c, K, 48, 48)
    assert video["frames"].shape == (T, 48, 48, 3) and video["frames"].dtype == torch.uint8
    assert video["depth"].shape == (T, 48, 48) and video["depth"].dtype == torch.float32
    assert video["points"].shape == (T, 48, 48, 3)
    assert (video["depth"][0] != video["depth"][-1]).sum() > 10
    still = render_scene_video(make_scene(3, moving=False), w2c, K, 48, 48)
    assert make_scene(3, moving=False).moving_ids == []
    assert torch.equal(still["frames"][0], still["frames"][-1])
    assert torch.equal(still["depth"][0], still["depth"][-1])


def test_motion_kinds_stay_bounded():
    t = torch.arange(0, 200, dtype=torch.float64)
    lin = Motion("linear", (1.0, 0.0, 0.0), span=10.0)
    w = lin.weight(t)
    assert w[0] == 0 and w[10] == 1 and w[20] == 0 and w[5] == 0.5 and (w >= 0).all() and (w <= 1).all()
    assert (Motion("bounce", (0, -1.0, 0), span=7.0).weight(t) >= 0).all()
    assert Motion("bob", (0, 1.0, 0), span=8.0).weight(t).abs().max() <= 1.0


def test_spinning_sphere_changes_colour_not_depth():
    sphere = Sphere(center=(0.0, 0.0, 3.0), radius=0.8,
                    texture=Texture("stripes", (1, 0, 0), (0, 0, 1), (0.1, 0.1, 0.1), (1.0, 0.0, 0.0)),
                    motion=Motion(spin=0.2))
    scene = _room(sphere)
    K = default_intrinsics(32, 32)
    a, b = raycast(scene, 0, EYE, K, 32, 32), raycast(scene, 1, EYE, K, 32, 32)
    assert torch.equal(a.depth_z, b.depth_z)
    assert (a.color != b.color).any(-1)[a.object_id == 2].float().mean() > 0.3


def test_supersampling_antialiases_colour_only():
    scene = make_scene(4)
    K = default_intrinsics(32, 40)
    one = raycast(scene, 2, EYE, K, 32, 40)
    three = raycast(scene, 2, EYE, K, 32, 40, supersample=3)
    two = raycast(scene, 2, EYE, K, 32, 40, supersample=2)
    for other in (two, three):
        assert torch.equal(one.depth_z, other.depth_z) and torch.equal(one.object_id, other.object_id)
        assert torch.equal(one.points, other.points)
        assert not torch.equal(one.color, other.color)
        assert (one.color.float() - other.color.float()).abs().mean() < 30


def test_ground_truth_matches_single_views():
    scene = make_scene(5)
    H, W, T = 24, 32, 4
    K = default_intrinsics(H, W)
    traj = make_trajectory("30", T, 3.0)
    gt = ground_truth_for_trajectory(scene, traj.w2c, K, H, W)
    for t in range(T):
        src = raycast(scene, t, EYE, K, H, W)
        tgt = raycast(scene, t, traj.w2c[t], K, H, W)
        assert torch.equal(gt["source"]["frames"][t], src.color)
        assert torch.equal(gt["source"]["depth"][t], src.depth_z)
        assert torch.equal(gt["target"]["frames"][t], tgt.color)
        assert torch.equal(gt["target"]["depth"][t], tgt.depth_z)
    assert 0.2 < gt["observable"][-1].float().mean() < 1.0
