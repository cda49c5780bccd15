"""Inference speed settings of the generation pipeline: quality mode (the default) and opt-in fast modes.

Quality mode keeps the reference's outputs within bf16 rounding:

* **batched CFG** — the conditional and unconditional branches run as one DiT call with batch 2;
* **attention backend** — the fastest available one for the DiT (``auto``: FlashAttention-4 from PyPI on Hopper and
  Blackwell GPUs when the ``fa4`` extra is installed (:mod:`ex4d.inpaint.fa4`), then FlashAttention-3, then
  FlashAttention-2 when installed, cuDNN attention on Hopper-class GPUs, else PyTorch's SDPA), set on this model's
  attention processors only (not diffusers' process-wide default);
* **LoRA fused** into the DiT weights (peft ``merge``), so the adapter costs nothing per step; undone by
  :func:`unfuse_lora` (e.g. before saving the adapter);
* **torch.compile** of the repeated DiT blocks (``compile_repeated_blocks``: one block compiled, reused 40 times);
* and, in the pipeline itself, no host synchronisation inside the denoising loop.

Fast modes change the outputs (labelled approximate in the docs and the benchmark):

* ``cache="fbc:<threshold>"`` — diffusers' FirstBlockCache: a step whose first-block residual changed by less than
  the threshold (relative L1) reuses the cached residual of the remaining blocks;
* ``cache="taylorseer[:<interval>]"`` — diffusers' TaylorSeer cache (lite mode): the DiT blocks run every
  ``interval`` steps (and the first 3), and in between the features entering the output projection are
  Taylor-extrapolated, so those steps cost almost nothing;
* ``fp8_matmul=True`` — the DiT blocks' linears as fp8 matmuls with row-wise scales (torchao;
  :mod:`ex4d.inpaint.quantize`), on GPUs with fp8 tensor cores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ex4d.errors import InputError
from ex4d.utils.modules import module_found

__all__ = ["SpeedSettings", "SPEED_MODES", "configure_speed", "pick_attention_backend", "set_model_attention_backend",
           "fuse_lora", "unfuse_lora", "parse_cache", "uncompile_blocks"]

logger = logging.getLogger(__name__)

SPEED_MODES = ("eager", "quality")


@dataclass
class SpeedSettings:
    """How the denoiser runs.

    Attributes:
        mode: ``"quality"`` (batched CFG, fused LoRA, best attention, compile on CUDA) or ``"eager"`` (the plain
            reference order: two DiT calls per step, unfused LoRA, PyTorch SDPA, no compile) — the baseline.
        attention: ``"auto"``, ``"fa4"`` (FlashAttention-4 from PyPI) or a diffusers backend name (``native``,
            ``_native_cudnn``, ``flash``, ``_flash_3``…).
        compile: ``None`` = on in quality mode on CUDA; ``True``/``False`` force it.
        compile_backend: torch.compile backend (``inductor``; tests use ``eager``).
        fuse_lora: merge the LoRA into the weights (quality mode; skipped with fp8 storage or offloading).
        cache: ``None`` (exact) or a fast mode: ``"fbc:0.05"``, ``"taylorseer:4"``.
        fp8_matmul: fp8 matmuls in the DiT blocks (approximate; quality mode with the LoRA fused; CUDA ≥ sm_89).
    """

    mode: str = "quality"
    attention: str = "auto"
    compile: bool | None = None
    compile_backend: str = "inductor"
    fuse_lora: bool = True
    cache: str | None = None
    fp8_matmul: bool = False


def pick_attention_backend(device: torch.device) -> str:
    """The fastest attention backend usable on ``device`` (see module doc)."""
    if device.type != "cuda":
        return "native"
    from ex4d.inpaint.fa4 import FA4_BACKEND, fa4_supported

    if fa4_supported(device):
        return FA4_BACKEND
    if module_found("flash_attn_interface"):
        return "_flash_3"
    # flash-attn 2's own module; ``flash_attn`` alone may be FA4's namespace package (``flash_attn.cute``).
    if module_found("flash_attn.flash_attn_interface"):
        return "flash"
    major, _ = torch.cuda.get_device_capability(device)
    return "_native_cudnn" if major >= 9 else "native"


def set_model_attention_backend(model: torch.nn.Module, backend: str) -> int:
    """Set ``backend`` on every attention processor of ``model`` only; returns how many were set.

    (diffusers' ``ModelMixin.set_attention_backend`` also changes the process-wide active backend.) ``"fa4"`` is
    diffusers' ``flash_4_hub`` backend with the kernel of the PyPI package (:mod:`ex4d.inpaint.fa4`).
    """
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    from ex4d.inpaint.fa4 import FA4_BACKEND, install_fa4_kernel

    if backend.lower() == FA4_BACKEND:
        name = install_fa4_kernel()  # its requirement (the Hub ``kernels`` package) does not apply
    else:
        try:
            name = AttentionBackendName(backend.lower())
        except ValueError:
            choices = ", ".join(sorted([FA4_BACKEND] + [b.value for b in AttentionBackendName]))
            raise InputError(f"attention backend: expected one of {choices}, found {backend!r}") from None
        _check_attention_backend_requirements(name)
    count = 0
    for module in model.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_attention_backend"):
            processor._attention_backend = name
            count += 1
    return count


def _lora_layers(model: torch.nn.Module):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def fuse_lora(model: torch.nn.Module) -> int:
    """Merge every peft LoRA layer of ``model`` into its base weight (in the base weight's dtype); returns the count."""
    layers = [m for m in _lora_layers(model) if not m.merged]
    for m in layers:
        m.merge()
    return len(layers)


def unfuse_lora(model: torch.nn.Module) -> int:
    """Undo :func:`fuse_lora` (subtracts the same delta; bf16 weights come back within rounding)."""
    layers = [m for m in _lora_layers(model) if m.merged]
    for m in layers:
        m.unmerge()
    return len(layers)


def parse_cache(spec: str | None):
    """``"fbc:0.05"`` → FirstBlockCacheConfig; ``"taylorseer:4"`` → TaylorSeerCacheConfig; ``None`` → None."""
    if spec is None or spec in ("", "none"):
        return None
    from diffusers.hooks import FirstBlockCacheConfig, TaylorSeerCacheConfig

    name, _, value = spec.partition(":")
    try:
        if name == "fbc":
            return FirstBlockCacheConfig(threshold=float(value or 0.05))
        if name == "taylorseer":
            # Lite mode: on predicted steps the whole block stack is skipped and the output projection's input
            # is Taylor-extrapolated (the default mode hooks attention only and, for Wan, computes every step).
            return TaylorSeerCacheConfig(cache_interval=int(value or 4), use_lite_mode=True)
    except ValueError:
        pass
    raise InputError(f"--cache: expected fbc[:threshold] or taylorseer[:interval], found {spec!r}")


def uncompile_blocks(model: torch.nn.Module) -> int:
    """Undo ``compile_repeated_blocks`` (``Module.compile``) on every block; returns how many were compiled."""
    count = 0
    for m in model.modules():
        if getattr(m, "_compiled_call_impl", None) is not None:
            m._compiled_call_impl = None
            count += 1
    return count


def _offloaded_or_cast(model: torch.nn.Module) -> bool:
    """True when weights are not plain device tensors (group offload hooks or fp8 layerwise casting)."""
    from diffusers.hooks import HookRegistry

    for m in model.modules():
        registry = getattr(m, "_diffusers_hook", None)
        if isinstance(registry, HookRegistry) and registry.hooks:
            return True
    return False


def configure_speed(pipe, settings: SpeedSettings = SpeedSettings(), device: torch.device | str | None = None):
    """Apply ``settings`` to ``pipe`` (after :func:`ex4d.inpaint.memory.configure_memory`); returns a summary dict."""
    if settings.mode not in SPEED_MODES:
        raise InputError(f"speed mode: expected one of {', '.join(SPEED_MODES)}, found {settings.mode!r}")
    transformer = pipe.transformer
    device = torch.device(device) if device is not None else next(transformer.parameters()).device
    quality = settings.mode == "quality"
    summary = {"mode": settings.mode}

    pipe.cfg_batch = quality
    summary["cfg_batch"] = quality

    backend = settings.attention
    if backend == "auto":
        backend = pick_attention_backend(device) if quality else "native"
    set_model_attention_backend(transformer, backend)
    summary["attention"] = backend

    fused = 0
    if quality and settings.fuse_lora:
        if _offloaded_or_cast(transformer):
            logger.info("LoRA not fused: the DiT is offloaded or stored in fp8")
        else:
            fused = fuse_lora(transformer)
    summary["lora_fused"] = fused

    if settings.fp8_matmul:
        from ex4d.inpaint.quantize import enable_fp8_matmuls

        if not quality or not settings.fuse_lora:
            raise InputError("fp8 matmuls run in --speed quality with the LoRA fused")
        if _offloaded_or_cast(transformer):
            raise InputError("fp8 matmuls cannot be combined with --fp8 weight storage or --offload group")
        summary["fp8_matmul"] = enable_fp8_matmuls(transformer, device)

    cache = parse_cache(settings.cache)
    if cache is not None:
        transformer.enable_cache(cache)
    summary["cache"] = settings.cache

    # Step caches decide in Python which blocks to skip; dynamo cannot trace their hooks, so no compile with them.
    compile_ = settings.compile if settings.compile is not None else (
        quality and device.type == "cuda" and cache is None)
    if compile_:
        transformer.compile_repeated_blocks(fullgraph=True, backend=settings.compile_backend)
    summary["compile"] = bool(compile_)
    return summary
