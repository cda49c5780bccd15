"""One video on several GPUs: diffusers' context parallelism for the DiT, launched with ``torchrun``.

Every rank loads the whole pipeline and runs the same call with the same seed; inside the DiT the token sequence is
split over the ranks (``ulysses``: an all-to-all swaps sequence and head shards around attention, so each rank
attends over the full sequence for 1/N of the heads; ``ring``: key/value shards pass around a ring), or, with
``cfg`` on 2 ranks, each rank runs one classifier-free-guidance branch and the two velocities are exchanged once
per step. The encoders and the VAE run on every rank; only rank 0 writes files.

    torchrun --nproc-per-node 4 -m ex4d.cli generate ... --parallel 4
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ex4d.errors import InputError

__all__ = ["ParallelContext", "PARALLEL_MODES", "init_parallel", "enable_context_parallel", "enable_cfg_parallel",
           "enable_parallel", "shutdown_parallel"]

PARALLEL_MODES = ("ulysses", "ring", "cfg")
# Attention backends of diffusers that support context parallelism, fastest first.
CP_BACKENDS = ("_flash_3", "flash", "_native_cudnn", "native")


@dataclass
class ParallelContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_parallel(parallel: int, device: str | torch.device | None = None) -> ParallelContext:
    """Join the process group that ``torchrun`` set up (NCCL on CUDA, gloo on CPU); ``parallel`` must equal its size.

    ``parallel == 1`` without torchrun returns a single-process context and initialises nothing.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if parallel == 1 and world == 1:
        return ParallelContext(0, 1, torch.device(device) if device is not None else
                               torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if world != parallel:
        raise InputError(f"--parallel: expected the launch to have {parallel} processes "
                         f"(torchrun --nproc-per-node {parallel}), found WORLD_SIZE={world}")
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    use_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise InputError(f"--parallel {parallel}: this machine has {torch.cuda.device_count()} GPUs")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
    return ParallelContext(rank, world, dev)


def enable_context_parallel(transformer, ctx: ParallelContext, mode: str = "ulysses") -> str:
    """Shard the DiT's sequence over ``ctx.world_size`` ranks; returns the attention backend used.

    The attention backend already set on the model (see :mod:`ex4d.inpaint.speed`) is kept when it supports context
    parallelism, else the fastest one that does is chosen.
    """
    if ctx.world_size == 1:
        return ""
    if mode not in PARALLEL_MODES:
        raise InputError(f"--parallel-mode: expected one of {', '.join(PARALLEL_MODES)}, found {mode!r}")
    heads = transformer.config.num_attention_heads
    if mode == "ulysses" and heads % ctx.world_size:
        raise InputError(f"--parallel {ctx.world_size}: ulysses needs the {heads} attention heads to divide evenly; "
                         "use --parallel-mode ring")
    from diffusers import ContextParallelConfig
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    from ex4d.inpaint.speed import set_model_attention_backend

    def cp_capable(name) -> bool:
        return name is not None and _AttentionBackendRegistry._is_context_parallel_available(AttentionBackendName(name))

    # The ring merges partial attentions with their log-sum-exp, which PyTorch's plain SDPA does not return.
    allowed = [b for b in CP_BACKENDS if not (mode == "ring" and b == "native")]
    procs = [m.processor for m in transformer.modules() if hasattr(getattr(m, "processor", None), "_attention_backend")]
    current = procs[0]._attention_backend if procs else None
    current = getattr(current, "value", current)
    if not (cp_capable(current) and current in allowed):
        from ex4d.utils.modules import module_found

        # flash-attn 2's own module: a bare ``flash_attn`` may be FA4's namespace package (no context parallelism).
        needs = {"_flash_3": "flash_attn_interface", "flash": "flash_attn.flash_attn_interface"}
        cuda = ctx.device.type == "cuda"
        found = [b for b in allowed if cp_capable(b) and (cuda or b == "native")
                 and (b not in needs or module_found(needs[b]))]
        if not found:
            raise InputError(f"--parallel-mode ring: expected CUDA devices (cuDNN or flash attention), found "
                             f"{ctx.device.type}; use --parallel-mode ulysses")
        current = found[0]
        set_model_attention_backend(transformer, current)
    degree = {"ulysses_degree" if mode == "ulysses" else "ring_degree": ctx.world_size}
    transformer.enable_parallelism(config=ContextParallelConfig(**degree))
    return str(getattr(current, "value", current))


def enable_cfg_parallel(pipe, ctx: ParallelContext) -> None:
    """Split the two CFG branches over 2 ranks: rank 0 the conditional, rank 1 the unconditional one."""
    if ctx.world_size != 2:
        raise InputError(f"--parallel-mode cfg: expected --parallel 2 (one rank per guidance branch), found "
                         f"{ctx.world_size}")
    pipe.cfg_parallel = ctx


def enable_parallel(pipe, ctx: ParallelContext, mode: str = "ulysses") -> str:
    """:func:`enable_cfg_parallel` for ``mode == "cfg"``, else :func:`enable_context_parallel` of the DiT."""
    if mode == "cfg":
        enable_cfg_parallel(pipe, ctx)
        return "cfg"
    return enable_context_parallel(pipe.transformer, ctx, mode)


def shutdown_parallel(ctx: ParallelContext) -> None:
    if ctx.world_size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
