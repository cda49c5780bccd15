"""Trajectory pictures: cameras and points land where the view's definition puts them; PNGs decode exactly."""

import av
import numpy as np

from ex4d.io.trajectory_plot import (
    CAMERA_COLOR,
    FIRST_CAMERA_COLOR,
    PATH_COLOR,
    SIDE,
    TOP,
    encode_png,
    panel_origin,
    render_panel,
    save_trajectory_plot,
    scene_bounds,
    trajectory_image,
)

# x in [-1, 1], y in [-1, 1], z in [0, 4]; a 200-px panel with 10-px margins: 180 px for the largest extent
# (4 units), so 45 px per unit, and the box centre (0, 0, 2) at the panel centre (100, 100).
BOUNDS = np.array([[-1.0, 1.0], [-1.0, 1.0], [0.0, 4.0]])
SIZE, MARGIN, SCALE = 200, 10, 45.0


def cameras_at(*centres):
    """w2c of cameras looking along +z (no rotation) whose centres are ``centres``."""
    w2c = np.repeat(np.eye(4)[None], len(centres), 0)
    w2c[:, :3, 3] = -np.asarray(centres, float)
    return w2c


def decode_png(data: bytes, tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def is_color(pixel, color):
    return tuple(int(c) for c in pixel) == tuple(color)


def test_cameras_land_where_the_views_put_them():
    w2c = cameras_at((1.0, 0.0, 2.0), (-1.0, 1.0, 0.0))
    top = render_panel(TOP, w2c, np.zeros((0, 3)), None, BOUNDS, SIZE, MARGIN)
    side = render_panel(SIDE, w2c, np.zeros((0, 3)), None, BOUNDS, SIZE, MARGIN)
    # Top view: u = 100 + 45·x, v = 100 − 45·(z − 2) (forward is up). Frame 0 at x=1, z=2 -> (row 100, col 145).
    assert is_color(top[100, 145], FIRST_CAMERA_COLOR)
    # The path to frame 1 (x=−1, z=0 -> row 190, col 55) passes through its midpoint, row 145, col 100.
    assert is_color(top[145, 100], PATH_COLOR)
    # Side view: u = 100 + 45·(z − 2), v = 100 + 45·y (y down stays down). Frame 0 -> (100, 100); frame 1 at
    # y=1, z=0 -> (145, 10); the path's midpoint -> (122.5, 55).
    assert is_color(side[100, 100], FIRST_CAMERA_COLOR)
    assert is_color(side[122, 55], PATH_COLOR)
    # Frame 0 looks along +z: its frustum lies above its centre in the top view (forward = up), never below
    # (the marker disk has radius 4).
    red = np.argwhere((top == FIRST_CAMERA_COLOR).all(-1))
    assert (red[:, 0] < 90).any() and not (red[:, 0] > 105).any()
    # Frame 1's frustum is drawn in the camera colour around its centre.
    assert (top[170:190, 40:70] == CAMERA_COLOR).all(-1).any()


def test_points_are_drawn_dimmed_at_their_position():
    w2c = cameras_at((0.0, 0.0, 0.0))
    points = np.array([[0.5, 0.0, 3.0]])
    top = render_panel(TOP, w2c, points, np.array([[200, 100, 0]], np.uint8), BOUNDS, SIZE, MARGIN)
    # u = 100 + 22.5 = 122.5, v = 100 − 45 = 55: pixel (55, 122), drawn as a 2×2 dot, colour · 0.7 + 20.
    for r, c in ((55, 122), (55, 123), (56, 122), (56, 123)):
        assert is_color(top[r, c], (160, 90, 20))
    assert (top != top[0, 0]).any(-1).sum() < 200  # nothing else but the dot, frame 0's marker and frustum


def test_full_picture_holds_both_panels_and_a_title():
    w2c = cameras_at((0.0, 0.0, 0.0), (1.0, -0.5, 1.0), (2.0, -1.0, 3.0))
    rng = np.random.default_rng(0)
    points = rng.uniform([-1, -1, 3], [1, 1, 4], (500, 3))
    colors = rng.integers(0, 256, (500, 3)).astype(np.uint8)
    image = trajectory_image(w2c, points, colors, size=SIZE, bounds=BOUNDS, title="CAM 90")
    assert image.shape == (48 + SIZE, 2 * SIZE + 8, 3)
    for index, view in enumerate((TOP, SIDE)):
        row, col = panel_origin(index, SIZE, title=True)
        panel = render_panel(view, w2c, points, colors, BOUNDS, SIZE)
        assert np.array_equal(image[row:row + SIZE, col:col + SIZE], panel)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 100  # points, path, frusta and captions


def test_bounds_hold_the_cameras_and_ignore_far_outliers():
    rng = np.random.default_rng(1)
    points = np.concatenate([rng.uniform(-1, 1, (1000, 3)), [[1e6, 0, 0]]])
    centres = np.array([[0.0, 0.0, 0.0], [5.0, -2.0, 1.0]])
    bounds = scene_bounds(points, centres)
    assert (bounds[:, 0] <= centres.min(0)).all() and (bounds[:, 1] >= centres.max(0)).all()
    assert bounds[0, 1] < 10  # the outlier at x = 1e6 does not squash the picture


def test_png_round_trips_exactly(tmp_path):
    image = np.random.default_rng(2).integers(0, 256, (37, 53, 3)).astype(np.uint8)
    assert np.array_equal(decode_png(encode_png(image), tmp_path), image)


def test_saved_plot_decodes_and_no_temporary_file_remains(tmp_path):
    w2c = cameras_at((0.0, 0.0, 0.0), (1.0, 0.0, 1.0))
    points = np.random.default_rng(3).uniform([-1, -1, 2], [1, 1, 3], (70000, 3))
    path = save_trajectory_plot(tmp_path / "t.png", w2c, points)  # more than max_points: subsampled
    with av.open(str(path)) as container:
        image = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert image.shape == (24 + 360, 2 * 360 + 8, 3)
    assert (image == FIRST_CAMERA_COLOR).all(-1).any() and (image == PATH_COLOR).all(-1).any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.png"]
