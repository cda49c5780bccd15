"""Tracking masks from point tracks: analytic rigid motions, invisible points, the ``<stem>.tracks.npz`` file
through ``ex4d prepare --tracker tracks``, and the in-process tracker hook."""

import json
import sys
from dataclasses import replace

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.ndimage import shift as nd_shift

from ex4d.cli import main
from ex4d.errors import InputError
from ex4d.io.video import save_video
from ex4d.train import masks
from ex4d.train.pairs import PairSettings, build_pairs
from ex4d.train.tracks import load_tracks_file, tracks_mask


def _rigid(points0: np.ndarray, T: int, angle: float, shift: tuple[float, float], centre) -> np.ndarray:
    """(T, N, 2): frame-0 points rotated by ``angle * t`` about ``centre`` and moved by ``shift * t``."""
    out = []
    for t in range(T):
        c, s = np.cos(angle * t), np.sin(angle * t)
        R = np.array([[c, -s], [s, c]])
        out.append((points0 - centre) @ R.T + centre + np.asarray(shift) * t)
    return np.stack(out)


def _disc_under_rigid(H, W, t, angle, shift, centre, disc_centre, radius):
    """Ground truth: pixels of frame t whose frame-0 origin (the inverse motion of their centre) is in the disc."""
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    x = np.stack([u, v], -1) - centre - np.asarray(shift) * t
    c, s = np.cos(angle * t), np.sin(angle * t)
    origin = x @ np.array([[c, -s], [s, c]]) + centre  # R^T x, row-vector form
    return ((origin - disc_centre) ** 2).sum(-1) <= radius ** 2


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


H, W, T = 48, 64, 10
ANGLE, SHIFT, CENTRE = 0.06, (1.2, -0.7), np.array([30.0, 26.0])
DISC, RADIUS = np.array([34.0, 22.0]), 9.0


def _grid_points(rng, step=4.0):
    """Jittered grid over the image (tracker-style query points), (N, 2) in pixel-centre coordinates."""
    u, v = np.meshgrid(np.arange(2, W, step), np.arange(2, H, step))
    return np.stack([u.ravel(), v.ravel()], -1) + rng.uniform(-1, 1, (u.size, 2))


def _truth(t):
    return _disc_under_rigid(H, W, t, ANGLE, SHIFT, CENTRE, DISC, RADIUS)


def test_hole_follows_a_known_rotation_and_translation():
    tracks = _rigid(_grid_points(np.random.default_rng(0)), T, ANGLE, SHIFT, CENTRE)
    keep = tracks_mask((T, H, W), _truth(0), tracks, np.ones(tracks.shape[:2], bool))
    assert keep.shape == (T, H, W) and keep.dtype == bool
    assert keep[0].all()  # frame 0 is the source view: nothing hidden, as the flow path
    for t in range(1, T):
        assert _iou(~keep[t], _truth(t)) > 0.9, t
    # Discriminating: a hole that stayed put would be far off by the last frame.
    assert _iou(_truth(0), _truth(T - 1)) < 0.5


def test_invisible_points_are_ignored():
    rng = np.random.default_rng(1)
    tracks = _rigid(_grid_points(rng), T, ANGLE, SHIFT, CENTRE)
    visible = rng.uniform(size=tracks.shape[:2]) > 0.4  # 40 % hidden in every frame, frame 0 included
    garbage = tracks.copy()
    garbage[~visible] = rng.uniform(-50, 120, (int((~visible).sum()), 2))  # where a tracker guesses wildly
    garbage[~visible & (rng.uniform(size=visible.shape) < 0.2)] = np.nan
    keep = tracks_mask((T, H, W), _truth(0), garbage, visible)
    # Only visible positions are read: the garbage changes nothing ...
    assert (keep == tracks_mask((T, H, W), _truth(0), tracks, visible)).all()
    for t in range(1, T):  # ... and the surviving 36 % of the points still carry the hole
        assert _iou(~keep[t], _truth(t)) > 0.9, t
    # All points visible would have been the same motion; all hidden at one frame keeps the previous frame's hole.
    visible[5] = False
    keep = tracks_mask((T, H, W), _truth(0), tracks, visible)
    assert (keep[5] == keep[4]).all() and _iou(~keep[6], _truth(6)) > 0.9


