"""Backend names -> implementing classes, imported lazily (model libraries load only when a backend is used)."""

from __future__ import annotations

import importlib
import inspect

from ex4d.errors import InputError

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "EXTRA_HINT", "backend_class", "backend_options", "create_backend"]

#: name -> "module:Class". ``depthcrafter`` is the reference's depth model (spec §2.2).
BACKENDS: dict[str, str] = {
    "depthcrafter": "ex4d.depth.depthcrafter:DepthCrafterBackend",
    "depth-anything-v2": "ex4d.depth.depth_anything:DepthAnythingV2Backend",
    "depth-pro": "ex4d.depth.depth_pro:DepthProBackend",
    "file": "ex4d.depth.files:FileDepthBackend",
}
DEFAULT_BACKEND = "depthcrafter"
EXTRA_HINT = "pip install 'ex4d[diffusion]'"


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise InputError(f"unknown depth backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    return name


def backend_class(name: str) -> type:
    """The class implementing ``name``.

    Raises:
        InputError: unknown name (the message lists the known ones).
        ImportError: the backend's model library is missing; the message says what to install.
    """
    module_name, class_name = BACKENDS[_check_name(name)].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise ImportError(f"depth backend {name!r} needs the package {missing!r}: {EXTRA_HINT}") from exc
    return getattr(module, class_name)


def backend_options(name: str) -> tuple[str, ...]:
    """Keyword options the backend's constructor takes."""
    params = inspect.signature(backend_class(name).__init__).parameters
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p for p, prm in params.items() if p != "self" and prm.kind in kinds)


def create_backend(name: str, **options):
    """Instantiate backend ``name`` with ``options``; ``None`` values are dropped (= the backend's default).

    Raises:
        InputError: unknown name, or an option the backend does not take (the message lists those it takes).
        ImportError: see :func:`backend_class`.
    """
    cls = backend_class(name)
    accepted = backend_options(name)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(f"depth backend {name!r} does not take option(s) {', '.join(unknown)}; "
                         f"it takes: {', '.join(accepted)}")
    return cls(**options)
