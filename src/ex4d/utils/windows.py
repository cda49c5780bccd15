"""How a clip of any length is cut into the video model's windows (the plan only; generation is
:mod:`ex4d.inpaint.windows`, the seam metric :mod:`ex4d.eval.harness`). No heavy imports: evaluation uses it too.

Windows of ``window`` frames (4k+1) start ``window - 1 - overlap`` frames apart, so consecutive windows share
``overlap + 1`` frames (``overlap`` a multiple of 4, at most half a window: the shared frames are exactly the later
window's latent frames ``0 … overlap/4``, the VAE packing frame 0 alone and then 4 frames per latent). The last
window takes the frames left, padded with its last frame to the next 4k+1 for the model (the padding is dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

from ex4d.errors import InputError

__all__ = ["Window", "plan_windows", "check_windows", "model_frames", "DEFAULT_WINDOW", "DEFAULT_OVERLAP"]

#: Frames per window: the reference's 49 (81, Wan2.1's native length, is also accepted).
DEFAULT_WINDOW = 49
#: Frames shared by consecutive windows besides the first shared one (a multiple of 4).
DEFAULT_OVERLAP = 8


def model_frames(num_frames: int) -> int:
    """The smallest 4k+1 >= ``num_frames`` (the generation stage's own rounding,
    :func:`ex4d.inpaint.preprocess.round_num_frames`, gives the same for every length)."""
    return (int(num_frames) + 2) // 4 * 4 + 1 if num_frames % 4 != 1 else int(num_frames)


@dataclass(frozen=True)
class Window:
    """Frames ``[start, stop)`` of the clip, generated as ``num_frames`` model frames (4k+1, >= stop - start: a short
    window is padded with its last frame), sharing ``shared`` leading frames with the previous window."""

    start: int
    stop: int
    num_frames: int
    shared: int = 0

    def __len__(self) -> int:
        return self.stop - self.start


def check_windows(window: int, overlap: int) -> None:
    """Refuse window settings that break the alignment rules (module doc), in one line naming the flag.

    Raises:
        InputError: ``window`` not 4k+1 (>= 13), ``overlap`` not a multiple of 4 in [4, (window - 2) / 2].
    """
    if window < 13 or window % 4 != 1:
        raise InputError(f"--window: expected 4k+1 frames, at least 13 (e.g. 49 or 81), found {window}")
    # at most half a window: a window then shares frames with its neighbours only, never with the one after next
    most = (window - 2) // 2 // 4 * 4
    if overlap < 4 or overlap % 4 or overlap > most:
        raise InputError(f"--window-overlap: expected a multiple of 4 between 4 and {most}, found {overlap}")


def plan_windows(num_frames: int, window: int = DEFAULT_WINDOW, overlap: int = DEFAULT_OVERLAP) -> list[Window]:
    """Cut a clip of ``num_frames`` frames into model windows (see the module doc).

    Raises:
        InputError: ``window`` not 4k+1 (>= 13), ``overlap`` not a multiple of 4 in [4, (window - 2) / 2], no frames.
    """
    if num_frames < 1:
        raise InputError("the clip has no frames")
    check_windows(window, overlap)
    stride = window - 1 - overlap
    windows, start = [], 0
    while True:
        stop = min(start + window, num_frames)
        shared = windows[-1].stop - start if windows else 0
        windows.append(Window(start, stop, model_frames(stop - start), shared))
        if stop == num_frames:
            return windows
        start += stride
