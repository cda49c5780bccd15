"""Nothing executes code from a model or data file: every loader refuses pickled calls (weights_only=True,
allow_pickle=False), checked on live exploits and by reading every load call in the source."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import ex4d
from ex4d.depth.files import load_depth_array
from ex4d.errors import InputError
from ex4d.inpaint.loading import read_ex4d_ckpt
from ex4d.io.trajectory_file import load_trajectory
from ex4d.reconstruction import load_depth_file

from .corpus import PWNED, Exploit

SRC = Path(ex4d.__file__).parent


def test_the_exploit_is_live(tmp_path):
    # Otherwise the refusals below would prove nothing.
    pickle.loads(pickle.dumps(Exploit(tmp_path / PWNED)))
    assert (tmp_path / PWNED).exists()


@pytest.mark.parametrize("loader, suffix, message", [
    (load_depth_file, ".npz", "allow_pickle=False"),
    (load_depth_array, ".npz", "allow_pickle=False"),
    (lambda p: load_trajectory(p, 1), ".npz", "cannot read trajectory file"),
    (load_depth_array, ".npy", "allow_pickle=False"),
])
def test_pickled_arrays_are_refused(tmp_path, loader, suffix, message):
    path = tmp_path / f"evil{suffix}"
    payload = np.array([Exploit(tmp_path / PWNED)], dtype=object)
    if suffix == ".npy":
        np.save(path, payload, allow_pickle=True)
    else:
        np.savez(path, depth=payload, w2c=payload)
    with pytest.raises(InputError, match=message):
        loader(path)
    assert not (tmp_path / PWNED).exists()


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_pickled_calls_in_a_checkpoint_are_refused(tmp_path, how):
    path = tmp_path / "ex4d.ckpt"
    payload = {"latent_encoder.0.weight": torch.zeros(2), "evil": Exploit(tmp_path / PWNED)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        read_ex4d_ckpt(path)
    assert not (tmp_path / PWNED).exists()


def _calls(name: str):
    """(file, line, keyword dict) of every call to ``*.load`` on ``name`` (torch/np) in src/ex4d."""
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == name):
                yield path.relative_to(SRC), node.lineno, {k.arg: k.value for k in node.keywords}


def test_every_torch_load_is_weights_only():
    calls = list(_calls("torch"))
    assert calls  # the audit looks at something
    for where, line, kw in calls:
        assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, (where, line)


def test_no_np_load_allows_pickle():
    calls = list(_calls("np"))
    assert calls
    for where, line, kw in calls:
        value = kw.get("allow_pickle")
        # numpy's default is allow_pickle=False; an explicit True (or a variable) would need a reason.
        assert value is None or (isinstance(value, ast.Constant) and value.value is False), (where, line)


def test_no_pickle_module_in_the_package():
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "pickle" not in names | modules and "dill" not in names | modules, path
