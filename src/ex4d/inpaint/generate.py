"""``generate``: the EX-4D generation stage from files to files (what ``ex4d generate`` should call)."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

import torch

from ex4d.errors import InputError
from ex4d.inpaint.memory import GROUP_OFFLOAD_TYPES, OFFLOAD_MODES, configure_memory
from ex4d.inpaint.preprocess import reference_frame_indices, round_num_frames, round_size
from ex4d.inpaint.speed import SpeedSettings, configure_speed
from ex4d.inpaint.windows import WindowStore, generate_windows
from ex4d.stages import fingerprint, stable_hash
from ex4d.utils.windows import DEFAULT_OVERLAP, DEFAULT_WINDOW, check_windows
from ex4d.inpaint.prompts import (
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_HEIGHT,
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_NUM_INFERENCE_STEPS,
    DEFAULT_PROMPT,
    DEFAULT_SEED,
    DEFAULT_WIDTH,
)

__all__ = ["generate", "load_generation_pipeline", "check_generation_setup", "default_dtype"]

logger = logging.getLogger(__name__)


def _window_folder(output_video) -> Path:
    """Where the finished windows of ``output_video`` are kept until it is written (a hidden sibling folder)."""
    out = Path(output_video)
    return out.with_name(f".{out.name}.windows")


def default_dtype(device: str | torch.device) -> torch.dtype:
    """The DiT's dtype when none is given: bfloat16 on CUDA, float32 elsewhere."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def check_generation_setup(device: str | torch.device, *, torch_dtype: torch.dtype | None = None,
                           offload: str = "none", fp8: bool = False, speed: SpeedSettings | None = None) -> None:
    """What :func:`load_generation_pipeline` refuses before loading anything (one-line InputError), callable on its
    own so that a longer job (``ex4d run``, the web app) can fail before its earlier stages."""
    if speed is not None and speed.fp8_matmul:
        from ex4d.inpaint.quantize import check_fp8_matmul_setup

        check_fp8_matmul_setup(device, torch_dtype or default_dtype(device), offload, fp8)


def load_generation_pipeline(model_dir, adapter, device: str | torch.device, *, torch_dtype: torch.dtype | None = None,
                             offload: str = "none", fp8: bool = False, group_offload_type: str = "block_level",
                             speed: SpeedSettings | None = None, extra_loras=()):
    """Wan2.1-I2V + the EX-4D adapter, placed and configured for generating on ``device``: third-party LoRAs
    fused, memory (:func:`~ex4d.inpaint.memory.configure_memory`) and speed
    (:func:`~ex4d.inpaint.speed.configure_speed`) settings applied. ``torch_dtype`` defaults to bfloat16 on CUDA,
    float32 elsewhere."""
    from ex4d.inpaint.loading import load_pipeline

    if model_dir is None or adapter is None:
        raise InputError("generate needs model_dir (Wan2.1-I2V folder) and adapter (ex4d.ckpt)")
    torch_dtype = torch_dtype or default_dtype(device)
    check_generation_setup(device, torch_dtype=torch_dtype, offload=offload, fp8=fp8, speed=speed)
    pipe = load_pipeline(model_dir, adapter, torch_dtype=torch_dtype)
    if extra_loras:
        from ex4d.inpaint.extra_lora import fuse_extra_lora

        for lora_path, lora_scale in extra_loras:
            fuse_extra_lora(pipe.transformer, lora_path, lora_scale)
    configure_memory(pipe, device, offload=offload, fp8=fp8, group_offload_type=group_offload_type,
                     compute_dtype=torch_dtype)
    configure_speed(pipe, speed or SpeedSettings(), device)
    return pipe


