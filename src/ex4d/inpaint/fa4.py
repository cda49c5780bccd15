"""FlashAttention-4 from PyPI (``flash-attn-4``, extra ``fa4``) as the DiT's attention on Hopper and Blackwell.

diffusers ships an FA4 backend (``flash_4_hub``) whose kernel is downloaded from the Hub at first use, which ex4d's
machines cannot reach. The PyPI package holds the same kernels (CuTe-DSL code compiled at first use, no CUDA
toolchain needed), so ex4d puts its ``flash_attn_func`` into that backend's kernel slot and selects it on this model's
processors: diffusers' own FA4 wrapper then runs with the local kernel and never downloads anything. ex4d calls the
backend ``fa4``.

The kernel is wrapped in a PyTorch custom op (``ex4d::fa4_attention``) with a shape-only fake implementation, so
``torch.compile(fullgraph=True)`` of the DiT blocks (quality mode) traces through it instead of into the CuTe-DSL
launch code. Inference only: when autograd needs gradients the package's own autograd function runs eagerly.

Shapes: ``query`` (B, Lq, H, D), ``key``/``value`` (B, Lk, H, D) in bf16/fp16 on CUDA; output (B, Lq, H, D).
"""

from __future__ import annotations

import math

import torch

from ex4d.errors import InputError
from ex4d.utils.modules import module_found

__all__ = ["FA4_BACKEND", "fa4_installed", "fa4_supported", "install_fa4_kernel", "fa4_attention"]

#: ex4d's name of this backend (``--attention fa4``; ``SpeedSettings.attention``).
FA4_BACKEND = "fa4"

#: Compute-capability majors with an FA4 forward kernel in the public releases: 9 = Hopper (SM90), 10 = Blackwell.
_FA4_MAJORS = (9, 10)

_INSTALL_HINT = 'pip install "ex4d[fa4]"'


def fa4_installed() -> bool:
    """True when the ``flash-attn-4`` package (module ``flash_attn.cute``) can be imported."""
    return module_found("flash_attn.cute")


def fa4_supported(device: torch.device) -> bool:
    """True when FA4 is installed and ``device`` is a CUDA GPU with an FA4 kernel (Hopper or Blackwell)."""
    if device.type != "cuda" or not fa4_installed():
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major in _FA4_MAJORS


def _load_kernel():
    """``flash_attn.cute.flash_attn_func`` (returns ``(out, lse)``), imported on first use."""
    try:
        from flash_attn.cute import flash_attn_func
    except ImportError as exc:
        raise InputError(f"attention backend fa4 needs FlashAttention-4: {_INSTALL_HINT} ({exc})") from None
    return flash_attn_func


@torch.library.custom_op("ex4d::fa4_attention", mutates_args=())
def _fa4_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
    out = _load_kernel()(query, key, value, softmax_scale=scale, causal=False)
    return out[0] if isinstance(out, tuple) else out


@_fa4_op.register_fake
def _(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
    return query.new_empty(*query.shape[:-1], value.shape[-1])


def fa4_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, softmax_scale: float | None = None,
                  causal: bool = False, **_) -> torch.Tensor:
    """Non-causal attention by FA4, with the keyword signature of diffusers' ``flash_4_hub`` kernel slot.

    ``q`` (B, Lq, H, D), ``k``/``v`` (B, Lk, H, D) -> (B, Lq, H, D); ``softmax_scale`` defaults to 1/sqrt(D).
    """
    if causal:
        raise ValueError("ex4d's FA4 attention is non-causal (the DiT attends both ways)")
    scale = float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        out = _load_kernel()(q, k, v, softmax_scale=scale, causal=False)  # the package's autograd function
        return out[0] if isinstance(out, tuple) else out
    return torch.ops.ex4d.fa4_attention(q, k, v, scale)


def install_fa4_kernel():
    """Put :func:`fa4_attention` into diffusers' ``flash_4_hub`` kernel slot; returns that backend's name.

    Raises:
        InputError: FA4 is not installed.
    """
    if not fa4_installed():
        raise InputError(f"attention backend fa4 needs FlashAttention-4: {_INSTALL_HINT}")
    from diffusers.models.attention_dispatch import _HUB_KERNELS_REGISTRY, AttentionBackendName

    name = AttentionBackendName.FLASH_4_HUB
    # Once filled, diffusers treats the kernel as downloaded and never asks the Hub for it.
    _HUB_KERNELS_REGISTRY[name].kernel_fn = fa4_attention
    return name
