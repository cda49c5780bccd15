"""Synthetic data with exact ground truth (analytic ray casting) for benchmarking the renderer."""

from ex4d.data.raycast import Box, Motion, Plane, Pole, Primitive, Sphere, Texture
from ex4d.data.synthetic import (
    GroundTruthView, Scene, default_intrinsics, ground_truth_for_trajectory, make_scene, observable, raycast,
    render_scene_video,
)

__all__ = [
    "Box", "GroundTruthView", "Motion", "Plane", "Pole", "Primitive", "Scene", "Sphere", "Texture",
    "default_intrinsics", "ground_truth_for_trajectory", "make_scene", "observable", "raycast",
    "render_scene_video",
]
