"""fp8 matmuls in the DiT (an opt-in fast mode; approximate): torchao's dynamic float8 quantisation.

Every ``nn.Linear`` inside the DiT's transformer blocks (self/cross-attention projections, the FFN) computes
``x @ Wᵀ`` as an fp8 (``float8_e4m3fn``) matrix product with **row-wise** scales: each weight row is quantised
once, each activation row on the fly (torchao ``Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())``).
On Hopper/Ada cards this doubles the tensor-core rate of the linear layers (≈ 2/3 of the forward's FLOPs at
49×512²); attention stays in bf16. Left in full precision: the patch embedding (where the condition tokens are
added), the time/text/image embedders, the output head, the norms and modulation tables — the small layers whose
errors reach every token.

Rounding: e4m3 keeps 3 mantissa bits, so each quantised operand carries up to 2⁻⁴ relative error; a layer's output
typically moves by 3–6 % (relative L2) — outputs differ visibly from quality mode (measured in BENCHMARKS.md).

Needs the ``fp8`` extra (``pip install 'ex4d[fp8]'``: torchao) and a CUDA GPU of compute capability ≥ 8.9 (Ada,
Hopper, Blackwell). The LoRA must be fused first (quality mode does), and the mode is for inference only: the
quantised weights cannot be unfused or trained. With ``--offload model`` the fp8 DiT (≈ 17 GB instead of 33) lives
on the CPU and moves to the GPU when it runs; it is quantised block by block on the GPU.
"""

from __future__ import annotations

import torch
from torch import nn

from ex4d.errors import InputError

__all__ = ["FP8_MIN_CAPABILITY", "fp8_matmul_supported", "check_fp8_matmul_setup", "select_fp8_linears",
           "enable_fp8_matmuls", "quantize_blockwise"]

FP8_MIN_CAPABILITY = (8, 9)


def fp8_matmul_supported(device: torch.device) -> bool:
    """True on a CUDA device with fp8 tensor cores (compute capability ≥ 8.9)."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= FP8_MIN_CAPABILITY


def _require_device(device: torch.device) -> None:
    if not fp8_matmul_supported(device):
        raise InputError(
            f"fp8 matmuls need a CUDA GPU of compute capability >= {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} "
            f"(Ada, Hopper or newer); this run is on {device}. Drop --fp8-matmul (or use --fp8 for fp8 weight storage)"
        )


def _require_torchao() -> None:
    from ex4d.utils.modules import module_found

    if not module_found("torchao"):
        raise InputError("fp8 matmuls need torchao: pip install 'ex4d[fp8]'")


def check_fp8_matmul_setup(device, dtype: torch.dtype, offload: str = "none", fp8_storage: bool = False) -> None:
    """Refuse, before any model loads, a set-up that :func:`enable_fp8_matmuls` cannot run (one-line InputError)."""
    _require_device(torch.device(device))
    _require_torchao()
    if dtype != torch.bfloat16:
        raise InputError(f"fp8 matmuls need the DiT in bf16 (--dtype bf16), found {str(dtype).removeprefix('torch.')}")
    if offload == "group" or fp8_storage:
        raise InputError("fp8 matmuls cannot be combined with --fp8 weight storage or --offload group "
                         "(--offload model works: the fp8 DiT moves to the GPU when it runs)")


def select_fp8_linears(transformer: nn.Module) -> list[str]:
    """Qualified names of the linears that :func:`enable_fp8_matmuls` quantises (see module doc).

    Only plain ``nn.Linear`` modules under ``transformer.blocks`` whose both sizes are multiples of 16 (the fp8
    kernels' alignment), and none inside a peft LoRA wrapper (``lora_A``/``lora_B``, whose rank is small).
    """
    names = []
    for name, module in transformer.named_modules():
        if not name.startswith("blocks.") or type(module) is not nn.Linear:
            continue
        if ".lora_" in name or module.in_features % 16 or module.out_features % 16:
            continue
        names.append(name)
    return names


def _unmerged_lora(transformer: nn.Module) -> list[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [n for n, m in transformer.named_modules()
            if isinstance(m, BaseTunerLayer) and m.active_adapters and not m.merged]


def enable_fp8_matmuls(transformer: nn.Module, device: torch.device | str | None = None) -> int:
    """Quantise the DiT's block linears to fp8 matmuls in place (see module doc); returns how many were quantised.

    Raises :class:`ex4d.errors.InputError` without torchao, on a device without fp8 tensor cores, or when a LoRA is
    still unfused (it would be quantised away).
    """
    device = torch.device(device) if device is not None else next(transformer.parameters()).device
    _require_device(device)
    _require_torchao()
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    pending = _unmerged_lora(transformer)
    if pending:
        raise InputError(f"fp8 matmuls need the LoRA fused first ({len(pending)} unmerged layers, e.g. {pending[0]})")
    chosen = set(select_fp8_linears(transformer))
    modules = dict(transformer.named_modules())
    other = {str(modules[n].weight.dtype).removeprefix("torch.") for n in chosen} - {"bfloat16"}
    if other:
        raise InputError(f"fp8 matmuls need the DiT in bf16 (--dtype bf16), found {', '.join(sorted(other))}")
    # activation_value_lb: a row of zeros (e.g. zero-padded text tokens through bias-free weights) would get scale 0
    # and quantise to 0/0 = NaN; a tiny floor on the row's max keeps it 0 and leaves every other row unchanged.
    # set_inductor_config=False: torchao would otherwise change process-wide settings (TF32 matmuls, coordinate-descent
    # tuning, which made the first compile of the DiT take 200 s instead of 20 s on an H200).
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), activation_value_lb=1e-12,
                                                       set_inductor_config=False)
    home = next(modules[n].weight.device for n in sorted(chosen)) if chosen else None
    if home is not None and home.type != device.type:
        # Offloaded DiT (--offload model): quantise block by block on the GPU (the row maxima are a GPU job; the
        # whole bf16 DiT would not fit a 24 GB card) and put each block back where it lives.
        quantize_blockwise(transformer, config, chosen, device)
    else:
        quantize_(transformer, config, filter_fn=lambda module, name: name in chosen)
    return len(chosen)


def quantize_blockwise(transformer: nn.Module, config, chosen: set[str], work_device: torch.device) -> None:
    """torchao ``quantize_`` of the ``chosen`` linears one DiT block at a time on ``work_device``; each block returns
    to the device its weights came from."""
    from torchao.quantization import quantize_

    for index, block in enumerate(transformer.blocks):
        prefix = f"blocks.{index}."
        names = {n[len(prefix):] for n in chosen if n.startswith(prefix)}
        if not names:
            continue
        home = next(block.parameters()).device
        block.to(work_device)
        quantize_(block, config, filter_fn=lambda module, name, names=names: name in names)
        block.to(home)
