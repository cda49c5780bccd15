"""Clips of any length through the video model: overlapping windows, each conditioned on what is already generated.

The model takes one window of 4k+1 frames (49 by default, as the reference); a longer clip is cut into overlapping
windows by :func:`ex4d.utils.windows.plan_windows` (latent-aligned overlaps, see there).

Window k > 0 is conditioned on window k−1's output: its shared frames enter the colour video as that output and the
mask video as *seen* (255), and its first frame — the image the I2V model is conditioned on — is therefore the
previous output at that position. The shared frames of the result are a linear cross-fade from the earlier window's
frames (weight 1 at the first shared frame) to the later window's (weight 1 at the last), so no seam shows. Window k
draws its noise with ``seed + k``.

A clip of at most ``window`` frames is one window: with 4k+1 frames exactly today's (the reference's) call; otherwise
it is padded with its last frame to the next 4k+1 and the padding is dropped from the output. The result always has
exactly the clip's frame count.

A :class:`WindowStore` keeps each finished window's frames (atomically written, keyed by everything the result
depends on), so a killed run resumes at its first unfinished window and ends with the same frames.

Shapes: ``color`` (T, H, W, 3) uint8; ``mask`` (T, H, W) or (T, H, W, 3) uint8, 255 = seen; output (T, H, W, 3) uint8.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np

from ex4d.errors import InputError
from ex4d.utils.windows import DEFAULT_OVERLAP, DEFAULT_WINDOW, Window, plan_windows

__all__ = ["Window", "plan_windows", "generate_windows", "WindowStore", "DEFAULT_WINDOW", "DEFAULT_OVERLAP"]


class WindowStore:
    """Finished windows of one generation in ``folder`` (``window_<k>.npz``, written atomically), valid only for
    the same ``key`` (a digest of the inputs and settings): a rerun with other inputs starts over."""

    def __init__(self, folder: str | Path, key: str):
        self.folder, self.key = Path(folder), key

    def _path(self, k: int) -> Path:
        return self.folder / f"window_{k:04d}.npz"

    def load(self, k: int) -> np.ndarray | None:
        """Window ``k``'s frames if stored under this key, else None."""
        path = self._path(k)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["key"]) != self.key:
                    return None
                return data["frames"]
        except (OSError, ValueError, KeyError, EOFError):
            return None  # a damaged file is recomputed

    def save(self, k: int, frames: np.ndarray) -> None:
        from ex4d.io.atomic import save_npz_atomic

        self.folder.mkdir(parents=True, exist_ok=True)
        save_npz_atomic(self._path(k), frames=frames, key=np.array(self.key))

    @staticmethod
    def digest(color: np.ndarray, mask: np.ndarray, settings: dict) -> str:
        """A key for ``color``/``mask`` (content) and JSON-able ``settings``."""
        h = hashlib.sha256()
        for arr in (color, mask):
            h.update(str((arr.shape, arr.dtype.str)).encode())
            h.update(np.ascontiguousarray(arr).data)
        h.update(json.dumps(settings, sort_keys=True, default=str).encode())
        return h.hexdigest()


#: ``run_window(color, mask, num_frames, seed) -> (num_frames, H, W, 3) uint8`` — one call of the model.
RunWindow = Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]


def generate_windows(run_window: RunWindow, color: np.ndarray, mask: np.ndarray, *, seed: int,
                     window: int = DEFAULT_WINDOW, overlap: int = DEFAULT_OVERLAP, store: WindowStore | None = None,
                     progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Generate a clip of any length window by window (see the module doc).

    Args:
        run_window: one model call on a window's colour and mask (frames at the output size).
        color: (T, H, W, 3) uint8 renders; mask: (T, H, W[, 3]) uint8, 255 = seen; same T, H, W, at the output size.
        seed: window k draws its noise with ``seed + k``.
        store: keeps finished windows, so an interrupted run resumes where it stopped.
        progress: called with (windows done, windows in all) after each window.

    Returns:
        (T, H, W, 3) uint8 frames, exactly the clip's T.
    """
    if len(color) != len(mask) or color.shape[1:3] != mask.shape[1:3]:
        raise InputError(f"the colour ({color.shape}) and mask ({mask.shape}) videos must have the same frames and size")
    plan = plan_windows(len(color), window, overlap)
    out = np.zeros(color.shape[:3] + (3,), np.uint8)
    for k, win in enumerate(plan):
        frames = store.load(k) if store is not None else None
        if frames is None or frames.shape != (len(win),) + out.shape[1:]:
            c = color[win.start:win.stop].copy()
            m = mask[win.start:win.stop].copy()
            if win.shared:  # what is already generated is given as seen
                c[:win.shared] = out[win.start:win.start + win.shared]
                m[:win.shared] = 255
            frames = np.asarray(run_window(c, m, win.num_frames, seed + k))[:len(win)]
            if store is not None:
                store.save(k, frames)
        if win.shared:
            # cross-fade over the shared frames: the earlier window at the first, the later one at the last
            w = (np.arange(win.shared, dtype=np.float32) / max(win.shared - 1, 1))[:, None, None, None]
            before = out[win.start:win.start + win.shared].astype(np.float32)
            blended = (1 - w) * before + w * frames[:win.shared].astype(np.float32)
            out[win.start:win.start + win.shared] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
            out[win.start + win.shared:win.stop] = frames[win.shared:]
        else:
            out[win.start:win.stop] = frames
        if progress is not None:
            progress(k + 1, len(plan))
    return out