def test_few_tracks_translate_the_hole_exactly():
    """One or two points: the anchors around the image take their displacement, so the hole moves as a whole."""
    hole = np.zeros((H, W), bool)
    hole[10:20, 5:15] = True
    for points0 in (np.array([[20.5, 12.5]]), np.array([[20.5, 12.5], [40.5, 30.5]])):
        tracks = np.stack([points0 + [3 * t, 2 * t] for t in range(3)])
        keep = tracks_mask((3, H, W), hole, tracks, np.ones(tracks.shape[:2], bool))
        expected = np.zeros((H, W), bool)
        expected[14:24, 11:21] = True
        assert (~keep[2] == expected).all()


def test_rasterised_interpolation_equals_scipys():
    """The NumPy rasteriser against scipy's LinearNDInterpolator on the same triangulation (small chunks too)."""
    from scipy.interpolate import LinearNDInterpolator
    from scipy.spatial import Delaunay

    from ex4d.train.tracks import _rasterise_linear

    rng = np.random.default_rng(3)
    points = np.concatenate([rng.uniform(-4, W + 4, (150, 2)), [[-2, -2], [W + 2, -2], [W + 2, H + 2], [-2, H + 2]]])
    values = rng.normal(size=(len(points), 2))
    tri = Delaunay(points)
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    expected = LinearNDInterpolator(tri, values)(np.stack([u.ravel(), v.ravel()], -1))
    for chunk in (1 << 21, 97):
        field = _rasterise_linear(points, values, tri.simplices, H, W, chunk=chunk)
        assert np.allclose(field, expected, atol=1e-9)  # NaN nowhere: the corners' hull covers the image


def test_tracks_agree_with_optical_flow_on_a_moving_texture():
    """Two independent paths, the same motion: Farnebäck flow on the pixels vs analytic tracks."""
    pytest.importorskip("cv2")
    rng = np.random.default_rng(2)
    (du, dv), n = (1.5, -0.75), 8
    canvas = gaussian_filter(rng.uniform(0, 255, (H + 40, W + 40, 3)), (2, 2, 0))
    canvas = (canvas - canvas.min()) / np.ptp(canvas) * 255
    frames = np.stack([np.clip(nd_shift(canvas, (dv * t, du * t, 0), order=1)[20:20 + H, 20:20 + W], 0, 255)
                       for t in range(n)]).astype(np.uint8)
    tracks = _rigid(_grid_points(rng), n, 0.0, (du, dv), CENTRE)
    hole = _truth(0)
    by_tracks = tracks_mask((n, H, W), hole, tracks, np.ones(tracks.shape[:2], bool))
    by_flow = masks.tracking_mask(frames, hole)
    for t in range(1, n):
        assert _iou(~by_tracks[t], ~by_flow[t]) > 0.85, t
    assert _iou(hole, ~by_tracks[-1]) < 0.5


def test_tracks_file_size_sets_the_scale(tmp_path):
    """Coordinates are scaled from the file's ``size`` (else the video's) to the working size: corners to corners."""
    tracks = np.array([[[0.0, 0.0], [100.0, 50.0], [50.0, 25.0]]] * 3)
    np.savez(tmp_path / "c.tracks.npz", tracks=tracks, visible=np.ones((3, 3), bool), size=np.array([50, 100]))
    scaled, visible = load_tracks_file(tmp_path / "c.tracks.npz", 2, (H, W), (999, 999))
    assert scaled.shape == (2, 3, 2) and visible.all()
    assert np.allclose(scaled[0], [[0, 0], [W, H], [W / 2, H / 2]])
    np.savez(tmp_path / "c.tracks.npz", tracks=tracks, visible=np.ones((3, 3), bool))  # no size: the video's
    assert np.allclose(load_tracks_file(tmp_path / "c.tracks.npz", 2, (H, W), (50, 100))[0], scaled)