def generate(
    color_video: str | os.PathLike,
    mask_video: str | os.PathLike,
    output_video: str | os.PathLike,
    *,
    model_dir: str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
    pipe=None,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    num_frames: int | None = None,
    num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    seed: int = DEFAULT_SEED,
    mask_erode: int | None = None,
    prompt: str = DEFAULT_PROMPT,
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
    fps: float | None = None,
    npz: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    torch_dtype: torch.dtype | None = None,
    offload: str = "none",
    fp8: bool = False,
    group_offload_type: str = "block_level",
    cpu_offload: bool = False,
    speed: SpeedSettings | None = None,
    parallel: int = 1,
    parallel_mode: str = "ulysses",
    extra_loras: list | tuple = (),
    window: int = DEFAULT_WINDOW,
    window_overlap: int = DEFAULT_OVERLAP,
    resume_key: str | None = None,
) -> Path:
    """Complete the DW-Mesh renders ``color_video`` + ``mask_video`` into ``output_video`` (mp4).

    Args:
        color_video, mask_video: the renders (``color_<cam>.mp4``, ``mask_<cam>.mp4``), same length and size.
        output_video: destination ``.mp4``, written atomically.
        model_dir, adapter: Wan2.1-I2V folder (diffusers or original layout) and ``ex4d.ckpt`` / our adapter
            folder (ignored when ``pipe`` is given).
        height, width: rounded up to multiples of 16 (with a warning), as the reference.
        num_frames: ``None`` (default): every frame of the renders, any length — one model call for a clip of up
            to ``window`` frames, overlapping windows beyond (:mod:`ex4d.inpaint.windows`); the output has exactly
            the renders' frame count. An integer T selects frames as the reference does: T not 4k+1 →
            ⌊(T+2)/4⌋·4+1 (with a warning), inputs sampled at ⌊linspace(0, N−1, T)⌋ or padded with their last frame
            when shorter (``num_frames=49`` is the reference's behaviour).
        fps: the output's frame rate; ``None`` = the colour video's own (the reference writes 15).
        window, window_overlap: frames per model window (4k+1; 49 as the reference, 81 accepted) and frames shared
            by consecutive windows besides the first shared one (a multiple of 4); see :mod:`ex4d.utils.windows`.
        resume_key: identity of the model and settings for resuming an interrupted multi-window generation
            (finished windows are kept beside the output until it is written); default: the weights'
            fingerprints when ``generate`` loads them, and no resuming when ``pipe`` is given without it.
        mask_erode: fixed erosion kernel (0 = none); ``None`` = the reference's random 2…8, seeded with ``seed``.
        npz: optional path of an ``.npz`` holding the exact output ``frames`` (T, H, W, 3) uint8.
        device, torch_dtype: default CUDA + bfloat16 when available, else CPU + float32.
        offload: ``"none"`` (everything on the device), ``"model"`` (diffusers' model CPU offload) or ``"group"``
            (group offloading of the DiT, ``group_offload_type`` block_level | leaf_level, and of the text encoder);
            see :mod:`ex4d.inpaint.memory`.
        fp8: store the DiT's linear weights as float8_e4m3fn, computing in ``torch_dtype`` (layerwise casting;
            the LoRA, norms, embeddings and the patch embedding stay in full precision).
        cpu_offload: deprecated alias of ``offload="model"``.
        speed: :class:`ex4d.inpaint.speed.SpeedSettings` (default: quality mode — batched CFG, fused LoRA, the
            fastest attention backend, torch.compile on CUDA; same outputs within bf16 rounding).
        parallel: GPUs sharing this video (``parallel_mode`` ulysses | ring: context parallelism; cfg: one guidance
            branch per GPU, 2 GPUs; launch with
            ``torchrun --nproc-per-node N``; see :mod:`ex4d.inpaint.parallel`). Only rank 0 writes.
        extra_loras: ``(path, scale)`` pairs of third-party LoRAs fused into the DiT before the EX-4D adapter runs,
            e.g. a few-step distilled LoRA (then use 4–8 steps and ``guidance_scale=1``); see
            :mod:`ex4d.inpaint.extra_lora`.
        The memory and speed options apply only when ``generate`` loads the pipeline (``pipe`` is None); configure
        a given pipeline with :func:`ex4d.inpaint.memory.configure_memory` and :func:`ex4d.inpaint.speed.configure_speed`.

    Returns:
        The path of the written video.
    """
    from ex4d.io.atomic import save_npz_atomic
    from ex4d.io.video import load_video, save_video

    if offload not in OFFLOAD_MODES:
        raise InputError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
    if group_offload_type not in GROUP_OFFLOAD_TYPES:
        raise InputError(f"group_offload_type must be one of {', '.join(GROUP_OFFLOAD_TYPES)}, got {group_offload_type!r}")
    given_pipe = pipe is not None
    check_windows(window, window_overlap)  # before anything loads
    rounded_frames = None if num_frames is None else round_num_frames(int(num_frames))
    if num_frames is not None and rounded_frames != num_frames:
        logger.warning("num_frames %d is not 4k+1; using %d as the reference does", num_frames, rounded_frames)
    h, w = round_size(int(height), int(width))
    if (h, w) != (height, width):
        logger.warning("height/width %dx%d are not multiples of 16; using %dx%d as the reference does",
                       height, width, h, w)

    color = load_video(color_video, num_frames=None, height=h, width=w)
    mask = load_video(mask_video, num_frames=None, height=h, width=w)
    if color.num_frames != mask.num_frames:
        raise InputError(
            f"{mask_video}: {mask.num_frames} frames, but {color_video} has {color.num_frames}"
        )

    ctx = None
    if parallel > 1:
        from ex4d.inpaint.parallel import init_parallel

        if pipe is not None or offload != "none" or cpu_offload:
            raise InputError("--parallel: expected --offload none and a pipeline loaded by generate")
        ctx = init_parallel(parallel, device)
        device = ctx.device

    if pipe is None:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        speed = speed or SpeedSettings()
        if ctx is not None and speed.compile is None:
            speed = dataclasses.replace(speed, compile=False)  # compiled blocks + collectives: opt-in only
        pipe = load_generation_pipeline(model_dir, adapter, device, torch_dtype=torch_dtype,
                                        offload="model" if cpu_offload and offload == "none" else offload,
                                        fp8=fp8, group_offload_type=group_offload_type, speed=speed,
                                        extra_loras=extra_loras)
        if ctx is not None:
            from ex4d.inpaint.parallel import enable_parallel

            enable_parallel(pipe, ctx, parallel_mode)

    call = dict(prompt=prompt, negative_prompt=negative_prompt, height=h, width=w,
                num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, mask_erode=mask_erode,
                output_type="np")
    color_frames, mask_frames = color.frames, mask.frames
    if num_frames is not None and rounded_frames <= window:
        # the reference's frame selection and padding, in the pipeline itself (one model call)
        frames = pipe(color_frames, mask_frames, num_frames=rounded_frames, seed=seed, **call).frames
    else:
        if num_frames is not None:  # the reference's selection, then windows
            idx = reference_frame_indices(len(color_frames), rounded_frames)
            color_frames, mask_frames = color_frames[idx], mask_frames[idx]
        store = None
        if resume_key is None and model_dir is not None and adapter is not None and not given_pipe:
            resume_key = stable_hash({"model": fingerprint(model_dir), "adapter": fingerprint(adapter),
                                      "loras": [(fingerprint(p), s) for p, s in extra_loras], "dtype": str(torch_dtype),
                                      "fp8": fp8, "speed": speed})
        if resume_key is not None:
            settings = {"resume_key": resume_key, "call": call, "seed": seed, "window": window,
                        "overlap": window_overlap}
            store = WindowStore(_window_folder(output_video),
                                WindowStore.digest(color_frames, mask_frames, settings))

        def run_window(c, m, n, window_seed):
            return pipe(c, m, num_frames=n, seed=window_seed, **call).frames

        frames = generate_windows(run_window, color_frames, mask_frames, seed=seed, window=window,
                                  overlap=window_overlap, store=store)
    out = Path(output_video)
    if ctx is None or ctx.is_main:
        out = save_video(output_video, frames, fps=color.fps if fps is None else fps)
        if npz is not None:
            save_npz_atomic(npz, frames=frames)
        shutil.rmtree(_window_folder(output_video), ignore_errors=True)  # the windows are in the output now
    if ctx is not None:
        from ex4d.inpaint.parallel import shutdown_parallel

        shutdown_parallel(ctx)
    return out
