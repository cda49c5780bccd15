"""Clips for the viewer's tests: the ground-truth synthetic scene seen from its source camera."""

import numpy as np
import pytest

from ex4d.data import default_intrinsics, make_scene, render_scene_video
from ex4d.view.source import CameraPath, ViewSource


def scene_clip(num_frames: int = 4, size: int = 256, seed: int = 0):
    """(frames (T,H,W,3) uint8, z-depth (T,H,W) float32, K (3,3) float32) of ex4d's ground-truth demo scene;
    rays that hit nothing get depth 1e4, as ``ex4d demo`` does."""
    scene = make_scene(seed, motion_frames=17)
    K = default_intrinsics(size, size).numpy()
    view = render_scene_video(scene, np.tile(np.eye(4), (num_frames, 1, 1)), K, size, size)
    depth = view["depth"].numpy()
    return view["frames"].numpy(), np.where(depth > 0, depth, 1e4).astype(np.float32), K


def make_source(frames, depth, K, paths: dict | None = None) -> ViewSource:
    T = len(depth)
    source = ViewSource(frames, depth, np.repeat(K[None], T, 0).astype(np.float32), 15.0, title="scene")
    for name, w2c in (paths or {}).items():
        source.paths[name] = CameraPath(name, np.asarray(w2c, np.float64), source.K.copy())
    return source


@pytest.fixture(scope="module")
def small_scene():
    return scene_clip(num_frames=5, size=48)
