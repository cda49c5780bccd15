"""A work dir with the wall-and-box clip "uploaded" into Gradio's upload folder inside it."""

import numpy as np
import pytest

from ex4d.io.video import save_video
from ex4d.ui.session import Workspace
from tests.conftest import wall_and_box


def upload(ws: Workspace, name: str, data: bytes | None = None, frames=None, depth=None):
    """Write a file where Gradio would put an upload (inside the work dir); returns its path."""
    path = ws.gradio_dir / "upload" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if frames is not None:
        save_video(path, frames, fps=12)
    elif depth is not None:
        np.savez(path, depth=depth)
    else:
        path.write_bytes(data)
    return path


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "work", max_upload_mb=1)


@pytest.fixture
def clip_inputs(ws):
    """(video upload, depth upload, frames, depth) of a 9-frame 64×64 clip."""
    frames, depth = wall_and_box(num_frames=9, height=64, width=64)
    return upload(ws, "clip.mp4", frames=frames), upload(ws, "depth.npz", depth=depth), frames, depth


@pytest.fixture
def clip(ws, clip_inputs):
    return ws.add_video(clip_inputs[0], clip_inputs[1])
