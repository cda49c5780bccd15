"""Device selection at the edge (CLI/API); library code follows its inputs' device."""

from __future__ import annotations

import torch

from ex4d.errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N`` as given.

    Raises:
        InputError: unknown name, or CUDA asked for but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        return torch.device(name)
    raise InputError(f"unknown device '{name}'; use auto, cpu or cuda")
