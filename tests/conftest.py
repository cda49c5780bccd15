"""Shared fixtures: a tiny wall-and-box scene as a video file plus its depth file."""

import numpy as np
import pytest

from ex4d.io.video import save_video


def wall_and_box(num_frames=9, height=64, width=64, wall=10.0, box=4.0, seed=0):
    """Frames (T,H,W,3) uint8 with smooth texture and depth (T,H,W): a box in front of a wall, moving right."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    depth = np.full((num_frames, height, width), wall, np.float32)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    base = np.stack([128 + 100 * np.sin(xx / 5.0), 128 + 100 * np.cos(yy / 7.0), 96 + 0 * xx], -1)
    for t in range(num_frames):
        x0 = width // 3 + t
        depth[t, height // 3: 2 * height // 3, x0: x0 + width // 3] = box
        frame = base.copy()
        frame[depth[t] == box] = [230, 60 + 10 * t, 40]
        frames[t] = np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)
    return frames, depth


@pytest.fixture
def tiny_inputs(tmp_path):
    """(video path, depth path, frames, depth) of the wall-and-box scene, 9 frames of 64×64."""
    frames, depth = wall_and_box()
    video = tmp_path / "in.mp4"
    save_video(video, frames, fps=12)
    depth_path = tmp_path / "depth.npz"
    np.savez(depth_path, depth=depth)
    return video, depth_path, frames, depth
