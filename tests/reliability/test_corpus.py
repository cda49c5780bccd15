"""Every hostile input of the corpus (corpus.py) through ``ex4d.cli.main``: the documented exit status, exactly one
stderr line naming the argument on failure, never a traceback, never a partial or temporary file."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from ex4d.cli import main
from ex4d.errors import InputError

from .corpus import CASES, PWNED, good_depth, good_video, recon_argv
from .report import ROWS, STATS

# Files that a successful command writes into its output folder.
OUTPUTS = {"recon": ("color_", "mask_", "camera_"), "trajectory": ("traj",), "generate": ("output",)}


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def _run(argv: list[str], capfd) -> tuple[int, list[str]]:
    capfd.readouterr()  # drop what the corpus writers printed (x265/vpx banners)
    code = main(argv)
    captured = capfd.readouterr()
    # Progress bars (tqdm: "Loading weights: 40%|████") are not messages; everything else counts.
    return code, [line for line in captured.err.splitlines() if line.strip() and "%|" not in line]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_corpus_case(case, tmp_path, capfd, request, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never a download, whatever the case
    folder = tmp_path / "case"
    folder.mkdir()
    args = request.getfixturevalue("corpus_models") if case.models else ()
    argv, out = case.make(folder, *args)
    before = _files(folder)

    code, err = _run(argv, capfd)

    created = _files(folder) - before
    temporaries = [p for p in created if ".tmp" in p.name]
    traceback = any("Traceback" in line or "internal error" in line for line in err)
    partial = bool(temporaries) or (case.bad and bool(created))
    command = argv[0]
    if case.bad:
        line = err[0] if len(err) == 1 else ""
        clear = (code == case.code and len(err) == 1 and line.startswith(f"ex4d {command}: error: ")
                 and (case.flag is None or line.startswith(f"ex4d {command}: error: {case.flag}: ")))
        STATS["tried"] += 1
        STATS["clear"] += clear
    else:
        written = {p.name for p in created if p.parent == out}
        clear = code == 0 and all(any(n.startswith(prefix) for n in written) for prefix in OUTPUTS[command])
        clear = clear and (case.check is None or sum(case.check in line for line in err) == 1)
        STATS["valid"] += 1
        STATS["handled"] += clear
    STATS["tracebacks"] += traceback
    STATS["partial"] += partial
    said = " / ".join(err).replace(str(folder), "…") if err else "(nothing)"
    ROWS.append((case.name, case.group, case.flag or "", code, said))

    assert code == case.code, err
    assert not traceback, err
    assert not (folder / PWNED).exists(), "a data or model file executed code"
    assert not temporaries and not (case.bad and created), sorted(map(str, created))
    if case.bad:
        assert len(err) == 1, err
        assert err[0].startswith(f"ex4d {command}: error: {case.flag + ': ' if case.flag else ''}"), err[0]
    else:
        assert clear, (err, sorted(map(str, created)))
        if case.check is None:
            assert not err, err


# ---------------------------------------------------------------------------------------------- the Python API
API_ARGUMENT = {"--input-video": "input_video", "--depth": "depth", "--cam": "cam"}


@pytest.mark.parametrize("case", [c for c in CASES if c.bad and c.group in ("video", "depth")
                                  and not c.name.startswith(("depth-cmd-", "eval-"))], ids=lambda c: c.name)
def test_api_raises_input_error_naming_the_argument(case, tmp_path):
    """``ex4d.recon`` + ``write_recon_outputs`` (what the CLI calls) raise InputError attributed to the argument."""
    import ex4d

    argv, out = case.make(tmp_path)
    opts = dict(zip(argv[1::2], argv[2::2]))
    with pytest.raises(InputError) as info:
        result = ex4d.recon(opts["--input-video"], opts["--depth"], cam="30", num_frames=int(opts["--num-frames"]),
                            device="cpu", progress=False)
        ex4d.write_recon_outputs(result, out, "30")
    assert info.value.argument == API_ARGUMENT[case.flag]
    assert str(info.value).startswith(f"{info.value.argument}: ")
    assert not _files(out)


# ---------------------------------------------------------------------------------------------- faults
def _fail_third_write(monkeypatch, exc: OSError):
    """Make the camera .npz (written after both videos) fail part-way, as a full disk does."""
    def savez(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise exc
    monkeypatch.setattr(np, "savez", savez)


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"),
                                 OSError(errno.EDQUOT, "Disk quota exceeded")], ids=["ENOSPC", "EDQUOT"])
def test_full_disk_leaves_no_partial_outputs(tmp_path, capfd, monkeypatch, exc):
    argv = recon_argv(good_video(tmp_path), good_depth(tmp_path), tmp_path / "out")
    _fail_third_write(monkeypatch, exc)
    code, err = _run(argv, capfd)
    assert code == 1
    assert err == [f"ex4d recon: error: --output-dir: {exc.strerror}"]
    # The two videos written before the failure were removed with the temporary archive.
    assert not _files(tmp_path / "out")


def test_unwritable_output_names_the_file(tmp_path, capfd, monkeypatch):
    # Running as root makes chmod useless; a PermissionError from the rename is what a read-only folder gives.
    import ex4d.io.atomic as atomic

    def replace(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))
    monkeypatch.setattr(atomic.os, "replace", replace)
    out = tmp_path / "out"
    code, err = _run(recon_argv(good_video(tmp_path), good_depth(tmp_path), out), capfd)
    assert code == 1 and len(err) == 1
    assert err[0] == f"ex4d recon: error: --output-dir: Permission denied: {out / 'color_30.mp4'}"
    assert not _files(out)


def test_debug_shows_the_traceback(tmp_path, capfd):
    argv = recon_argv(good_video(tmp_path), tmp_path / "missing.npz", tmp_path / "out")
    code, err = _run(argv, capfd)
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0]
    for debug_argv in (["--debug", *argv], [*argv, "--debug"]):  # before or after the subcommand
        code, err = _run(debug_argv, capfd)
        assert code == 2
        assert err[0].startswith("Traceback") and any("load_depth_file" in line for line in err)
        assert err[-1] == f"ex4d recon: error: --depth: {tmp_path / 'missing.npz'}: depth file not found"


def test_unexpected_exception_is_one_line_internal_error(tmp_path, capfd, monkeypatch):
    import ex4d.reconstruction as reconstruction

    def broken(*args, **kwargs):
        raise RuntimeError("mesh builder\nexploded")
    monkeypatch.setattr(reconstruction, "build_dw_mesh", broken)
    argv = recon_argv(good_video(tmp_path), good_depth(tmp_path), tmp_path / "out")
    code, err = _run(argv, capfd)
    assert code == 1
    assert err == ["ex4d recon: internal error: RuntimeError: mesh builder exploded "
                   "(run with --debug for the traceback)"]
    with pytest.raises(RuntimeError, match="exploded"):
        main(["--debug", *argv])
    assert not (tmp_path / "out").exists()


def test_interrupt_exits_130_without_outputs(tmp_path, capfd, monkeypatch):
    import ex4d.io.video as video

    real = video._rgb_to_video_frame
    calls = []

    def interrupted(rgb):
        calls.append(1)
        if len(calls) == 8:  # inside the second video: the first one was already complete
            raise KeyboardInterrupt
        return real(rgb)
    monkeypatch.setattr(video, "_rgb_to_video_frame", interrupted)
    code, err = _run(recon_argv(good_video(tmp_path), good_depth(tmp_path), tmp_path / "out"), capfd)
    assert code == 130 and err == ["ex4d recon: interrupted"]
    assert not _files(tmp_path / "out")


def test_out_of_memory_is_one_line_with_a_hint(tmp_path, capfd, monkeypatch):
    import ex4d.reconstruction as reconstruction

    class OutOfMemoryError(RuntimeError):  # what torch raises for CUDA (torch.OutOfMemoryError)
        pass

    for exc in (MemoryError(), OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")):
        def exhausted(*args, _exc=exc, **kwargs):
            raise _exc
        monkeypatch.setattr(reconstruction, "build_dw_mesh", exhausted)
        code, err = _run(recon_argv(good_video(tmp_path), good_depth(tmp_path), tmp_path / "out"), capfd)
        assert code == 1 and len(err) == 1
        assert err[0].startswith(f"ex4d recon: error: out of memory ({type(exc).__name__}")
        assert "--num-frames" in err[0] and "internal error" not in err[0]
        assert not (tmp_path / "out").exists()


API_OF_FLAG = {"--cam": "cam", "--wan-dir": "model_dir", "--ex4d-ckpt": "adapter"}


@pytest.mark.parametrize("case", [c for c in CASES if c.bad and c.flag in API_OF_FLAG], ids=lambda c: c.name)
def test_api_of_trajectories_and_models(case, tmp_path, request):
    """The same files through ``ex4d.recon(cam=...)`` and ``load_pipeline(model_dir, adapter)``."""
    import ex4d

    models = request.getfixturevalue("corpus_models") if case.models else ()
    argv, _ = case.make(tmp_path, *models)
    opts = dict(zip(argv[1::2], argv[2::2]))
    with pytest.raises(InputError) as info:
        if case.models:
            from ex4d.inpaint.loading import load_pipeline

            load_pipeline(opts["--wan-dir"], opts["--ex4d-ckpt"])
        else:
            ex4d.recon(good_video(tmp_path, "v.mp4"), good_depth(tmp_path, "d.npz"), cam=opts["--cam"],
                       num_frames=int(opts["--num-frames"]), device="cpu", progress=False)
    assert info.value.argument == API_OF_FLAG[case.flag]
    assert not (tmp_path / PWNED).exists()
