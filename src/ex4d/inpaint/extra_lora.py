"""Fuse a third-party LoRA for Wan2.1-I2V-14B into the DiT weights (e.g. a few-step distilled LoRA: 4–8 steps, no CFG).

Accepted layouts (one ``.safetensors`` file): the original/ComfyUI/lightx2v names
(``[diffusion_model.]blocks.N.self_attn.q.lora_down.weight`` / ``lora_up.weight`` [+ ``.alpha``], or
``lora_A``/``lora_B``), optional full deltas ``<module>.diff`` (weight) and ``<module>.diff_b`` (bias), and the
diffusers names (``[transformer.]blocks.N.attn1.to_q.lora_A.weight``). The update W ← W + s·(α/r)·B·A is applied in
float32 and stored in the weight's dtype; the EX-4D LoRA (peft) stays separate on top, as in the reference's
stacking of adapters. Approximate by construction: a distilled LoRA changes the model.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ex4d.errors import InputError
from ex4d.inpaint.convert import dit_key, strip_prefix

__all__ = ["fuse_extra_lora", "parse_extra_lora_arg"]

_LORA = re.compile(r"^(?P<module>.+?)\.(?P<kind>lora_down|lora_up|lora_A|lora_B)(?:\.default)?\.weight$")
_ALPHA = re.compile(r"^(?P<module>.+?)\.alpha$")
_DIFF = re.compile(r"^(?P<module>.+?)\.(?P<kind>diff|diff_b)$")


def parse_extra_lora_arg(text: str) -> tuple[Path, float]:
    """``path.safetensors[:scale]`` → (path, scale)."""
    path, scale = text, 1.0
    head, sep, tail = text.rpartition(":")
    if sep and head and re.fullmatch(r"[-+]?\d*\.?\d+(e[-+]?\d+)?", tail):
        path, scale = head, float(tail)
    if not Path(path).is_file():
        raise InputError(f"--extra-lora: expected a .safetensors file, found no file {path!r}")
    return Path(path), scale


def _module_param(transformer: nn.Module, module: str, param: str) -> torch.Tensor:
    """The diffusers parameter for an original- or diffusers-named module (through a peft wrapper)."""
    name = dit_key(f"{module}.{param}")
    name = name if name is not None else f"{module}.{param}"
    mod_name, _, pname = name.rpartition(".")
    try:
        mod = transformer.get_submodule(mod_name)
    except AttributeError:
        raise InputError(f"--extra-lora: expected DiT module names, found {module!r}") from None
    mod = getattr(mod, "base_layer", mod)
    tensor = getattr(mod, pname, None)
    if not isinstance(tensor, torch.Tensor):
        raise InputError(f"--extra-lora: module {module!r} has no {pname}")
    return tensor


@torch.no_grad()
def fuse_extra_lora(transformer: nn.Module, path: str | Path, scale: float = 1.0) -> int:
    """Add the LoRA in ``path`` (times ``scale``) to ``transformer``'s weights; returns the number of tensors updated."""
    from safetensors.torch import load_file

    try:
        sd = load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
        raise InputError(f"--extra-lora: expected a readable .safetensors file, found {path} ({exc})") from None
    sd = strip_prefix(sd, ("diffusion_model.", "model.diffusion_model.", "transformer.", "model."))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, float] = {}
    diffs: list[tuple[str, str, torch.Tensor]] = []
    unknown = []
    for key, value in sd.items():
        if m := _LORA.match(key):
            kind = {"lora_down": "A", "lora_A": "A", "lora_up": "B", "lora_B": "B"}[m["kind"]]
            pairs.setdefault(m["module"], {})[kind] = value
        elif m := _ALPHA.match(key):
            alphas[m["module"]] = float(value)
        elif m := _DIFF.match(key):
            diffs.append((m["module"], "weight" if m["kind"] == "diff" else "bias", value))
        else:
            unknown.append(key)
    if unknown:
        raise InputError(f"--extra-lora: expected LoRA tensors, found {len(unknown)} others, e.g. {unknown[:2]}")
    if not pairs and not diffs:
        raise InputError(f"--extra-lora: expected LoRA tensors, found none in {path}")
    updated = 0
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise InputError(f"--extra-lora: {module} has only lora_{'down' if 'A' in ab else 'up'}")
        a, b = ab["A"].float(), ab["B"].float()
        rank = a.shape[0]
        weight = _module_param(transformer, module, "weight")
        delta = (b.flatten(1) @ a.flatten(1)) * (scale * alphas.get(module, rank) / rank)
        if delta.shape != weight.shape:
            raise InputError(f"--extra-lora: {module} is {tuple(delta.shape)}, the DiT's is {tuple(weight.shape)}: "
                             "a LoRA for another model?")
        weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))
        updated += 1
    for module, pname, value in diffs:
        target = _module_param(transformer, module, pname)
        if value.shape != target.shape:
            raise InputError(f"--extra-lora: {module}.{pname} delta is {tuple(value.shape)}, expected {tuple(target.shape)}")
        target.copy_((target.float() + scale * value.float().to(target.device)).to(target.dtype))
        updated += 1
    return updated
