"""Session fixtures: one tiny Wan2.1-I2V folder in each layout (same weights) and one tiny ex4d.ckpt, written once."""

import pytest
import torch

from .tiny import write_ex4d_ckpt, write_original_wan_dir, write_wan_dir


@pytest.fixture(scope="session")
def wan_dir(tmp_path_factory):
    return write_wan_dir(tmp_path_factory.mktemp("inpaint") / "wan")


@pytest.fixture(scope="session")
def original_wan_dir(tmp_path_factory):
    return write_original_wan_dir(tmp_path_factory.mktemp("inpaint_original") / "Wan2.1-I2V-tiny")


@pytest.fixture(scope="session")
def ex4d_ckpt(tmp_path_factory):
    return write_ex4d_ckpt(tmp_path_factory.mktemp("inpaint_ckpt") / "ex4d.ckpt")


@pytest.fixture(scope="session")
def pipe(wan_dir, ex4d_ckpt):
    from ex4d.inpaint.loading import load_pipeline

    torch.set_num_threads(2)
    p = load_pipeline(wan_dir, ex4d_ckpt)
    p.set_progress_bar_config(disable=True)
    return p
