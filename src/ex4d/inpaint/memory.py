"""Placing the pipeline on the device: all on the device, model offload, group offload, fp8 weight storage.

``offload``:

* ``"none"``: every model on the device (``pipe.to(device)``). The 14B DiT alone is ≈ 33 GB in bf16.
* ``"model"``: diffusers' ``enable_model_cpu_offload``: each model is moved to the device when it runs and back
  when the next one starts, so the peak is about the DiT + activations.
* ``"group"``: diffusers' group offloading (``enable_group_offload``) of the DiT (``group_offload_type``
  ``"block_level"``: ``num_blocks_per_group`` DiT blocks at a time, or ``"leaf_level"``: one layer at a time) and
  of the umT5 text encoder (always leaf level: its layers are not a top-level ``ModuleList``). On CUDA the copies
  run on a side stream, overlapping with compute (``use_stream``); the offloaded weights are kept in pinned host
  memory. The VAE, the CLIP image encoder and the condition encoder (≈ 1 GB together) stay on the device.

``fp8=True``: the DiT's linear/conv weights are *stored* as ``float8_e4m3fn`` and cast to the compute dtype layer
by layer (diffusers' ``enable_layerwise_casting``), halving the DiT's weight memory. Skipped (kept in the compute
dtype) are diffusers' defaults for Wan — the patch embedding (where the condition-encoder hook sits), the condition
embedders, all norms and the fp32 modulation tables — and all peft LoRA layers (``lora_A``/``lora_B``), so the
EX-4D LoRA is applied in full precision on top of the fp8-rounded base weights. This is a weight-rounding
approximation, not the reference's bf16 numerics.
"""

from __future__ import annotations

import logging

import torch

from ex4d.errors import InputError

__all__ = ["OFFLOAD_MODES", "GROUP_OFFLOAD_TYPES", "enable_fp8", "configure_memory"]

logger = logging.getLogger(__name__)

OFFLOAD_MODES = ("none", "model", "group")
GROUP_OFFLOAD_TYPES = ("block_level", "leaf_level")


def enable_fp8(transformer, compute_dtype: torch.dtype | None = None,
               storage_dtype: torch.dtype | None = None) -> None:
    """Layerwise fp8 weight storage on the DiT (see module doc); ``compute_dtype`` defaults to the DiT's dtype."""
    storage_dtype = storage_dtype or getattr(torch, "float8_e4m3fn", None)
    if storage_dtype is None:
        raise InputError("fp8 weight storage needs a PyTorch with torch.float8_e4m3fn (2.1 or newer)")
    compute_dtype = compute_dtype or transformer.dtype
    transformer.enable_layerwise_casting(storage_dtype=storage_dtype, compute_dtype=compute_dtype)


def configure_memory(
    pipe,
    device: str | torch.device,
    offload: str = "none",
    fp8: bool = False,
    group_offload_type: str = "block_level",
    num_blocks_per_group: int = 1,
    use_stream: bool | None = None,
    compute_dtype: torch.dtype | None = None,
):
    """Apply ``offload`` (none | model | group) and ``fp8`` to ``pipe`` for running on ``device``; returns ``pipe``.

    Call once, on a pipeline that has no offloading yet (its models on the CPU or already on ``device``).
    ``use_stream`` (group offload only) defaults to True on CUDA.
    """
    device = torch.device(device)
    if offload not in OFFLOAD_MODES:
        raise InputError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
    if group_offload_type not in GROUP_OFFLOAD_TYPES:
        raise InputError(f"group_offload_type must be one of {', '.join(GROUP_OFFLOAD_TYPES)}, got {group_offload_type!r}")
    if num_blocks_per_group < 1:
        raise InputError(f"num_blocks_per_group must be >= 1, got {num_blocks_per_group}")
    if fp8:
        enable_fp8(pipe.transformer, compute_dtype)
    if offload == "none":
        pipe.to(device)
    elif offload == "model":
        pipe.enable_model_cpu_offload(device=device)  # (on a CPU device the hooks run but move nothing)
    else:
        from diffusers.hooks import apply_group_offloading

        cpu = torch.device("cpu")
        stream = (device.type == "cuda") if use_stream is None else bool(use_stream)
        for name in ("vae", "image_encoder", "condition_encoder"):
            module = getattr(pipe, name, None)
            if module is not None:
                module.to(device)
        kw = dict(onload_device=device, offload_device=cpu, use_stream=stream)
        pipe.transformer.to(cpu)
        pipe.transformer.enable_group_offload(
            offload_type=group_offload_type,
            num_blocks_per_group=num_blocks_per_group if group_offload_type == "block_level" else None,
            **kw,
        )
        if pipe.text_encoder is not None:
            pipe.text_encoder.to(cpu)
            apply_group_offloading(pipe.text_encoder, offload_type="leaf_level", **kw)
    return pipe
