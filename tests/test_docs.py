"""The documentation's commands are tests: every shell command of README.md and docs/*.md, every example of
``ex4d <command> --help`` and the README's Python section run as written on small inputs made here.

Only placeholder paths are given meaning (``V.mp4``, ``D.npz``, ``OUT``, ``CLIPS``, ...: files made from the demo
scene, 64×64, 49 frames), optional ``[...]`` parts are left out, and ``ex4d demo`` gets ``--height 64 --width 64``
(it accepts them; its default size takes minutes on 2 cores). Commands that need downloaded weights run with the
network off and must end in their one-line error (status 1 or 2, never an internal error); commands that cannot run
here at all are listed in NOT_RUN with the reason. A command that succeeds may print on stderr only progress bars
and ex4d's one-line notes (quiet by default).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ex4d

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SIZE = ["--height", "64", "--width", "64"]

#: Commands that cannot run in a test, by their start, with the reason.
NOT_RUN = {
    "pip install": "installs packages; the tests run in the environment it made",
    "apt-get install": "installs a system package (chromium, for the browser test)",
    "pytest": "runs the test suite itself (.ci/run runs the README's test command; test_ci_runs_the_readme_command)",
    "torchrun": "needs several GPUs",
    "accelerate launch": "needs several GPUs",
    "ex4d ui": "starts a web server that runs until stopped (tests/ui drives the app)",
    "ex4d view": "starts the viewer's server, which runs until stopped (tests/view drives it, the CLI included)",
}
#: Commands whose arguments are elided ("...") in the doc (e.g. `ex4d train ... --resume latest`) are not runnable
#: as written; their full form is run where the doc gives it.
ELIDED = "..."
#: Commands that need downloaded weights (a depth model, Wan2.1 + the EX-4D adapter, LPIPS/FID/FVD networks):
#: offline they must end in one "error:" line.
NEEDS_WEIGHTS = [
    r"^ex4d generate\b", r"^ex4d train\b", r"--fill ex4d\b", r"--metrics \S*(lpips|fid|fvd)",
    r"--(depth-)?backend (depthcrafter|depth-anything-v2|depth-pro)\b",
    r"^ex4d depth\b(?!.*--backend)",  # the default backend is DepthCrafter
    r"^ex4d run\b(?!.*(--depth |--manifest))",  # no depth given: DepthCrafter estimates it
]
PROGRESS = re.compile(r"\d+%\||\bit/s\]|/s\]|^\s*$")


def shell_commands(text: str) -> list[str]:
    """The commands of a markdown text's bash blocks: continuation lines joined, comments dropped, split at &&."""
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                out += [c.strip() for c in line.split(" && ")]
    return out


def as_written(command: str) -> str:
    """Leave out the optional [...] parts; of alternatives a|b outside them, take the first."""
    command = re.sub(r"\s*\[[^\[\]]*\]", "", command)
    return " ".join(word.split("|")[0] if "|" in word and not word.startswith("'") else word
                    for word in command.split())


def doc_commands() -> list[tuple[str, str]]:
    found = [(f"{path.relative_to(ROOT)}", as_written(c)) for path in DOCS for c in shell_commands(path.read_text())]
    from ex4d.cli import EXAMPLES

    found += [(f"ex4d {name} --help", as_written(c)) for name, lines in EXAMPLES.items()
              for c in (re.sub(r"\s+#\s.*$", "", line) for line in lines)]
    return found


COMMANDS = doc_commands()


