"""Whether an optional package is installed, without importing it (optional kernels and backends are chosen this way)."""

from __future__ import annotations

import importlib.util

__all__ = ["module_found"]


def module_found(name: str) -> bool:
    """True when ``name`` (a dotted module path) can be imported; a missing or broken parent counts as absent."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent that is not a package, or a broken install
        return False
