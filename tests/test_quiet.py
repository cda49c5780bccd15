"""Quiet by default: no library chatter on stderr unless --verbose/--debug (every documented command is also run
by tests/test_docs.py, which checks that its stderr holds only progress bars and ex4d's notes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import ex4d
from ex4d.cli import _print_warning
from ex4d.errors import InputWarning
from ex4d.io.video import save_video


def run_cli(args, cwd):
    src = str(Path(ex4d.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "HF_HOME": str(cwd / "hf-home")}
    for name in ("TORCH_LOGS", "TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "ex4d.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_generate_offline_says_one_line_and_nothing_else(tmp_path):
    """generate imports diffusers, transformers and (with the fp8 extra) torchao: none of them may speak."""
    frames = np.zeros((5, 32, 32, 3), np.uint8)
    save_video(tmp_path / "c.mp4", frames, fps=8)
    save_video(tmp_path / "m.mp4", frames + 255, fps=8)
    args = ["generate", "--color-video", "c.mp4", "--mask-video", "m.mp4", "--output-video", "o.mp4"]
    res = run_cli(args, tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode in (1, 2) and len(lines) == 1, res.stderr
    assert lines[0].startswith("ex4d generate: error: ") and "download" in lines[0]
    verbose = run_cli(args + ["--verbose"], tmp_path)
    assert verbose.returncode == res.returncode and verbose.stderr.strip().splitlines()[-1] == lines[0]


def test_library_loggers_are_quiet_and_ex4d_is_not():
    code = ("import logging; from ex4d.utils.quiet import quiet_third_party; quiet_third_party(); "
            "logging.getLogger('torchao').warning('noise'); logging.getLogger('torch.utils._pytree').warning('noise');"
            "logging.getLogger('transformers.x').info('noise'); logging.getLogger('ex4d.inpaint').warning('ours'); "
            "logging.getLogger('diffusers').error('real error'); import os; print(os.environ['TORCH_LOGS'])")
    env = {**os.environ, "TORCH_LOGS": "+dynamo"}  # a user's setting is kept
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert "noise" not in res.stderr and "ours" in res.stderr and "real error" in res.stderr
    assert res.stdout.strip() == "+dynamo"


def test_warnings_only_ex4d_notes_unless_verbose(capsys, monkeypatch):
    shown = []
    monkeypatch.setattr("ex4d.cli._SHOW_WARNING", lambda *a: shown.append(str(a[0])))
    _print_warning(InputWarning("big video"), InputWarning, "x.py", 1, command="recon")
    _print_warning(FutureWarning("deprecated thing"), FutureWarning, "lib.py", 3, command="recon")
    assert capsys.readouterr().err == "ex4d recon: note: big video\n" and not shown
    _print_warning(FutureWarning("deprecated thing"), FutureWarning, "lib.py", 3, command="recon", verbose=True)
    assert shown == ["deprecated thing"]
