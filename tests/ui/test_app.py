"""The page's callbacks without a browser: readable one-line errors, confinement, and the ``ex4d ui`` command."""

import numpy as np
import pytest
import torch

from ex4d.cli import build_parser, main
from ex4d.errors import InputError
from ex4d.ui.app import Callbacks, readable
from tests.ui.conftest import upload

gr = pytest.importorskip("gradio", reason='the web app needs gradio: pip install "ex4d[ui]"')

DESIGN = ("orbit", 30, 0, 1.0, 1.0, [], None)  # preset, angle, elevation, radius, zoom, table, imported


def _error(fn, *args) -> str:
    with pytest.raises(gr.Error) as err:
        fn(*args)
    message = err.value.message
    assert "\n" not in message and "Traceback" not in message and "File \"" not in message
    return message


def test_readable_is_one_line_for_any_failure():
    assert readable(InputError("clip.mp4: not a video")) == "clip.mp4: not a video"
    assert "out of memory" in readable(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert "out of memory" in readable(MemoryError())
    assert readable(RuntimeError("boom\n  at line 3")) == ("internal error (RuntimeError: boom at line 3); "
                                                          "the server log has the details")
    assert 'pip install "ex4d[ui]"' in readable(ImportError("No module named 'gradio'"))


def test_callbacks_report_errors_in_the_page_and_keep_working(ws, clip_inputs):
    cb = Callbacks(ws, device="cpu")
    assert _error(cb.load_video, None, None) == "no video uploaded"
    assert _error(cb.preview, None, *DESIGN) == "load a video (or the demo scene) first"
    bad = upload(ws, "bad<b>.mp4", b"garbage" * 50)
    message = _error(cb.load_video, str(bad), None)
    assert "bad&lt;b&gt;.mp4" in message and str(ws.root) not in message  # escaped: the toast renders HTML
    assert "over the 1 MB upload limit" in _error(cb.load_video, str(upload(ws, "big.mp4", b"0" * 2**21)), None)
    # After the errors, the same callbacks work.
    key, video, glb, rows, status = cb.load_video(str(clip_inputs[0]), str(clip_inputs[1]))
    assert status.startswith("loaded: 9 frames of 64×64") and len(rows) == 3 and glb.endswith("view.glb")
    strip, preview_video, plot, trajectory, status = cb.preview(key, *DESIGN)
    assert status.startswith("preview of 8 of 9 frames")
    *_, status = cb.preview_full(key, *DESIGN)
    assert status.startswith("preview of 9 of 9 frames")
    assert "every keyframe cell must be a number" in _error(cb.preview, key, "keyframes", 30, 0, 1, 1,
                                                            [[0, "x", 0, 0, 0, 0, 1]], None)
    assert "needs --wan-dir and --ex4d-ckpt" in _error(cb.generate, key, *DESIGN, "ex4d")
    side_by_side, files, status = cb.generate(key, *DESIGN, "offline")
    assert [f.rsplit("/", 1)[-1].split("_")[0] for f in files[:2]] == ["output", "mask"]
    assert files[2].endswith(".json") and files[3].endswith("mesh.glb")
    assert all(p.startswith(str(ws.root)) for p in [side_by_side, *files, strip, preview_video, plot, trajectory])


def test_files_outside_the_work_dir_are_refused(ws, clip, tmp_path):
    cb = Callbacks(ws)
    outside = tmp_path / "secret.json"
    outside.write_text('{"w2c": []}')
    assert "outside the app's working directory" in _error(cb.import_trajectory, clip.key, str(outside))
    assert "outside the app's working directory" in _error(cb.load_video, str(outside), None)
    message = _error(cb.preview, clip.key, "imported file", 0, 0, 1, 1, [], str(outside))
    assert "outside the app's working directory" in message


def test_import_keyframes_fills_the_table(ws, clip):
    cb = Callbacks(ws)
    doc = upload(ws, "path.json", b'{"keyframes": [{"t": 0, "eye": [0, 0, 0], "look_at": [0, 0, 4]},'
                                  b' {"t": 1, "eye": [1, 0, 0.5], "look_at": [0, 0, 4]}]}')
    preset, imported, rows, status = cb.import_trajectory(clip.key, str(doc))
    assert preset == "keyframes" and imported is None and rows == [[0, 0, 0, 0, 0, 0, 4], [1, 1, 0, 0.5, 0, 0, 4]]
    per_frame = upload(ws, "cams.npz", b"")
    np.savez(per_frame, w2c=np.tile(np.eye(4), (5, 1, 1)))
    assert "has 5 cameras but the video has 9 frames" in _error(cb.import_trajectory, clip.key, str(per_frame))


def test_ui_command_defaults_to_localhost_and_checks_its_options(tmp_path, capsys):
    args = build_parser().parse_args(["ui", "--work-dir", str(tmp_path)])
    assert (args.host, args.port, args.max_upload_mb) == ("127.0.0.1", 7860, 200.0)
    assert main(["ui", "--work-dir", str(tmp_path), "--max-upload-mb", "0"]) == 2
    assert main(["ui", "--work-dir", str(tmp_path), "--wan-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("ex4d ui: error:") for line in err)
    assert "--max-upload-mb must be positive" in err[0] and "--wan-dir" in err[1]


@pytest.mark.slow  # writes and loads a tiny Wan2.1 + EX-4D model (~30 s on 2 cores)
def test_ex4d_fill_runs_a_tiny_model_when_weights_are_given(ws, clip, tmp_path):
    pytest.importorskip("diffusers")
    from tests.inpaint.tiny import write_ex4d_ckpt, write_wan_dir

    from ex4d.generation_options import GenerationOptions, ModelOptions, SamplingOptions

    options = GenerationOptions(ModelOptions(write_wan_dir(tmp_path / "wan"), write_ex4d_ckpt(tmp_path / "ex4d.ckpt")),
                                SamplingOptions(steps=1))
    cb = Callbacks(ws, device="cpu", generate_options=options)
    assert cb.fills == ["offline", "ex4d"]
    side_by_side, files, status = cb.generate(clip.key, *DESIGN, "ex4d")
    assert "with the ex4d fill" in status
    import av

    with av.open(files[0]) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 9 and frames[0].shape == (64, 64, 3)  # the clip's frames and size, as ex4d run


def test_ui_command_passes_the_generation_options(tmp_path, monkeypatch, capsys):
    """``ex4d ui --wan-dir W --ex4d-ckpt C --offload group --fp8 --steps 4`` serves the ex4d fill with those options;
    an impossible set-up (fp8 matmuls on a CPU) stops before the server starts."""
    pytest.importorskip("diffusers")
    import ex4d.ui.app

    wan, ckpt = tmp_path / "wan", tmp_path / "ex4d.ckpt"
    wan.mkdir()
    ckpt.write_bytes(b"")
    seen = {}
    monkeypatch.setattr(ex4d.ui.app, "build_app",
                        lambda ws, device, generate_options: seen.update(options=generate_options))
    monkeypatch.setattr(ex4d.ui.app, "launch", lambda *a, **k: None)
    base = ["ui", "--work-dir", str(tmp_path / "w"), "--wan-dir", str(wan), "--ex4d-ckpt", str(ckpt), "--quiet",
            "--device", "cpu"]
    assert main(base + ["--offload", "group", "--fp8", "--steps", "4", "--cache", "taylorseer:3"]) == 0
    model, sampling = seen["options"].model, seen["options"].sampling
    assert model.model_dir == wan and model.adapter == ckpt
    assert model.offload == "group" and model.fp8 and sampling.steps == 4 and model.cache == "taylorseer:3"
    seen.clear()
    capsys.readouterr()
    assert main(base + ["--fp8-matmul"]) == 2
    assert "compute capability" in capsys.readouterr().err and not seen
