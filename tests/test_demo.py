import json

import av
import numpy as np

from ex4d.cli import main
from ex4d.io.preview import side_by_side, text_mask
from ex4d.reconstruction import recon


def decode(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_demo_writes_a_playable_preview_and_honest_metrics(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "--height", "64", "--width", "96", "--num-frames", "9",
                 "--cam", "60", "--quiet", "--device", "cpu"]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"input.mp4", "depth.npz", "color_60.mp4", "mask_60.mp4", "camera_60.npz", "gt_60.mp4",
                     "output_60.mp4", "preview.mp4", "metrics.json"}
    preview = decode(out / "preview.mp4")
    assert preview.shape[0] == 9 and preview.shape[2] >= 5 * 96 and preview.shape[1] > 64
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["leak_rate"] < 0.03 and metrics["mask_recall"] > 0.5
    assert "leak rate" in capsys.readouterr().out
    # The demo's input and depth are a valid `ex4d recon` input that reproduces the demo's render.
    depth = np.load(out / "depth.npz")
    assert depth["depth"].shape == (9, 64, 96) and depth["intrinsics"].shape == (3, 3)
    again = recon(out / "input.mp4", out / "depth.npz", cam=str(out / "camera_60.npz"), num_frames=9,
                  progress=False, device="cpu")
    demo_mask = decode(out / "mask_60.mp4")[..., 0] > 127
    assert (again.mask == demo_mask).mean() > 0.97


def test_demo_rejects_bad_sizes(tmp_path, capsys):
    assert main(["demo", "--output-dir", str(tmp_path / "d"), "--height", "15", "--quiet"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_side_by_side_layout_and_captions():
    a = np.zeros((3, 20, 30, 3), np.uint8)
    m = np.ones((3, 20, 10), bool)
    out = side_by_side([a, m], ["ab", "mask"], gap=4)
    assert out.shape[0] == 3 and out.shape[2] % 2 == 0 and out.shape[1] % 2 == 0
    caption = 7 + 4  # 5×7 font at scale 1 plus margins
    assert (out[:, caption:caption + 20, 34:44] == 255).all()  # the mask panel is white where seen
    assert (out[:, caption:caption + 20, :30] == 0).all()
    assert (out[:, :caption, :30] == 235).any()  # the caption has ink
    assert text_mask("A", 1).shape == (7, 6) and text_mask("A", 1).any()
