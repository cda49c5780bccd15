"""Worker of test_parallel: one rank of a 2-process context-parallel generation on the CPU (gloo)."""

import os
import sys

import torch


def run_rank(rank: int, world: int, port: int, wan: str, ckpt: str, out: str, mode: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    # A CPU-only torch reports 0 accelerators, and diffusers places rank r on device r % count.
    torch.accelerator.device_count = lambda: 1
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the checkout
    from tests.inpaint.tiny import tiny_videos

    from ex4d.inpaint.loading import load_pipeline
    from ex4d.inpaint.parallel import enable_parallel, init_parallel, shutdown_parallel
    from ex4d.inpaint.speed import SpeedSettings, configure_speed

    ctx = init_parallel(world, "cpu")
    pipe = load_pipeline(wan, ckpt)
    pipe.set_progress_bar_config(disable=True)
    configure_speed(pipe, SpeedSettings(), "cpu")
    enable_parallel(pipe, ctx, mode)
    latents = pipe(*tiny_videos(5, 32, 32), height=32, width=32, num_inference_steps=2, mask_erode=2,
                   output_type="latent").frames
    torch.save(latents, os.path.join(out, f"rank{rank}.pt"))
    shutdown_parallel(ctx)


def run_rank_cuda(wan: str, ckpt: str, out: str, mode: str) -> None:
    """One rank under torchrun on CUDA (bf16), as ``ex4d generate --parallel`` sets it up."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the checkout
    from tests.inpaint.tiny import tiny_videos

    from ex4d.inpaint.loading import load_pipeline
    from ex4d.inpaint.parallel import enable_parallel, init_parallel, shutdown_parallel
    from ex4d.inpaint.speed import SpeedSettings, configure_speed

    ctx = init_parallel(int(os.environ["WORLD_SIZE"]))
    pipe = load_pipeline(wan, ckpt, torch_dtype=torch.bfloat16).to(ctx.device)
    pipe.set_progress_bar_config(disable=True)
    configure_speed(pipe, SpeedSettings(compile=False), ctx.device)
    enable_parallel(pipe, ctx, mode)
    latents = pipe(*tiny_videos(5, 32, 32), height=32, width=32, num_inference_steps=2, mask_erode=2,
                   output_type="latent").frames
    torch.save(latents.cpu(), os.path.join(out, f"rank{ctx.rank}.pt"))
    shutdown_parallel(ctx)