def env() -> dict:
    src = str(Path(ex4d.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": os.environ.get("EX4D_TEST_HF_HOME", "")
            or str(Path(os.environ.get("TMPDIR", "/tmp")) / "ex4d-docs-empty-hf-home")}


def ex4d_argv(command: str) -> list[str]:
    argv = shlex.split(command)
    assert argv[0] == "ex4d", command
    if argv[1] == "demo" and "--height" not in argv:
        argv += SIZE
    return [sys.executable, "-m", "ex4d.cli", *argv[1:]]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder holding every placeholder the docs use, made from the demo scene (64×64, 49 frames)."""
    from ex4d.depth.files import save_depth_frames

    ws = tmp_path_factory.mktemp("docs")
    res = subprocess.run([sys.executable, "-m", "ex4d.cli", "demo", "--output-dir", "dm", *SIZE, "--num-frames", "49",
                          "--quiet"],
                         cwd=ws, env=env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    dm = ws / "dm"
    for name in ("V.mp4", "in.mp4", "flower.mp4", "input.mp4", "CLIPS/walk.mp4", "clips/flower.mp4"):
        (ws / name).parent.mkdir(exist_ok=True)
        shutil.copy(dm / "input.mp4", ws / name)
    for name in ("D.npz", "depth.npz", "CLIPS/walk.npz", "clips/flower.npz"):
        shutil.copy(dm / "depth.npz", ws / name)
    for name, src in (("REF.mp4", "gt_180.mp4"), ("OUT/output.mp4", "output_180.mp4"),
                      ("out/color_90.mp4", "color_180.mp4"), ("out/mask_90.mp4", "mask_180.mp4"),
                      ("gt/output_90.mp4", "gt_180.mp4"), ("results/flower.mp4", "output_180.mp4"),
                      ("references/flower.mp4", "gt_180.mp4")):
        (ws / name).parent.mkdir(exist_ok=True)
        shutil.copy(dm / src, ws / name)
    save_depth_frames(ws / "depth_png", np.load(dm / "depth.npz")["depth"], scale=0.001)
    (ws / "list.csv").write_text("input_video,cam,depth,output_dir\nV.mp4,90,D.npz,\nin.mp4,30,D.npz,second\n")
    return ws


def check_quiet(command: str, stderr: str) -> None:
    """Quiet by default: only progress bars and ex4d's one-line notes on stderr."""
    name = shlex.split(command)[1]
    for line in stderr.replace("\r", "\n").splitlines():
        assert PROGRESS.search(line) or line.startswith(f"ex4d {name}: note: "), f"{command}: stderr says {line!r}"


@pytest.mark.parametrize("where,command", COMMANDS, ids=[f"{i}:{c[:60]}" for i, (_, c) in enumerate(COMMANDS)])
def test_documented_command_runs_as_written(workspace, where, command):
    if ELIDED in command or any(command.startswith(start) for start in NOT_RUN):
        return  # listed above with its reason: not run
    res = subprocess.run(ex4d_argv(command), cwd=workspace, env=env(), capture_output=True, text=True, timeout=600)
    name = shlex.split(command)[1]
    if any(re.search(p, command) for p in NEEDS_WEIGHTS):
        lines = res.stderr.strip().splitlines()
        assert res.returncode in (1, 2), f"{where}: {command}: expected its one-line error offline\n{res.stderr}"
        assert len(lines) == 1 and lines[0].startswith(f"ex4d {name}: error: "), f"{where}: {command}\n{res.stderr}"
        assert "internal error" not in lines[0]
        assert any(word in lines[0].lower() for word in ("download", "not found", "no such", "not a folder")), lines[0]
        return
    assert res.returncode == 0, f"{where}: {command}\n{res.stdout}\n{res.stderr}"
    check_quiet(command, res.stderr)


def test_every_command_is_run_or_listed():
    """Each documented command either runs here or is listed in NOT_RUN (no silent skip)."""
    for where, command in COMMANDS:
        assert command.startswith("ex4d ") or any(command.startswith(s) for s in NOT_RUN), (where, command)
    assert len(COMMANDS) > 25
    names = {shlex.split(c)[1] for _, c in COMMANDS if c.startswith("ex4d ")}
    assert names >= {"demo", "recon", "run", "trajectory", "depth", "eval", "prepare", "generate", "train", "ui"}


def test_ci_runs_the_readme_command():
    """.ci/run runs the README's test command word for word."""
    readme = (ROOT / "README.md").read_text()
    line = next(c for c in re.findall(r"^```bash\n(.*?)\n```", readme, re.S | re.M) if c.endswith("&& pytest"))
    assert line in (ROOT / ".ci" / "run").read_text().splitlines()


# --- the README's Python section ------------------------------------------------------------------------------------

def readme_python() -> list[str]:
    """The statements of the README's python block, each as its source text."""
    block = re.search(r"^## Python\n.*?^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M).group(1)
    return [ast.get_source_segment(block, node) for node in ast.parse(block).body]


#: Statements that need downloaded weights: offline they raise ex4d's InputError (which says what to download).
PY_NEEDS_WEIGHTS = ("ex4d.estimate_depth(", "ex4d.generate(")

RUNNER = """
import sys, ex4d
from ex4d.errors import InputError
for source, needs_weights in {statements!r}:
    try:
        exec(compile(source, "README.md", "exec"), globals())
    except InputError as exc:
        if not needs_weights:
            raise
        print("needs weights:", exc, file=sys.stderr)
    else:
        assert not needs_weights, "ran without weights: " + source
print("done")
"""


def test_readme_python_section_runs(workspace, tmp_path):
    statements = [(s, s.lstrip().startswith(PY_NEEDS_WEIGHTS) or any(p in s for p in PY_NEEDS_WEIGHTS))
                  for s in readme_python()]
    assert sum(w for _, w in statements) >= 2 and len(statements) >= 10
    for name in ("input.mp4", "depth.npz"):
        shutil.copy(workspace / name, tmp_path / name)
    res = subprocess.run([sys.executable, "-c", RUNNER.format(statements=statements)], cwd=tmp_path, env=env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and res.stdout.strip().endswith("done"), res.stderr
    assert (tmp_path / "out" / "output_180.mp4").is_file() and (tmp_path / "out" / "DW-Mesh.ply").is_file()


# --- ex4d --version / --help ----------------------------------------------------------------------------------------

def test_version_and_help_list_every_command_with_examples(capsys):
    from ex4d.cli import EXAMPLES, build_parser, main

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"ex4d {ex4d.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    purposes = {c.dest: c.help for c in sub._choices_actions}
    assert set(purposes) == set(sub.choices) == set(EXAMPLES)  # every command has a purpose and examples
    for name, purpose in purposes.items():
        assert purpose and re.search(rf"^\s+{name}\b", top, re.M), name
        assert " ".join(purpose.split()[:3]) in " ".join(top.split())
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        assert "examples:\n" in text and all(line in text for line in EXAMPLES[name]), name
