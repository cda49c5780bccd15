from pathlib import Path

import numpy as np
import pytest

from ex4d.errors import InputError
from ex4d.geometry.conventions import w2c_to_reference
from ex4d.geometry.trajectory import available_presets, look_at, make_trajectory, reference_radius

FLOWER = Path(__file__).resolve().parents[3] / "shared" / "examples" / "flower" / "camera_180.npz"


def centres(w2c):
    return -np.einsum("tji,tj->ti", w2c[:, :3, :3], w2c[:, :3, 3])


def forward(w2c):
    return w2c[:, 2, :3]


def yaw_deg(w2c):
    f = forward(w2c)
    return np.degrees(np.arctan2(-f[:, 0], f[:, 2]))


@pytest.mark.skipif(not FLOWER.exists(), reason="shared example not available")
def test_reproduces_the_flower_cameras():
    ref = np.load(FLOWER)["extrinsics"]
    ours = w2c_to_reference(make_trajectory("180", 49, 2.7401).w2c)
    assert np.abs(ours - ref).max() < 1e-5


def test_spec_test_vector_frame_12():
    w = w2c_to_reference(make_trajectory("180", 49, 2.7401).w2c)[12]
    expected = [[0.70711, 0, 0.70711, -1.93755], [-0.09901, -0.99015, 0.09901, -0.27131],
                [0.70014, -0.14003, -0.70014, -1.99520]]
    assert np.allclose(w[:3], expected, atol=1e-4)


@pytest.mark.parametrize("spec", available_presets() + ["-45", "orbit:angle=-120,elevation=20", "spiral:turns=3"])
def test_every_preset_starts_at_source_and_is_rigid(spec):
    t = make_trajectory(spec, 25, 3.0)
    assert len(t) == 25 and t.starts_at_source()
    rot = t.w2c[:, :3, :3]
    assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(rot), 1.0)
    # Smooth: no jump between consecutive cameras larger than a few times the mean step.
    steps = np.linalg.norm(np.diff(t.w2c, axis=0).reshape(24, -1), axis=1)
    assert steps.max() <= 4 * steps.mean() + 1e-9


@pytest.mark.parametrize("angle", [30, 60, 90, -60])
def test_integer_preset_reaches_its_yaw_looking_at_the_pivot(angle):
    r = 2.5
    t = make_trajectory(str(angle), 49, r)
    assert yaw_deg(t.w2c)[-1] == pytest.approx(angle, abs=1e-6)
    c, f = centres(t.w2c), forward(t.w2c)
    # The optical axis passes through the pivot (0, 0, r).
    to_pivot = np.array([0, 0, r]) - c[1:]
    assert np.allclose(np.cross(to_pivot, f[1:]), 0, atol=1e-9)
    # The camera rises (world y is down) by 0.2 r (1 - |cos a|).
    assert c[-1, 1] == pytest.approx(0.2 * r * (abs(np.cos(np.radians(angle))) - 1))


def test_180_is_a_45_degree_sweep_in_the_image_plane_and_180_outer_a_90_degree_orbit():
    sweep = make_trajectory("180", 49, 3.0).w2c
    outer = make_trajectory("180_outer", 49, 3.0).w2c
    assert np.allclose(centres(sweep)[:, 2], 0, atol=1e-12)
    assert yaw_deg(sweep)[12] == pytest.approx(45) and yaw_deg(sweep)[36] == pytest.approx(-45)
    assert np.abs(yaw_deg(sweep)).max() == pytest.approx(45)
    assert yaw_deg(outer)[12] == pytest.approx(90) and yaw_deg(outer)[36] == pytest.approx(-90)
    assert np.allclose(sweep[-1], np.eye(4), atol=1e-9) and np.allclose(outer[-1], np.eye(4), atol=1e-9)


def test_reference_rounds_quirk_only_when_asked():
    plain = make_trajectory("90", 98, 2.0)
    quirky = make_trajectory("90", 98, 2.0, reference_rounds=True)
    assert yaw_deg(plain.w2c)[-1] == pytest.approx(90)
    # 98 frames -> rounds = 2 -> the reference doubles the sweep (its yaw folds back through |cos|).
    assert not np.allclose(quirky.w2c, plain.w2c)
    assert np.allclose(make_trajectory("90", 49, 2.0, reference_rounds=True).w2c, make_trajectory("90", 49, 2.0).w2c)


