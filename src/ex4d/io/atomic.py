"""Atomic file writes: a result appears under its final name complete, or not at all.

A crashed or interrupted run must never leave a truncated video or array behind that a later run (or a
person) mistakes for a finished one. Everything is written to a hidden temporary file in the destination
folder and moved onto the final name with :func:`os.replace`, which is atomic on one file system.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["atomic_path", "save_npz_atomic"]


@contextmanager
def atomic_path(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; move it onto ``final_path`` only if the block succeeds.

    The temporary file lives in the same folder as ``final_path`` (so the rename stays on one file system)
    and keeps its suffix (so writers that pick a format from the extension still work), e.g.
    ``out/.video.tmp-1a2b3c4d.mp4`` for ``out/video.mp4``. Missing parent folders are created. The file
    is not created in advance: the writer creates it, with the usual permissions.

    On any exception (``KeyboardInterrupt`` included) the temporary file is deleted, ``final_path`` is
    left as it was and the exception propagates.

    Args:
        final_path: where the finished file must end up; an existing file there is replaced.

    Yields:
        The temporary path (a :class:`pathlib.Path`).

    Raises:
        FileNotFoundError: the block succeeded without writing the temporary file.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.tmp-{secrets.token_hex(4)}{final.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {final}")
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_npz_atomic(path: str | os.PathLike, *, compressed: bool = False, **arrays) -> Path:
    """Save arrays to an ``.npz`` archive atomically (see :func:`atomic_path`).

    Unlike :func:`numpy.savez`, the path is used verbatim: no ``.npz`` is appended.

    Args:
        path: destination file.
        compressed: use :func:`numpy.savez_compressed` (smaller, slower) instead of :func:`numpy.savez`.
        **arrays: name -> array-like, stored under that name.

    Returns:
        The destination path.
    """
    save = np.savez_compressed if compressed else np.savez
    with atomic_path(path) as tmp:
        # A file object, not a name, so numpy cannot append ".npz" to the temporary name.
        with open(tmp, "wb") as f:
            save(f, **arrays)
    return Path(path)
