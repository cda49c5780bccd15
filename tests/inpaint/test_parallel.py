"""Context-parallel generation on 2 CPU processes (gloo) gives the single-process output."""

import socket

import pytest
import torch
import torch.multiprocessing as mp

from ex4d.errors import InputError
from ex4d.inpaint.loading import load_pipeline
from ex4d.inpaint.parallel import ParallelContext, enable_context_parallel, init_parallel

from .cp_worker import run_rank
from .tiny import tiny_videos


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("mode", ["ulysses"])
def test_two_rank_context_parallel_equals_one_process(wan_dir, ex4d_ckpt, tmp_path, mode):
    pipe = load_pipeline(wan_dir, ex4d_ckpt)
    pipe.set_progress_bar_config(disable=True)
    single = pipe(*tiny_videos(5, 32, 32), height=32, width=32, num_inference_steps=2, mask_erode=2,
                  output_type="latent").frames
    mp.spawn(run_rank, args=(2, _free_port(), str(wan_dir), str(ex4d_ckpt), str(tmp_path), mode), nprocs=2)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    torch.testing.assert_close(r0, r1, atol=0, rtol=0)  # every rank ends with the whole, identical result
    torch.testing.assert_close(r0, single, atol=1e-4, rtol=1e-4)


def test_parallel_needs_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(InputError, match="--parallel: expected the launch to have 2 processes"):
        init_parallel(2, "cpu")
    ctx = init_parallel(1, "cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main) == (0, 1, True)


def test_ulysses_needs_divisible_heads(wan_dir, ex4d_ckpt):
    pipe = load_pipeline(wan_dir, ex4d_ckpt)
    heads = pipe.transformer.config.num_attention_heads
    with pytest.raises(InputError, match="ring"):
        enable_context_parallel(pipe.transformer, ParallelContext(0, heads + 1, torch.device("cpu")), "ulysses")
    with pytest.raises(InputError, match="--parallel-mode"):
        enable_context_parallel(pipe.transformer, ParallelContext(0, 2, torch.device("cpu")), "mesh")
