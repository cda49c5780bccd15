import numpy as np
import torch

from ex4d.geometry.conventions import (
    invert_rigid, pixel_grid, project_points, reference_intrinsics, reference_to_w2c, scale_intrinsics,
    transform_points, unproject_depth, w2c_to_reference,
)
from ex4d.geometry.trajectory import look_at


def test_reference_intrinsics_match_spec():
    K = reference_intrinsics(576, 1024)
    assert K.tolist() == [[500.0, 0.0, 512.0], [0.0, 500.0, 288.0], [0.0, 0.0, 1.0]]


def test_unproject_then_project_lands_on_pixel_centres():
    depth = torch.rand(2, 5, 7) * 10 + 1
    K = reference_intrinsics(5, 7)
    points = unproject_depth(depth, K)
    assert torch.allclose(points[..., 2], depth)
    uv = project_points(points, K)
    u, v = pixel_grid(5, 7)
    assert torch.allclose(uv[..., 0], u.expand(2, -1, -1), atol=1e-4)
    assert torch.allclose(uv[..., 1], v.expand(2, -1, -1), atol=1e-4)
    assert u[0, 0] == 0.5 and v[4, 6] == 4.5


def test_image_axes_are_opencv():
    K = reference_intrinsics(100, 100)
    # A point right of and below the optical axis lands right of and below the image centre.
    uv = project_points(torch.tensor([[1.0, 1.0, 10.0]]), K)[0]
    assert uv[0] > 50 and uv[1] > 50


def test_reference_extrinsics_flip_is_an_involution():
    w2c = look_at(np.array([1.0, -0.5, 0.2]), np.array([0.0, 0.0, 3.0]))
    ref = w2c_to_reference(w2c)
    assert np.allclose(reference_to_w2c(ref), w2c)
    assert np.allclose(w2c_to_reference(np.eye(4)), np.diag([1.0, -1.0, -1.0, 1.0]))
    # The reference's saved matrix is an OpenGL camera: the look direction is its -z axis.
    forward = ref[2, :3]
    assert np.allclose(-forward, (np.array([0, 0, 3.0]) - [1.0, -0.5, 0.2]) / np.linalg.norm([-1, 0.5, 2.8]))
    assert torch.allclose(w2c_to_reference(torch.eye(4)), torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0])))


def test_invert_rigid_and_transform_points():
    w2c = torch.from_numpy(look_at(np.array([0.3, 0.1, -1.0]), np.array([0.0, 0.5, 4.0]))).float()
    c2w = invert_rigid(w2c)
    assert torch.allclose(c2w @ w2c, torch.eye(4), atol=1e-6)
    pts = torch.randn(10, 3)
    assert torch.allclose(transform_points(c2w, transform_points(w2c, pts)), pts, atol=1e-5)


def test_scale_intrinsics_under_pixel_centre_convention():
    K = reference_intrinsics(10, 20)
    K2 = scale_intrinsics(K, 2.0, 3.0)
    p = torch.tensor([[0.7, -0.2, 4.0]])
    uv, uv2 = project_points(p, K)[0], project_points(p, K2)[0]
    # Continuous coordinates scale with the image when pixel edges map to pixel edges.
    assert torch.allclose(uv2, uv * torch.tensor([2.0, 3.0]), atol=1e-5)
