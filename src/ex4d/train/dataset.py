"""Reader of the training pairs written by ``ex4d prepare`` (spec §9.2).

Layout: ``DATA/index.jsonl`` (one JSON object per line, at least ``{"clip": "<name>"}``) and per clip
``DATA/<clip>/target.mp4`` (the source clip V) and ``pair.npz`` with ``mask`` (T, H, W) bool (True = kept) and
optionally ``frames`` (T, H, W, 3) uint8 (exact V, used instead of the mp4), or ``mask.mp4`` (255 = kept) when the
npz is absent. ``cond.mp4`` is not read: cond = V ⊙ M is recomputed here from
the lossless mask, after the reference's per-frame erosion, which a stored video could not give.

An item is processed exactly like the generator's inputs (:func:`ex4d.inpaint.preprocess.prepare_videos`: frame
sampling, bilinear squash to height×width, erosion, binarisation, scaling), so training sees what inference sees.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ex4d.errors import InputError
from ex4d.inpaint.preprocess import prepare_videos

__all__ = ["PairDataset", "PairItem", "read_index"]


def read_index(data_dir) -> list[str]:
    """Clip names listed in ``DATA/index.jsonl``, in file order."""
    data_dir = Path(data_dir)
    index = data_dir / "index.jsonl"
    if not index.is_file():
        raise InputError(f"{data_dir}: no index.jsonl (make training pairs with ex4d prepare)")
    clips = []
    for n, line in enumerate(index.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            clips.append(str(entry["clip"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError(f"{index}:{n}: expected a JSON object with a 'clip' name") from None
    if not clips:
        raise InputError(f"{index}: lists no clips")
    return clips


@dataclass
class PairItem:
    """One preprocessed training pair, each tensor (3, T, H, W) float32.

    target: V·2 − 1 ∈ [−1, 1]; cond: (V·m)·2 − 1; mask: m·2 − 1 ∈ {−1, +1} (after erosion and binarisation).
    """

    clip: str
    target: torch.Tensor
    cond: torch.Tensor
    mask: torch.Tensor


class PairDataset:
    """Training pairs of one ``DATA`` folder, preprocessed to ``num_frames × height × width``."""

    def __init__(self, data_dir, num_frames: int = 49, height: int = 512, width: int = 512,
                 mask_erode: int | None = None, clips: list[str] | None = None):
        self.root = Path(data_dir)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: training data folder not found")
        self.clips = list(clips) if clips is not None else read_index(self.root)
        for clip in self.clips:
            folder = self.root / clip
            if not (folder / "target.mp4").is_file():
                raise InputError(f"{folder}: missing target.mp4")
            if not (folder / "pair.npz").is_file() and not (folder / "mask.mp4").is_file():
                raise InputError(f"{folder}: missing pair.npz (or mask.mp4)")
        self.num_frames, self.height, self.width = num_frames, height, width
        self.mask_erode = mask_erode

    def __len__(self) -> int:
        return len(self.clips)

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(target (T, H, W, 3) uint8, mask (T, H, W) bool)`` at the stored size."""
        from ex4d.io.video import load_video, probe_video

        folder = self.root / self.clips[i]
        target = None
        if (folder / "pair.npz").is_file():
            with np.load(folder / "pair.npz") as z:
                if "mask" not in z:
                    raise InputError(f"{folder / 'pair.npz'}: no 'mask' array")
                mask = z["mask"].astype(bool)
                if "frames" in z:  # exact frames (ex4d prepare --save-frames) rather than the lossy mp4
                    target = np.asarray(z["frames"], dtype=np.uint8)
        if target is None:
            info = probe_video(folder / "target.mp4")  # read at the stored size (load_video would pick its own)
            target = load_video(folder / "target.mp4", num_frames=None, height=info["height"],
                                width=info["width"]).frames
        if not (folder / "pair.npz").is_file():
            mask = load_video(folder / "mask.mp4", num_frames=None, height=info["height"],
                              width=info["width"]).frames[..., 0] > 127
        if mask.shape != target.shape[:3]:
            raise InputError(f"{folder}: mask {mask.shape} does not match target.mp4 {target.shape[:3]}")
        return target, mask

    def item(self, i: int, erode_seed: int = 0) -> PairItem:
        """Pair ``i`` preprocessed; the random erosion kernels are drawn with ``erode_seed``."""
        target, mask = self.raw(i)
        full = np.full(target.shape[:3], 255, np.uint8)
        kw = dict(height=self.height, width=self.width, num_frames=self.num_frames)
        video, _ = prepare_videos(target, full, mask_erode=0, **kw)
        cond, m = prepare_videos(target, mask.astype(np.uint8) * 255, mask_erode=self.mask_erode,
                                 erode_seed=erode_seed, **kw)
        return PairItem(self.clips[i], video[0], cond[0], m[0])

    def validation_inputs(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """What ``ex4d generate`` would get for pair ``i``: (colour·mask (T, H, W, 3) uint8, mask (T, H, W) uint8)."""
        target, mask = self.raw(i)
        return target * mask[..., None], mask.astype(np.uint8) * 255
