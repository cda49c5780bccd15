"""Smooth camera paths through keyframes: positions on a cubic spline, rotations on a C2 spline on SO(3)."""

from __future__ import annotations

import numpy as np


def interpolate_keyframes(times: np.ndarray, c2w: np.ndarray, num_frames: int) -> np.ndarray:
    """Interpolate camera-to-world keyframes to ``num_frames`` evenly spaced frames.

    Camera centres follow a cubic spline (linear for two keyframes); orientations follow scipy's
    ``RotationSpline`` (continuous angular velocity and acceleration), so the path has no kinks at keyframes.

    Args:
        times: (K,) strictly increasing keyframe times in [0, 1]; output frame i sits at time i / (T - 1).
        c2w: (K, 4, 4) rigid camera-to-world matrices at those times.
        num_frames: T.

    Returns:
        w2c: (T, 4, 4) float64 world-to-camera matrices; keyframes are reproduced exactly at their times.
    """
    from scipy.interpolate import CubicSpline
    from scipy.spatial.transform import Rotation, RotationSpline

    times = np.asarray(times, np.float64)
    query = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    # Outside the keyframes' time span the camera holds its first/last keyframe.
    query = np.clip(query, times[0], times[-1])
    rotations = Rotation.from_matrix(c2w[:, :3, :3])
    if len(times) == 1:
        rot = np.repeat(c2w[None, 0, :3, :3], num_frames, axis=0)
        centre = np.repeat(c2w[None, 0, :3, 3], num_frames, axis=0)
    else:
        rot = RotationSpline(times, rotations)(query).as_matrix()
        centre = CubicSpline(times, c2w[:, :3, 3], axis=0)(query)
    w2c = np.zeros((num_frames, 4, 4))
    w2c[:, :3, :3] = rot.transpose(0, 2, 1)
    w2c[:, :3, 3] = -np.einsum("tij,tj->ti", w2c[:, :3, :3], centre)
    w2c[:, 3, 3] = 1.0
    return w2c
