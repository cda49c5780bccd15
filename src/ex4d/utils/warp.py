"""NVIDIA Warp, initialised once and quietly, and the CPU worker threads that Warp kernels run on.

Warp runs a CPU launch single-threaded on the calling thread with the GIL released, so the stages that use it
(rasteriser, mesh builder) spread independent frames over a small thread pool to use every core.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import sys
import threading

import torch

_POOLS: dict[str, tuple[int, concurrent.futures.ThreadPoolExecutor]] = {}
_POOLS_LOCK = threading.Lock()


@functools.lru_cache(maxsize=None)
def warp_module():
    """``import warp``, initialised once, with warnings only (the import is lazy: Warp is heavy)."""
    import warp as wp

    if hasattr(wp.config, "log_level") and hasattr(wp, "LOG_WARNING"):
        wp.config.log_level = wp.LOG_WARNING
    else:  # older Warp
        wp.config.quiet = True
    if torch.cuda.is_available():
        wp.init()
    else:
        # Without a GPU, Warp's native library prints a "could not load the CUDA driver" warning on every run;
        # it is expected here, so it is kept off the user's terminal.
        with _native_stderr_silenced():
            wp.init()
    return wp


@contextlib.contextmanager
def _native_stderr_silenced():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cpu_pool(name: str, workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """The process's thread pool called ``name`` with ``workers`` threads (made anew after a fork or a resize)."""
    with _POOLS_LOCK:
        entry = _POOLS.get(name)
        # a forked child inherits the pool object but not its threads: make a new one there
        if entry is None or entry[0] != os.getpid() or entry[1]._max_workers != workers:
            entry = (os.getpid(), concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                                        thread_name_prefix=f"ex4d-{name}"))
            _POOLS[name] = entry
        return entry[1]