def test_our_presets_behave_as_documented():
    r = 4.0
    orbit = make_trajectory("orbit:angle=120", 31, r).w2c
    assert np.allclose(np.linalg.norm(centres(orbit) - [0, 0, r], axis=1), r)
    assert yaw_deg(orbit)[-1] == pytest.approx(120)
    zin, zout = make_trajectory("zoom_in", 11, r).w2c, make_trajectory("zoom_out", 11, r).w2c
    assert np.allclose(centres(zin)[-1], [0, 0, 0.5 * r]) and np.allclose(centres(zout)[-1], [0, 0, -0.5 * r])
    assert np.allclose(zin[:, :3, :3], np.eye(3))
    assert np.allclose(centres(make_trajectory("dolly:distance=1.5", 11, r).w2c)[-1], [0, 0, 1.5])
    pan = make_trajectory("pan:angle=30", 11, r).w2c
    assert np.allclose(centres(pan), 0, atol=1e-12)
    assert forward(pan)[-1] == pytest.approx([np.sin(np.radians(30)), 0, np.cos(np.radians(30))])
    tilt = make_trajectory("tilt:angle=10", 11, r).w2c
    assert forward(tilt)[-1][1] == pytest.approx(-np.sin(np.radians(10)))  # looks up (world y is down)
    spiral = make_trajectory("spiral:angle=15,turns=2", 41, r).w2c
    f = forward(spiral)[-1]
    assert np.degrees(np.arccos(f[2])) == pytest.approx(15)


def test_reference_radius_uses_the_border_rule():
    depth = np.full((6, 6), 7.0)
    depth[2, 3] = 3.0
    depth[0, 0] = 0.5  # on the border: replaced by 100, so ignored
    assert reference_radius(depth) == pytest.approx(3.15)
    assert reference_radius(np.full((6, 6), 500.0)) == pytest.approx(100.15)


@pytest.mark.parametrize("spec", ["45deg", "orbit:angle", "orbit:speed=3", "orbit:angle=abc", "", "180:angle=3",
                                  "90:frames=0", "90:frames=2.5", "orbit:frames=x", "90:frames=3,frames=4"])
def test_bad_presets_raise_input_error(spec):
    with pytest.raises(InputError):
        make_trajectory(spec, 10, 1.0)


def test_look_at_identity():
    assert np.allclose(look_at(np.zeros(3), np.array([0, 0, 5.0])), np.eye(4))


@pytest.mark.parametrize("spec", ["90", "-30", "180", "180_outer", "orbit:angle=120,elevation=10", "spiral", "dolly",
                                  "zoom_out", "pan", "tilt"])
def test_every_preset_spans_a_long_clip_and_frames_n_completes_then_holds(spec):
    """A 241-frame clip: the path ends where the 49-frame path ends (same end pose), sampled 5x more densely;
    ``frames=49`` gives exactly the 49-frame path and then holds its last pose for the remaining frames."""
    short, long = make_trajectory(spec, 49, 2.0).w2c, make_trajectory(spec, 241, 2.0).w2c
    assert long.shape == (241, 4, 4)
    np.testing.assert_allclose(long[-1], short[-1], atol=1e-9)
    np.testing.assert_allclose(long[::5], short, atol=1e-9)  # 240 = 5 * 48 intervals: the same samples
    name = spec.partition(":")[0]
    sep = "," if ":" in spec else ":"
    held = make_trajectory(spec + sep + "frames=49", 241, 2.0)
    assert held.name == name
    np.testing.assert_allclose(held.w2c[:49], short, atol=1e-12)
    np.testing.assert_allclose(held.w2c[49:], np.repeat(short[-1:], 192, axis=0), atol=1e-12)
    # N beyond the clip's length: the path completes over the clip itself
    np.testing.assert_allclose(make_trajectory(spec + sep + "frames=500", 241, 2.0).w2c, long, atol=1e-12)
