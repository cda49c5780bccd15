"""The EX-4D rank-16 LoRA on the DiT (spec §7), with peft, in diffusers' ``WanTransformer3DModel`` naming.

The reference injects ``LoraConfig(r=16, lora_alpha=16, target_modules=[q, k, v, o, ffn.0, ffn.2])`` into
DiffSynth's ``WanModel``: per block, self- and cross-attention q/k/v/o and the two FFN linears (not
``k_img``/``v_img``). In diffusers names (spec §8):

=================================  ==========================================
reference (``ex4d.ckpt``)          diffusers module
=================================  ==========================================
``blocks.N.self_attn.{q,k,v}``     ``blocks.N.attn1.{to_q,to_k,to_v}``
``blocks.N.self_attn.o``           ``blocks.N.attn1.to_out.0``
``blocks.N.cross_attn.{q,k,v}``    ``blocks.N.attn2.{to_q,to_k,to_v}``
``blocks.N.cross_attn.o``          ``blocks.N.attn2.to_out.0``
``blocks.N.ffn.0``                 ``blocks.N.ffn.net.0.proj``
``blocks.N.ffn.2``                 ``blocks.N.ffn.net.2``
=================================  ==========================================

``ex4d.ckpt`` keys are ``<reference module>.lora_{A,B}.default.weight`` with no alpha (α = r, scale 1). Here a
LoRA is handled as ``{diffusers module: {"lora_A": A [r, in], "lora_B": B [out, r]}}``; the rank is read from
the tensors. Forward: y = W·x + b + (α/r)·B·(A·x).
"""

from __future__ import annotations

import re
from typing import Mapping

import torch
from peft import LoraConfig
from torch import nn

from ex4d.errors import InputError

__all__ = [
    "ADAPTER_NAME",
    "REFERENCE_TO_DIFFUSERS",
    "reference_to_diffusers",
    "diffusers_to_reference",
    "lora_target_modules",
    "parse_reference_lora",
    "lora_to_reference_state_dict",
    "lora_rank",
    "apply_lora",
    "load_lora",
    "get_lora",
    "has_lora",
]

#: peft adapter name used on our transformer (the reference's is "default"; it only appears in key names).
ADAPTER_NAME = "ex4d"

#: reference sub-module (after ``blocks.N.``) -> diffusers sub-module.
REFERENCE_TO_DIFFUSERS = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
_DIFFUSERS_TO_REFERENCE = {v: k for k, v in REFERENCE_TO_DIFFUSERS.items()}

_REF_KEY = re.compile(r"^blocks\.(\d+)\.(.+)\.(lora_[AB])(?:\.default)?\.weight$")


def reference_to_diffusers(module: str) -> str:
    """``blocks.3.self_attn.o`` -> ``blocks.3.attn1.to_out.0``."""
    m = re.match(r"^blocks\.(\d+)\.(.+)$", module)
    if not m or m.group(2) not in REFERENCE_TO_DIFFUSERS:
        raise KeyError(module)
    return f"blocks.{m.group(1)}.{REFERENCE_TO_DIFFUSERS[m.group(2)]}"


def diffusers_to_reference(module: str) -> str:
    """``blocks.3.attn1.to_out.0`` -> ``blocks.3.self_attn.o``."""
    m = re.match(r"^blocks\.(\d+)\.(.+)$", module)
    if not m or m.group(2) not in _DIFFUSERS_TO_REFERENCE:
        raise KeyError(module)
    return f"blocks.{m.group(1)}.{_DIFFUSERS_TO_REFERENCE[m.group(2)]}"


def lora_target_modules(transformer: nn.Module) -> list[str]:
    """The diffusers module names the reference's LoRA adapts in this transformer (10 per block)."""
    return [f"blocks.{i}.{sub}" for i in range(len(transformer.blocks)) for sub in REFERENCE_TO_DIFFUSERS.values()]


