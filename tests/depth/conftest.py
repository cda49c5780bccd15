"""Tiny random models, saved once per session in their real on-disk layouts."""

import numpy as np
import pytest

from . import tiny


@pytest.fixture(scope="session")
def da_dir(tmp_path_factory):
    return tiny.save_depth_anything(tmp_path_factory.mktemp("da") / "Depth-Anything-V2-Small-hf")


@pytest.fixture(scope="session")
def da_metric_dir(tmp_path_factory):
    return tiny.save_depth_anything(tmp_path_factory.mktemp("dam") / "metric", metric=True)


@pytest.fixture(scope="session")
def dp_dir(tmp_path_factory):
    return tiny.save_depth_pro(tmp_path_factory.mktemp("dp") / "DepthPro-hf", fov_deg=60.0)


@pytest.fixture(scope="session")
def dc_dirs(tmp_path_factory):
    return tiny.save_depthcrafter(tmp_path_factory.mktemp("dc"))


@pytest.fixture
def frames():
    """7 frames of 32×48 with smooth texture, a box moving right."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:48]
    out = np.empty((7, 32, 48, 3), np.uint8)
    for t in range(7):
        img = np.stack([128 + 90 * np.sin(xx / 4.0), 128 + 90 * np.cos(yy / 5.0), 80 + 0 * xx], -1)
        img[10:22, 8 + 3 * t: 20 + 3 * t] = [230, 40, 40]
        out[t] = np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
    return out