def test_bad_shapes_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="tracks must be"):
        tracks_mask((T, H, W), _truth(0), np.zeros((T, 5)), np.ones((T, 5), bool))
    with pytest.raises(InputError, match="cover 3 frames"):
        tracks_mask((T, H, W), _truth(0), np.zeros((3, 5, 2)), np.ones((3, 5), bool))
    np.savez(tmp_path / "a.tracks.npz", tracks=np.zeros((4, 5, 2)))
    with pytest.raises(InputError, match="missing visible"):
        load_tracks_file(tmp_path / "a.tracks.npz", 4, (H, W), (H, W))
    np.savez(tmp_path / "a.tracks.npz", tracks=np.zeros((4, 5, 2)), visible=np.ones((4, 5), bool))
    with pytest.raises(InputError, match="cover 4 frames, need 6"):
        load_tracks_file(tmp_path / "a.tracks.npz", 6, (H, W), (H, W))


# ------------------------------------------------------------------------------------------------------------
# ex4d prepare --tracker tracks / PairSettings(tracker=callable)
# ------------------------------------------------------------------------------------------------------------

CT, CH, CW, SRC = 8, 32, 32, 64  # working clip 8×32×32 from 64×64 source videos
DU, DV = 1.5, -1.0  # source pixels per frame


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """``moving.mp4`` (a texture translating by (DU, DV) px a frame) with its analytic ``moving.tracks.npz``
    (64×64 source pixels, a point invisible once it leaves the frame), and ``untracked.mp4`` without one."""
    folder = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    canvas = gaussian_filter(rng.uniform(0, 255, (SRC + 40, SRC + 40, 3)), (2, 2, 0))
    canvas = (canvas - canvas.min()) / np.ptp(canvas) * 255
    frames = np.stack([np.clip(nd_shift(canvas, (DV * t, DU * t, 0), order=1)[20:20 + SRC, 20:20 + SRC], 0, 255)
                       for t in range(CT + 2)]).astype(np.uint8)
    save_video(folder / "moving.mp4", frames, fps=10)
    save_video(folder / "untracked.mp4", frames, fps=10)
    u, v = np.meshgrid(np.arange(1, SRC, 5.0), np.arange(1, SRC, 5.0))
    p0 = np.stack([u.ravel(), v.ravel()], -1)
    tracks = np.stack([p0 + [DU * t, DV * t] for t in range(CT + 2)]).astype(np.float32)  # 2 frames to spare
    visible = ((tracks >= 0) & (tracks <= SRC)).all(-1)
    np.savez(folder / "moving.tracks.npz", tracks=tracks, visible=visible)
    return folder