def parse_reference_lora(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """Split the LoRA part of an ``ex4d.ckpt`` flat dict into ``{diffusers module: {lora_A, lora_B}}``.

    Returns ``(lora, other_keys)``: keys that are not reference LoRA keys are returned untouched in ``other_keys``.
    Raises :class:`InputError` when a module has only one of A/B.
    """
    lora: dict[str, dict[str, torch.Tensor]] = {}
    other = []
    for key, value in state_dict.items():
        m = _REF_KEY.match(key)
        if not m or m.group(2) not in REFERENCE_TO_DIFFUSERS:
            other.append(key)
            continue
        module = f"blocks.{m.group(1)}.{REFERENCE_TO_DIFFUSERS[m.group(2)]}"
        lora.setdefault(module, {})[m.group(3)] = value
    half = [k for k, v in lora.items() if len(v) != 2]
    if half:
        raise InputError(f"LoRA weights incomplete: only one of lora_A/lora_B for {diffusers_to_reference(half[0])}")
    return lora, other


def lora_to_reference_state_dict(lora: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``{diffusers module: {lora_A, lora_B}}`` -> the reference's flat keys (``….lora_A.default.weight``)."""
    out = {}
    for module, ab in lora.items():
        ref = diffusers_to_reference(module)
        for which in ("lora_A", "lora_B"):
            out[f"{ref}.{which}.default.weight"] = ab[which]
    return out


def lora_rank(lora: Mapping[str, Mapping[str, torch.Tensor]]) -> int:
    """The rank, read from the tensors (A is [r, in], B is [out, r]); all modules must agree."""
    ranks = set()
    for module, ab in lora.items():
        a, b = ab["lora_A"], ab["lora_B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise InputError(
                f"LoRA weights of {module} have inconsistent shapes: A {tuple(a.shape)}, B {tuple(b.shape)}"
            )
        ranks.add(int(a.shape[0]))
    if len(ranks) != 1:
        raise InputError(f"LoRA weights have mixed ranks {sorted(ranks)}")
    return ranks.pop()


def has_lora(transformer: nn.Module, adapter_name: str = ADAPTER_NAME) -> bool:
    return any(adapter_name in getattr(m, "lora_A", {}) for m in transformer.modules())


def apply_lora(
    transformer: nn.Module,
    rank: int = 16,
    alpha: float | None = None,
    adapter_name: str = ADAPTER_NAME,
    target_modules: list[str] | None = None,
) -> None:
    """Inject the reference's LoRA with peft (kaiming-uniform A, zero B, so ΔW = 0 at start; α = r by default)."""
    targets = target_modules or lora_target_modules(transformer)
    config = LoraConfig(
        r=rank,
        lora_alpha=rank if alpha is None else alpha,
        init_lora_weights=True,
        lora_dropout=0.0,
        bias="none",
        target_modules=targets,
    )
    transformer.add_adapter(config, adapter_name=adapter_name)


def load_lora(transformer: nn.Module, lora: Mapping[str, Mapping[str, torch.Tensor]], adapter_name: str = ADAPTER_NAME) -> None:
    """Copy LoRA tensors into an injected adapter. Every adapted module must be covered, and nothing else."""
    modules = dict(transformer.named_modules())
    adapted = {name for name, m in modules.items() if adapter_name in getattr(m, "lora_A", {})}
    unknown = sorted(set(lora) - adapted)
    missing = sorted(adapted - set(lora))
    if unknown:
        raise InputError(
            f"LoRA weights for modules the transformer does not have: {', '.join(unknown[:3])}"
            + (f" (+{len(unknown) - 3} more)" if len(unknown) > 3 else "")
        )
    if missing:
        raise InputError(
            f"LoRA weights missing for {len(missing)} of {len(adapted)} adapted modules, e.g. "
            f"{diffusers_to_reference(missing[0])} ({missing[0]})"
        )
    with torch.no_grad():
        for name, ab in lora.items():
            layer = modules[name]
            for which in ("lora_A", "lora_B"):
                param = getattr(layer, which)[adapter_name].weight
                src = ab[which]
                if tuple(src.shape) != tuple(param.shape):
                    raise InputError(
                        f"LoRA tensor {diffusers_to_reference(name)}.{which} has shape {tuple(src.shape)}, "
                        f"the transformer needs {tuple(param.shape)}"
                    )
                param.copy_(src.to(param.dtype))


def get_lora(transformer: nn.Module, adapter_name: str = ADAPTER_NAME) -> dict[str, dict[str, torch.Tensor]]:
    """The adapter's tensors as ``{diffusers module: {lora_A, lora_B}}`` (detached CPU copies)."""
    out = {}
    for name, m in transformer.named_modules():
        if adapter_name in getattr(m, "lora_A", {}):
            out[name] = {
                "lora_A": m.lora_A[adapter_name].weight.detach().cpu().clone(),
                "lora_B": m.lora_B[adapter_name].weight.detach().cpu().clone(),
            }
    return out


def lora_alpha(transformer: nn.Module, adapter_name: str = ADAPTER_NAME) -> float | None:
    cfg = getattr(transformer, "peft_config", {}).get(adapter_name)
    return None if cfg is None else float(cfg.lora_alpha)
