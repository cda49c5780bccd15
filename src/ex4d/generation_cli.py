"""Command-line flags of the generation stage, one argument group per options class, shared by ``ex4d generate``,
``ex4d run`` (and ``--manifest``) and ``ex4d ui``: ``add_*_args(parser)`` adds the group, ``*_from_args(args)``
builds the frozen options of :mod:`ex4d.generation_options` from the parsed flags."""

from __future__ import annotations

import argparse

from ex4d.errors import InputError
from ex4d.generation_options import (
    DTYPES,
    GROUP_OFFLOAD_TYPES,
    PARALLEL_MODES,
    GenerationOptions,
    ModelOptions,
    SamplingOptions,
)
from ex4d.utils.argtypes import positive_int


def add_model_args(parser: argparse.ArgumentParser, *, weights_help: str = "(default: the official hub copy)",
                   parallel: bool = False) -> argparse._ArgumentGroup:
    """The :class:`ModelOptions` flags: weights, memory, precision, speed (and ``--parallel`` when ``parallel``)."""
    g = parser.add_argument_group("generation model: weights, memory and speed (see docs/generation.md)")
    g.add_argument("--wan-dir", help=f"Wan2.1-I2V folder, diffusers or original layout {weights_help}")
    g.add_argument("--ex4d-ckpt", help=f"ex4d.ckpt or an ex4d adapter folder {weights_help}")
    g.add_argument("--offload", choices=("none", "model", "group"), default="none",
                   help="model: whole models moved to the GPU when used; group: the DiT block by block (least memory)")
    g.add_argument("--group-offload-type", choices=GROUP_OFFLOAD_TYPES, default="block_level")
    g.add_argument("--fp8", action="store_true", help="store the DiT's weights in fp8 (computed in --dtype)")
    g.add_argument("--dtype", choices=DTYPES, default=None, help="default: bf16 on CUDA, fp32 on CPU")
    g.add_argument("--speed", choices=("quality", "eager"), default="quality",
                   help="quality (default): batched CFG, fused LoRA, best attention, torch.compile on CUDA, same "
                        "output within bf16 rounding; eager: the reference's plain order (a baseline)")
    g.add_argument("--attention", default="auto",
                   help="DiT attention backend (auto, fa4, native, _native_cudnn, flash, ...)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the DiT blocks (default: on with --speed quality on CUDA)")
    g.add_argument("--cache", default=None,
                   help="approximate fast mode: fbc[:threshold] (FirstBlockCache) or taylorseer[:interval]")
    g.add_argument("--fp8-matmul", action="store_true",
                   help="approximate fast mode: fp8 matmuls in the DiT blocks (torchao, extra 'fp8'; CUDA GPUs of "
                        "compute capability >= 8.9): 1.4x faster steps on an H200")
    g.add_argument("--extra-lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help="fuse a Wan2.1-I2V-14B LoRA into the DiT (repeatable), e.g. a few-step distilled one "
                        "with --steps 4 --cfg 1 (approximate)")
    if parallel:
        g.add_argument("--parallel", type=positive_int, default=1,
                       help="GPUs sharing one video (context parallelism); launch with torchrun --nproc-per-node N")
        g.add_argument("--parallel-mode", choices=PARALLEL_MODES, default="ulysses",
                       help="ulysses/ring: split the DiT's tokens over the GPUs; cfg: one guidance branch per GPU (2)")
    return g


def add_sampling_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The :class:`SamplingOptions` flags."""
    g = parser.add_argument_group("generation sampling")
    g.add_argument("--steps", type=positive_int, default=25, help="denoising steps")
    g.add_argument("--cfg", type=float, default=5.0, help="classifier-free guidance scale")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--prompt", default=None, help="default: the reference's prompt")
    g.add_argument("--negative-prompt", default=None, help="default: the reference's negative prompt")
    g.add_argument("--mask-erode", type=int, default=None,
                   help="fixed erosion kernel size (0 = none); default: the reference's random 2–8, seeded")
    g.add_argument("--window", type=int, default=49,
                   help="frames per model window (4k+1; 49 as the reference, 81 accepted); longer clips are generated "
                        "as overlapping windows, each conditioned on the one before")
    g.add_argument("--window-overlap", type=int, default=8,
                   help="frames shared by consecutive windows after the first shared one (a multiple of 4)")
    return g


def add_generation_args(parser: argparse.ArgumentParser, **model_kwargs) -> None:
    """Both groups (:func:`add_model_args` with ``model_kwargs``, then :func:`add_sampling_args`)."""
    add_model_args(parser, **model_kwargs)
    add_sampling_args(parser)


def model_options_from_args(args: argparse.Namespace, resolve_weights: bool = True) -> ModelOptions:
    """:class:`ModelOptions` of :func:`add_model_args`' flags. ``resolve_weights``: a missing ``--wan-dir`` /
    ``--ex4d-ckpt`` becomes the official hub copy (else it stays None).

    Raises:
        InputError: an ``--extra-lora`` that is not a file, or the diffusion extra missing when it is needed.
    """
    model_dir, adapter = args.wan_dir, args.ex4d_ckpt
    if resolve_weights:
        try:
            from ex4d.inpaint.weights import resolve_ex4d_ckpt, resolve_wan_dir
        except ImportError as exc:
            raise InputError(f'generation needs the diffusion extra: pip install "ex4d[diffusion]" ({exc})') from None
        model_dir, adapter = resolve_wan_dir(model_dir), resolve_ex4d_ckpt(adapter)
    return ModelOptions(model_dir=model_dir, adapter=adapter, dtype=args.dtype, offload=args.offload,
                        group_offload_type=args.group_offload_type, fp8=args.fp8, speed=args.speed,
                        attention=args.attention, compile=args.compile, cache=args.cache,
                        fp8_matmul=args.fp8_matmul, extra_loras=_extra_loras(args.extra_lora),
                        parallel=getattr(args, "parallel", 1), parallel_mode=getattr(args, "parallel_mode", "ulysses"))


def sampling_options_from_args(args: argparse.Namespace) -> SamplingOptions:
    """:class:`SamplingOptions` of :func:`add_sampling_args`' flags."""
    return SamplingOptions(steps=args.steps, cfg=args.cfg, seed=args.seed, mask_erode=args.mask_erode,
                           prompt=args.prompt, negative_prompt=args.negative_prompt, window=args.window,
                           window_overlap=args.window_overlap)


def generation_options_from_args(args: argparse.Namespace, resolve_weights: bool = True) -> GenerationOptions:
    """Both option sets of :func:`add_generation_args`' flags."""
    return GenerationOptions(model_options_from_args(args, resolve_weights), sampling_options_from_args(args))



def _extra_loras(texts: list[str]) -> tuple:
    """``FILE[:SCALE]`` flags -> (path, scale) pairs (the diffusion extra is imported only when some are given)."""
    if not texts:
        return ()
    try:
        from ex4d.inpaint.extra_lora import parse_extra_lora_arg
    except ImportError as exc:
        raise InputError(f'--extra-lora needs the diffusion extra: pip install "ex4d[diffusion]" ({exc})') from None
    return tuple(parse_extra_lora_arg(text) for text in texts)