@pytest.fixture
def holes(monkeypatch):
    """Record the random holes the pair builder draws (it imports ``random_hole`` when it runs)."""
    drawn = []
    real = masks.random_hole

    def recording(*args, **kwargs):
        drawn.append(real(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(masks, "random_hole", recording)
    return drawn


def _args(videos, out):
    return ["prepare", "--videos", str(videos), "--output-dir", str(out), "--num-frames", str(CT), "--height",
            str(CH), "--width", str(CW), "--mask-kinds", "track", "--quiet", "--depth-backend", "file"]


def _moved_hole(hole, t, scale=CW / SRC):
    """The hole translated by t frames of motion in working pixels (rounded to whole pixels)."""
    u, v = np.meshgrid(np.arange(CW) + 0.5, np.arange(CH) + 0.5)
    x0, y0 = u - DU * scale * t, v - DV * scale * t
    inside = (x0 >= 0) & (x0 < CW) & (y0 >= 0) & (y0 < CH)
    return inside & hole[np.clip(y0, 0, CH - 1).astype(int), np.clip(x0, 0, CW - 1).astype(int)]


def test_cli_tracks_file_gives_the_tracks_mask(videos, tmp_path, holes, capsys):
    only = tmp_path / "only"
    only.mkdir()
    for name in ("moving.mp4", "moving.tracks.npz"):
        (only / name).write_bytes((videos / name).read_bytes())
    assert main([*_args(only, tmp_path / "data"), "--tracker", "tracks"]) == 0
    assert "1 clips prepared" in capsys.readouterr().out
    with np.load(tmp_path / "data" / "moving" / "pair.npz") as data:
        mask = data["mask"]
    (hole,) = holes
    with np.load(videos / "moving.tracks.npz") as data:  # the first CT frames, scaled from 64² to 32²
        expected = tracks_mask((CT, CH, CW), hole, data["tracks"][:CT] * CW / SRC, data["visible"][:CT])
    assert (mask == expected).all()
    assert mask[0].all() and not mask[1:].all()
    for t in range(1, CT):  # and it is the known motion, not just the same code run twice
        assert _iou(~mask[t], _moved_hole(hole, t)) > 0.8, t
    meta = json.loads((tmp_path / "data" / "moving" / "meta.json").read_text())
    assert meta["hole"]["tracker"] == "file:moving.tracks.npz" and meta["settings"]["tracker"] == "tracks"


def test_cli_clip_without_tracks_file_fails_alone(videos, tmp_path, capsys):
    assert main([*_args(videos, tmp_path), "--tracker", "tracks"]) == 1
    captured = capsys.readouterr()
    assert "ex4d prepare: untracked: no tracks file untracked.tracks.npz beside untracked.mp4" in captured.err
    assert "1 clips prepared, 0 already there, 1 failed" in captured.out
    assert [json.loads(x)["clip"] for x in (tmp_path / "index.jsonl").read_text().splitlines()] == ["moving"]
    # The default (optical flow) needs no tracks file and leaves existing flow pairs' settings unchanged.
    assert main(_args(videos, tmp_path)) == 0
    meta = json.loads((tmp_path / "untracked" / "meta.json").read_text())
    assert "tracker" not in meta["settings"] and meta["hole"]["tracker"] == "flow"


class _AnalyticTracker:
    """A stand-in for a learned tracker: the known motion, in working pixels; records what it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, frames):
        self.calls.append(frames)
        T = len(frames)
        u, v = np.meshgrid(np.arange(0.5, CW, 2.0), np.arange(0.5, CH, 2.0))
        p0 = np.stack([u.ravel(), v.ravel()], -1)
        tracks = np.stack([p0 + [DU * CW / SRC * t, DV * CH / SRC * t] for t in range(T)])
        return tracks, np.ones(tracks.shape[:2], bool)


def test_tracker_callable_is_used_without_opencv(videos, tmp_path, holes, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # the tracks path needs no OpenCV
    tracker = _AnalyticTracker()
    settings = PairSettings(num_frames=CT, height=CH, width=CW, mask_kinds=(("track", 1.0),), tracker=tracker)
    result = build_pairs(videos, tmp_path, settings, progress=False)
    assert result.names("done") == ["moving", "untracked"] and not result.failed
    assert len(tracker.calls) == 2 and all(f.shape == (CT, CH, CW, 3) and f.dtype == np.uint8
                                           for f in tracker.calls)
    for name, frames, hole in zip(("moving", "untracked"), tracker.calls, holes):
        with np.load(tmp_path / name / "pair.npz") as data:
            mask = data["mask"]
        assert (mask == tracks_mask((CT, CH, CW), hole, *tracker(frames))).all()
        for t in range(1, CT):
            assert _iou(~mask[t], _moved_hole(hole, t)) > 0.8, t
        meta = json.loads((tmp_path / name / "meta.json").read_text())
        name = meta["hole"]["tracker"]
        assert name == meta["settings"]["tracker"] and name.startswith("callable:")
        assert name.endswith("test_tracks._AnalyticTracker")
    # Resume compares the tracker's name, not the object: a new instance skips the finished clips.
    assert build_pairs(videos, tmp_path, replace(settings, tracker=_AnalyticTracker()),
                       progress=False).names("skipped") == ["moving", "untracked"]


def test_bad_tracker_settings(videos, tmp_path):
    base = dict(num_frames=CT, height=CH, width=CW, mask_kinds=(("track", 1.0),))
    with pytest.raises(InputError, match="tracker must be one of flow, tracks"):
        build_pairs(videos, tmp_path, PairSettings(**base, tracker="cotracker"), progress=False)
    # Workers get the settings by pickling: a lambda cannot travel, and each clip says so.
    spread = build_pairs(videos, tmp_path, PairSettings(**base, tracker=lambda f: None), workers=2, progress=False)
    assert set(spread.failed) == {"moving", "untracked"} and "pickle" in spread.failed["moving"].lower()
    # A tracker returning the wrong layout fails its clips with a reason, not the batch.
    bad = build_pairs(videos, tmp_path, PairSettings(**base, tracker=lambda f: (np.zeros((3, 4)), None)),
                      progress=False)
    assert set(bad.failed) == {"moving", "untracked"} and "tracks must be (T, N, 2)" in bad.failed["moving"]
