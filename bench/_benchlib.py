"""Glue shared by the bench scripts: ex4d importable from a source checkout, sibling scripts loaded as modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

try:
    import ex4d  # noqa: F401
except ImportError:  # a source checkout without installation
    sys.path.insert(0, str(HERE.parent / "src"))


def load_sibling(name: str):
    """bench/<name>.py as a module (registered as ``ex4d_bench_<name>``, loaded once)."""
    key = f"ex4d_bench_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module
