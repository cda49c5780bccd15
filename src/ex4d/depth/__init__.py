"""Depth stage: per-video depth maps (and intrinsics) from a backend, saved as the ``D.npz`` that
``ex4d recon --depth`` reads.

Backends (see :mod:`ex4d.depth.registry`): ``depthcrafter`` (the reference's, default), ``depth-anything-v2``,
``depth-pro`` and ``file``. Importing this package imports nothing heavy (the names below load on first use, so
``ex4d.depth.cli`` can build its parser without torch); :func:`estimate_depth` imports the chosen backend only.
"""

from __future__ import annotations

import importlib

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "DepthBackend", "DepthResult", "create_backend", "estimate_depth",
           "save_depth_npz"]

_LAZY = {
    "estimate_depth": "ex4d.depth.api", "save_depth_npz": "ex4d.depth.api",
    "DepthBackend": "ex4d.depth.base", "DepthResult": "ex4d.depth.base",
    "BACKENDS": "ex4d.depth.registry", "DEFAULT_BACKEND": "ex4d.depth.registry", "create_backend": "ex4d.depth.registry",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ex4d.depth' has no attribute {name!r}")
