"""Finding model weights: a local folder, or a Hugging Face hub id (cache first, then the network).

Without network and without a local copy, one :class:`InputError` names what to download and how to pass it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ex4d.errors import InputError

__all__ = ["looks_like_path", "resolve_model_dir", "require_files", "choose_variant", "default_dtype"]


def looks_like_path(ref: str | os.PathLike) -> bool:
    """True for anything that is clearly a file-system path rather than a hub id ``owner/name``."""
    if isinstance(ref, Path):
        return True
    text = os.fspath(ref)
    if Path(text).expanduser().exists():
        return True
    if text.startswith((".", "/", "~", "\\")) or (len(text) > 1 and text[1] == ":"):
        return True
    return text.count("/") > 1 or "\\" in text


def resolve_model_dir(ref: str | os.PathLike, what: str, flag: str, allow_patterns: list[str] | None = None,
                      download: bool = True, extra_hint: str = "") -> Path:
    """A local folder holding model ``ref``.

    Args:
        ref: a local folder or a hub id such as ``depth-anything/Depth-Anything-V2-Small-hf``.
        what: words for messages ("the Depth Anything V2 model").
        flag: the option that takes a local folder instead (for the message).
        allow_patterns: files of the hub repository to fetch (default: all).
        download: try the network when the hub cache lacks it.
        extra_hint: appended to the error (e.g. "accept the licence on the model page first").

    Raises:
        InputError: missing local folder; hub copy neither cached nor downloadable.
    """
    text = os.fspath(ref)
    if looks_like_path(ref):
        path = Path(text).expanduser()
        if not path.is_dir():
            raise InputError(f"{path}: {what} folder not found (pass a folder or a hub id to {flag})")
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with the diffusion extra
        raise InputError(f"{what}: {text} is not a local folder and huggingface_hub is not installed; "
                         f"pip install 'ex4d[diffusion]'") from None
    try:
        return Path(snapshot_download(text, allow_patterns=allow_patterns, local_files_only=True))
    except Exception:  # not (fully) cached
        pass
    if download:
        try:
            return Path(snapshot_download(text, allow_patterns=allow_patterns))
        except Exception as exc:  # offline, gated, unknown id ...
            reason = f" ({type(exc).__name__})"
        else:  # pragma: no cover
            reason = ""
    else:
        reason = " (downloads disabled)"
    patterns = " ".join(f"--include '{p}'" for p in allow_patterns or [])
    raise InputError(
        f"{what} {text} is not available locally and could not be downloaded{reason}; "
        f"run `hf download {text} {patterns}{' ' if patterns else ''}--local-dir DIR` on a machine with network "
        f"and pass {flag} DIR{'; ' + extra_hint if extra_hint else ''}"
    )


def require_files(folder: Path, what: str, groups: list[tuple[str, ...]]) -> None:
    """Each group must have at least one existing file in ``folder``; else a wrong-layout :class:`InputError`."""
    missing = [" or ".join(g) for g in groups if not any((folder / f).is_file() for f in g)]
    if missing:
        present = sorted(p.name for p in folder.iterdir())[:8] if folder.is_dir() else []
        raise InputError(f"{folder}: not a {what} folder: missing {'; '.join(missing)} "
                         f"(found: {', '.join(present) or 'nothing'})")


def choose_variant(folder: Path, stem: str, dtype) -> str | None:
    """``"fp16"`` when only ``<stem>.fp16.safetensors`` exists, or both exist and ``dtype`` is half; else None."""
    import torch

    plain = (folder / f"{stem}.safetensors").is_file() or (folder / f"{stem}.bin").is_file()
    half = (folder / f"{stem}.fp16.safetensors").is_file() or (folder / f"{stem}.fp16.bin").is_file()
    if half and (not plain or dtype in (torch.float16, torch.bfloat16)):
        return "fp16"
    return None


def default_dtype(device, dtype=None):
    """``dtype`` if given (torch dtype or "fp16"/"bf16"/"fp32"), else fp16 on CUDA and fp32 elsewhere."""
    import torch

    if isinstance(dtype, str):
        names = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
                 "fp32": torch.float32, "float32": torch.float32}
        if dtype not in names:
            raise InputError(f"unknown dtype {dtype!r}; use fp16, bf16 or fp32")
        return names[dtype]
    if dtype is not None:
        return dtype
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32
