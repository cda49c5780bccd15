import json
from pathlib import Path

import numpy as np
import pytest

from ex4d.errors import InputError
from ex4d.geometry.trajectory import Trajectory, look_at, make_trajectory
from ex4d.io.trajectory_file import load_trajectory, save_trajectory

FLOWER = Path(__file__).resolve().parents[3] / "shared" / "examples" / "flower" / "camera_180.npz"


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_round_trip(tmp_path, suffix):
    t = make_trajectory("orbit:angle=70,elevation=5", 13, 2.0)
    K = np.array([[400.0, 0, 32], [0, 410.0, 24], [0, 0, 1]])
    path = save_trajectory(tmp_path / f"path{suffix}", t, K=K)
    back = load_trajectory(path, 13)
    tol = 1e-12 if suffix == ".json" else 1e-6
    assert np.allclose(back.w2c, t.w2c, atol=tol) and back.name == "path"
    assert np.allclose(back.K, np.repeat(K[None], 13, 0), atol=1e-4)


@pytest.mark.skipif(not FLOWER.exists(), reason="shared example not available")
def test_reads_the_reference_camera_file():
    t = load_trajectory(FLOWER, 49)
    assert np.abs(t.w2c - make_trajectory("180", 49, 2.7401).w2c).max() < 1e-5
    assert t.K[0, 0, 0] == 500 and t.name == "camera_180"


def test_keyframes_pass_through_keys_and_are_smooth(tmp_path):
    keys = [
        {"t": 0.0, "eye": [0, 0, 0], "look_at": [0, 0, 3]},
        {"frame": 10, "eye": [1.0, -0.3, 0.5], "look_at": [0, 0, 3]},
        {"t": 1.0, "w2c": look_at(np.array([-0.5, 0.0, 1.0]), np.array([0, 0, 3.0])).tolist()},
    ]
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keyframes": keys}))
    t = load_trajectory(path, 21)
    assert np.allclose(t.w2c[0], np.eye(4), atol=1e-9)
    assert np.allclose(t.w2c[10], look_at(np.array([1.0, -0.3, 0.5]), np.array([0, 0, 3.0])), atol=1e-9)
    assert np.allclose(t.w2c[20], json.loads(path.read_text())["keyframes"][2]["w2c"], atol=1e-9)
    centres = -np.einsum("tji,tj->ti", t.w2c[:, :3, :3], t.w2c[:, :3, 3])
    # Smooth across the middle keyframe: the acceleration there is in line with its neighbours' (a
    # piecewise-linear path would have zero acceleration everywhere but a spike at the keyframe).
    acc = np.linalg.norm(np.diff(centres, 2, axis=0), axis=1)
    assert acc[9] <= 1.2 * max(acc[8], acc[10])
    assert acc.min() > 0


def _write(tmp_path, name, content):
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    else:
        np.savez(path, **content)
    return path


@pytest.mark.parametrize("name, content, message", [
    ("a.json", "{not json", "cannot read"),
    ("a.json", [1, 2], "JSON object"),
    ("a.json", {"cams": []}, "no 'w2c'"),
    ("a.json", {"w2c": [[1, 2, 3]]}, "shape"),
    ("a.json", {"w2c": (np.ones((5, 4, 4))).tolist()}, "rigid"),
    ("a.npz", {"w2c": np.full((5, 4, 4), np.nan)}, "NaN"),
    ("a.npz", {"w2c": np.tile(np.eye(4), (4, 1, 1))}, "has 4 cameras"),
    ("a.npz", {"w2c": np.tile(np.eye(4), (5, 1, 1)), "K": np.eye(2)}, "'K'"),
    ("a.json", {"keyframes": [{"eye": [0, 0, 0], "look_at": [0, 0, 1]}]}, "time"),
    ("a.json", {"keyframes": [{"t": 0.5, "eye": [0, 0, 0]}]}, "needs 'eye'"),
    ("a.json", {"keyframes": [{"t": 0.5, "eye": [0, 0, 0], "look_at": [0, 0, 1]},
                              {"t": 0.2, "eye": [0, 0, 0], "look_at": [0, 0, 1]}]}, "increase"),
    ("a.txt", {}, ".npz or .json"),
])
def test_malformed_files_raise_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name if name.endswith(".txt") else _write(tmp_path, name, content)
    if name.endswith(".txt"):
        path.write_text("x")
    with pytest.raises(InputError, match=message):
        load_trajectory(path, 5)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_trajectory(tmp_path / "nope.json", 5)


def test_save_rejects_unknown_suffix(tmp_path):
    with pytest.raises(InputError):
        save_trajectory(tmp_path / "t.csv", Trajectory(np.tile(np.eye(4), (2, 1, 1))))
