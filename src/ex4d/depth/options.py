"""How depth is estimated: :class:`DepthOptions`, one frozen, checked set of options shared by ``ex4d depth``,
``ex4d recon/run --depth-backend``, ``run --manifest`` and the Python API (``ex4d.run(..., depth_options=...)``).

Each field is one ``--depth-*`` flag; a field given to a backend that does not use it is refused in one line naming
the flag. :meth:`DepthOptions.backend_kwargs` turns the fields into the chosen backend's constructor options
(:func:`ex4d.depth.api.estimate_depth`'s ``**options``). No heavy imports: the CLI builds these before any model loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ex4d.errors import InputError

__all__ = ["DepthOptions", "BACKEND_NAMES", "DEFAULT_BACKEND", "INTRINSICS_POLICIES"]

BACKEND_NAMES = ("depthcrafter", "depth-anything-v2", "depth-pro", "file")
DEFAULT_BACKEND = "depthcrafter"
INTRINSICS_POLICIES = ("auto", "reference", "estimate")

# field -> {backend: the backend's constructor option}
_BACKEND_OPTION = {
    "model": {"depthcrafter": "unet", "depth-anything-v2": "model", "depth-pro": "model"},
    "svd": {"depthcrafter": "svd"},
    "window": {"depthcrafter": "window"},
    "overlap": {"depthcrafter": "overlap"},
    "steps": {"depthcrafter": "steps"},
    "guidance": {"depthcrafter": "guidance"},
    "seed": {"depthcrafter": "seed"},
    "size": {"depth-anything-v2": "size"},
    "batch_size": {"depth-anything-v2": "batch_size", "depth-pro": "batch_size"},
    "dtype": {"depthcrafter": "dtype", "depth-anything-v2": "dtype", "depth-pro": "dtype"},
    "file": {"file": "path"},
    "units": {"file": "units"},
    "scale": {"file": "scale"},
}


@dataclass(frozen=True)
class DepthOptions:
    """A depth backend and its options; ``None`` = the backend's default (see ``docs/depth.md``).

    Attributes:
        backend: ``depthcrafter`` (the reference's), ``depth-anything-v2``, ``depth-pro`` or ``file``.
        model, svd, window, overlap, steps, guidance, seed, size, batch_size, dtype: the model backends' options
            (``--depth-model`` …); file, units, scale: the ``file`` backend's (``--depth-file`` …).
        intrinsics: ``auto`` / ``reference`` / ``estimate`` (``--intrinsics``); focal_px, fov_deg: a known focal
            (``--focal``) or field of view (``--fov``), overriding it.
        device: where a model runs (``None`` = the command's ``--device``); download: fetch missing weights.
    """

    backend: str = DEFAULT_BACKEND
    model: str | None = None
    svd: str | None = None
    window: int | None = None
    overlap: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    size: str | None = None
    batch_size: int | None = None
    dtype: str | None = None
    file: str | None = None
    units: str | None = None
    scale: float | None = None
    intrinsics: str = "auto"
    focal_px: float | None = None
    fov_deg: float | None = None
    device: str | None = None
    download: bool = True

    def __post_init__(self):
        if self.backend not in BACKEND_NAMES:
            raise InputError(f"--depth-backend: expected one of {', '.join(BACKEND_NAMES)}, found {self.backend!r}")
        for name, targets in _BACKEND_OPTION.items():
            if getattr(self, name) is not None and self.backend not in targets:
                raise InputError(f"{_flag(name)} does not apply to the {self.backend} depth backend (it applies to: "
                                 f"{', '.join(targets)})")
        if self.backend == "file" and self.file is None:
            raise InputError("the file depth backend needs --depth-file PATH")
        if self.intrinsics not in INTRINSICS_POLICIES:
            raise InputError(f"--intrinsics: expected one of {', '.join(INTRINSICS_POLICIES)}, found "
                             f"{self.intrinsics!r}")
        if self.file is not None:
            object.__setattr__(self, "file", str(self.file))  # a Path given in Python: one canonical form

    @classmethod
    def from_backend(cls, backend: str | None, options: dict | None = None) -> DepthOptions:
        """From a backend name and its constructor options as :func:`ex4d.depth.api.estimate_depth` takes them
        (``unet``, ``path``, …, plus ``intrinsics``/``focal_px``/``fov_deg``/``device``/``download``): the older
        dict form of ``depth_options``."""
        backend = backend or DEFAULT_BACKEND
        options = dict(options or {})
        fields = {}
        for name in ("intrinsics", "focal_px", "fov_deg", "device", "download"):
            if name in options:
                fields[name] = options.pop(name)
        by_option = {targets[backend]: name for name, targets in _BACKEND_OPTION.items() if backend in targets}
        unknown = sorted(k for k in options if k not in by_option)
        if unknown:
            raise InputError(f"depth options: {', '.join(unknown)} not known to the {backend} depth backend")
        fields.update({by_option[k]: v for k, v in options.items()})
        return cls(backend=backend, **fields)

    def backend_kwargs(self) -> dict:
        """The chosen backend's constructor options that were set (plus ``device``/``download`` for models)."""
        kwargs = {targets[self.backend]: getattr(self, name) for name, targets in _BACKEND_OPTION.items()
                  if self.backend in targets and getattr(self, name) is not None}
        if self.backend != "file":
            kwargs["device"] = self.device or "auto"
            if not self.download:
                kwargs["download"] = False
        return kwargs

    def estimate_kwargs(self) -> dict:
        """Keyword arguments of :func:`ex4d.depth.api.estimate_depth` after the video and the backend name."""
        return {"intrinsics": self.intrinsics, "focal_px": self.focal_px, "fov_deg": self.fov_deg,
                **self.backend_kwargs()}

    def with_device(self, device: str | None) -> DepthOptions:
        """These options on ``device`` unless one is already set."""
        return self if self.device is not None or device is None else dataclasses.replace(self, device=device)

    @property
    def file_path(self) -> Path | None:
        """The ``file`` backend's depth file (None for the models)."""
        return None if self.file is None else Path(self.file)


def _flag(name: str) -> str:
    return "--depth-" + name.replace("_", "-")
