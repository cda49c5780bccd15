"""The trainer on tiny random models (CPU): overfitting, frozen backbone, resume, export, CLI, 2-process DDP.

The tiny Wan folder is tests/inpaint/tiny.py's, with two changes that make the overfitting check meaningful
(real models have both properties; random tiny ones do not):
* a DiT of width 96 (the output layer maps width → 16·2·2 = 64 values per token, so it must be at least 64 wide to
  reach an arbitrary target), its output layer at twice the default scale;
* the VAE's quant conv scaled ×10: the random tiny VAE otherwise gives latents that hardly vary from pixel to pixel,
  so the condition encoder would see the same input at every token.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ex4d.io.video import load_video, save_video

ROOT = Path(__file__).resolve().parents[2]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


tiny = _load("ex4d_tests_inpaint_tiny", ROOT / "tests" / "inpaint" / "tiny.py")

SIZE = dict(num_frames=9, height=32, width=32)
FAST = dict(weight_dtype="fp32", mixed_precision="no", lora_rank=8, encoder_hidden=32, warmup_steps=0, lr=2e-2,
            max_grad_norm=0, validation_steps=1, validation_guidance=1.0, quiet=True, **SIZE)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The tiny models are dominated by per-op overhead; one thread is ~10x faster on a shared 2-core machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write_wan_dir(path: Path) -> Path:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    tiny.write_wan_dir(path)
    torch.manual_seed(0)
    dit = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=48, in_channels=36, out_channels=16,
        text_dim=tiny.TEXT_DIM, freq_dim=32, ffn_dim=192, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=tiny.CLIP_DIM, added_kv_proj_dim=96, rope_max_seq_len=1024)
    vae = AutoencoderKLWan.from_pretrained(path / "vae")
    with torch.no_grad():
        dit.proj_out.weight.mul_(2)
        vae.quant_conv.weight.mul_(10)
        vae.quant_conv.bias.zero_()
    for name, model in (("transformer", dit), ("vae", vae)):
        shutil.rmtree(path / name)
        model.save_pretrained(path / name)
    return path


def clip_frames(c: int, T=9, H=32, W=32):
    """A moving colour pattern and a mask with a moving hole (frame 0 fully kept), different per clip."""
    yy, xx = np.mgrid[:H, :W]
    frames = np.stack([np.stack([(xx * 8 + t * 4 + c * 50) % 256, (yy * 8 + c * 30) % 256, ((xx + yy) * 4) % 256], -1)
                       for t in range(T)]).astype(np.uint8)
    mask = np.ones((T, H, W), bool)
    for t in range(1, T):
        mask[t, 8:24, (2 * t + c) % 16:(2 * t + c) % 16 + 10] = False
    return frames, mask


def write_data(path: Path, n: int, mask_as_video: tuple = ()) -> Path:
    """The layout ex4d prepare writes: DATA/index.jsonl, DATA/<clip>/target.mp4 + pair.npz (or mask.mp4)."""
    names = []
    for c in range(n):
        frames, mask = clip_frames(c)
        d = path / f"clip{c}"
        d.mkdir(parents=True)
        save_video(d / "target.mp4", frames, fps=15)
        if c in mask_as_video:
            save_video(d / "mask.mp4", mask.astype(np.uint8) * 255, fps=15)
        else:
            np.savez(d / "pair.npz", mask=mask)
        (d / "meta.json").write_text("{}")
        names.append(f"clip{c}")
    (path / "index.jsonl").write_text("".join(json.dumps({"clip": n}) + "\n" for n in names))
    return path


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return write_wan_dir(tmp_path_factory.mktemp("train_wan") / "wan")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("train_data") / "data", 2, mask_as_video=(1,))


def fresh_pipe(wan_dir):
    from ex4d.inpaint.loading import load_pipeline

    return load_pipeline(wan_dir, torch_dtype=torch.float32)


def backbone_state(pipe) -> dict:
    out = {}
    for name in ("transformer", "vae", "text_encoder", "image_encoder"):
        for k, v in getattr(pipe, name).state_dict().items():
            if ".lora_" not in k:  # peft moves an adapted layer's own weights under .base_layer
                out[f"{name}.{k.replace('.base_layer.', '.')}"] = v.detach().clone()
    return out


# ---------------------------------------------------------------------------------------------- dataset
def test_dataset_reads_pairs_and_masks_the_target(data_dir):
    from ex4d.train.dataset import PairDataset

    ds = PairDataset(data_dir, mask_erode=0, **SIZE)
    assert ds.clips == ["clip0", "clip1"]
    for i in range(2):  # clip1's mask comes from mask.mp4 (lossy), clip0's from pair.npz
        item = ds.item(i)
        _, mask = clip_frames(i)
        assert item.target.shape == item.cond.shape == item.mask.shape == (3, 9, 32, 32)
        assert torch.equal(item.mask[0], torch.from_numpy(mask).float() * 2 - 1)
        # cond = target where kept, black (−1) where masked: exactly, since both come from the same decoded frames
        assert torch.equal(item.cond, torch.where(item.mask > 0, item.target, torch.full_like(item.target, -1.0)))
    # the reference's random erosion: seeded, only ever removes kept pixels, never touches frame 0
    ds_random = PairDataset(data_dir, mask_erode=None, **SIZE)
    a, b, c = ds_random.item(0, erode_seed=1), ds_random.item(0, erode_seed=1), ds_random.item(0, erode_seed=2)
    assert torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)
    plain = ds.item(0).mask
    assert bool(((a.mask > 0) <= (plain > 0)).all()) and (a.mask < plain).any() and bool((a.mask[:, 0] > 0).all())


def test_exact_frames_in_pair_npz_are_preferred(tmp_path, data_dir):
    from ex4d.train.dataset import PairDataset

    shutil.copytree(data_dir, tmp_path / "d")
    frames, mask = clip_frames(0)
    np.savez(tmp_path / "d" / "clip0" / "pair.npz", mask=mask, frames=frames)
    item = PairDataset(tmp_path / "d", mask_erode=0, **SIZE).item(0)
    exact = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255 * 2 - 1
    torch.testing.assert_close(item.target, exact, rtol=0, atol=1e-6)


def test_shipped_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    from ex4d.train.config import TrainConfig, make_config

    assert make_config(ROOT / "configs" / "train.yaml") == TrainConfig()  # the example spells out the defaults
    ddp = load_config_from_file(str(ROOT / "configs" / "accelerate" / "ddp.yaml"))
    fsdp = load_config_from_file(str(ROOT / "configs" / "accelerate" / "fsdp.yaml"))
    assert ddp.distributed_type == "MULTI_GPU" and fsdp.distributed_type == "FSDP"
    assert fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "WanTransformerBlock"
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock  # the class FSDP wraps exists

    assert WanTransformerBlock.__name__ == "WanTransformerBlock"


def test_bad_data_folders(tmp_path, data_dir):
    from ex4d.errors import InputError
    from ex4d.train.dataset import PairDataset

    with pytest.raises(InputError, match="index.jsonl"):
        PairDataset(tmp_path)
    shutil.copytree(data_dir, tmp_path / "d")
    (tmp_path / "d" / "clip0" / "pair.npz").unlink()
    with pytest.raises(InputError, match="clip0: missing pair.npz"):
        PairDataset(tmp_path / "d")
    (tmp_path / "d" / "index.jsonl").write_text("{\"name\": 1}\n")
    with pytest.raises(InputError, match="'clip' name"):
        PairDataset(tmp_path / "d")


# ---------------------------------------------------------------------------------------------- config
def test_config_file_then_flags(tmp_path):
    from ex4d.errors import InputError
    from ex4d.train.config import make_config

    (tmp_path / "t.yaml").write_text("lr: 3e-5\nsteps: 50\nadam_betas: [0.8, 0.99]\nmask_erode: 0\n")
    cfg = make_config(tmp_path / "t.yaml", steps=7, lr=None)
    assert (cfg.lr, cfg.steps, cfg.adam_betas, cfg.mask_erode, cfg.lora_rank) == (3e-5, 7, (0.8, 0.99), 0, 16)
    (tmp_path / "t.json").write_text(json.dumps({"warmup_steps": 5, "ema_decay": 0.99}))
    assert make_config(tmp_path / "t.json").ema_decay == 0.99
    (tmp_path / "bad.yaml").write_text("learning_rate: 1\n")
    with pytest.raises(InputError, match="unknown training settings: learning_rate"):
        make_config(tmp_path / "bad.yaml")
    for bad, msg in ((dict(num_frames=8), "4k\\+1"), (dict(height=30), "multiples of 16"), (dict(ema_decay=1.0), "ema"),
                     (dict(mixed_precision="fp8"), "mixed_precision"), (dict(steps="many"), "steps")):
        with pytest.raises(InputError, match=msg):
            make_config(**bad)


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def overfit_run(wan_dir, tmp_path_factory):
    """30 steps on one clip with a fixed noise/timestep draw; snapshots of the backbone before and after."""
    from ex4d.train.config import make_config
    from ex4d.train.trainer import Trainer

    root = tmp_path_factory.mktemp("overfit")
    data = write_data(root / "data", 1)
    pipe = fresh_pipe(wan_dir)
    before = backbone_state(pipe)
    cfg = make_config(data=str(data), output_dir=str(root / "run"), steps=30, fixed_noise=True, mask_erode=0,
                      checkpoint_every=0, validate_every=30, **FAST)
    trainer = Trainer(cfg, pipe=pipe)
    start = time.perf_counter()
    result = trainer.train()
    return dict(trainer=trainer, result=result, before=before, seconds=time.perf_counter() - start, root=root)


def test_overfits_one_clip(overfit_run):
    losses = overfit_run["result"].losses
    assert sorted(losses) == list(range(1, 31))
    # ≥ 5x lower, and far below w·E|ε|² — the floor of a model that could only learn the clip, not the noise
    assert losses[30] < losses[1] / 5, losses
    trainer = overfit_run["trainer"]
    gen = trainer._generator(0, 0)  # the fixed draw: noise first, then the timestep (as micro_step draws them)
    torch.randn((1, 16, 3, 4, 4), generator=gen)
    assert losses[30] < 0.5 * trainer.objective.draw(1, gen).weight.item()
    log = [json.loads(line) for line in (overfit_run["root"] / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log][0] == 1 and log[-1]["step"] == 30
    assert log[-1]["loss"] == pytest.approx(losses[30])


def test_only_the_adapter_changes(overfit_run):
    from ex4d.inpaint.lora import get_lora

    pipe = overfit_run["trainer"].pipe
    after = backbone_state(pipe)
    assert after.keys() == overfit_run["before"].keys()
    changed = [k for k, v in overfit_run["before"].items() if not torch.equal(v, after[k])]
    assert changed == []
    lora = get_lora(pipe.transformer)
    assert len(lora) == 20 and all(ab["lora_B"].abs().max() > 0 for ab in lora.values())  # B started at 0
    assert pipe.condition_encoder.latent_patch_embedding.weight.abs().max() > 0  # zero-initialised too
    trainable = [p for p in pipe.transformer.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)


def test_outputs_and_exported_ckpt_load_into_the_pipeline(overfit_run, wan_dir):
    from ex4d.inpaint.condition_encoder import ENCODER_KEYS
    from ex4d.inpaint.loading import load_pipeline, read_ex4d_ckpt
    from ex4d.inpaint.lora import get_lora

    run = overfit_run["root"] / "run"
    trained = overfit_run["trainer"].pipe
    sd = read_ex4d_ckpt(run / "ex4d.ckpt")
    assert len(sd) == 2 * 20 + len(ENCODER_KEYS) and "blocks.1.cross_attn.o.lora_B.default.weight" in sd
    color, mask = overfit_run["trainer"].dataset.validation_inputs(0)
    outputs = []
    for adapter in (run / "ex4d.ckpt", run / "adapter"):
        pipe = load_pipeline(wan_dir, adapter, torch_dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        lora, ref = get_lora(pipe.transformer), get_lora(trained.transformer)
        assert lora.keys() == ref.keys()
        assert all(torch.equal(lora[m][w], ref[m][w]) for m in lora for w in ("lora_A", "lora_B"))
        enc, ref_enc = pipe.condition_encoder.state_dict(), trained.condition_encoder.state_dict()
        assert all(torch.equal(enc[k], ref_enc[k]) for k in ENCODER_KEYS)
        outputs.append(pipe(color, mask, num_inference_steps=1, mask_erode=0, output_type="latent", **SIZE).frames)
    assert torch.equal(outputs[0], outputs[1])
    # the validation video: cond | output | target side by side
    video = load_video(run / "validation" / "step_30.mp4", num_frames=None, height=32, width=96)
    assert video.frames.shape == (9, 32, 96, 3)
    assert (run / "checkpoints" / "step_30" / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((run / "config.json").read_text())["steps"] == 30


def test_resume_continues_with_the_same_steps_and_losses(wan_dir, data_dir, tmp_path):
    from ex4d.inpaint.loading import read_ex4d_ckpt
    from ex4d.train.config import make_config
    from ex4d.train.trainer import Trainer, list_checkpoints

    kw = dict(data=str(data_dir), checkpoint_every=2, validate_every=0, grad_accum=2, ema_decay=0.9,
              keep_checkpoints=1, **FAST)
    full = Trainer(make_config(output_dir=str(tmp_path / "full"), steps=4, **kw), pipe=fresh_pipe(wan_dir)).train()
    part = Trainer(make_config(output_dir=str(tmp_path / "part"), steps=2, **kw), pipe=fresh_pipe(wan_dir)).train()
    assert [p.name for p in list_checkpoints(tmp_path / "part")] == ["step_2"]
    resumed_trainer = Trainer(make_config(output_dir=str(tmp_path / "part"), steps=4, resume="latest", **kw),
                              pipe=fresh_pipe(wan_dir))
    resumed = resumed_trainer.train()
    assert sorted(resumed.losses) == [3, 4] and resumed.step == 4
    assert [part.losses[1], part.losses[2]] == [full.losses[1], full.losses[2]]
    torch.testing.assert_close([resumed.losses[3], resumed.losses[4]], [full.losses[3], full.losses[4]], rtol=1e-6, atol=0)
    a, b = read_ex4d_ckpt(tmp_path / "full" / "ex4d.ckpt"), read_ex4d_ckpt(tmp_path / "part" / "ex4d.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)
    assert [p.name for p in list_checkpoints(tmp_path / "part")] == ["step_4"]  # keep_checkpoints=1
    # the checkpoint holds the adapter, not the frozen backbone
    sizes = sum(f.stat().st_size for f in (tmp_path / "part" / "checkpoints" / "step_4").rglob("*") if f.is_file())
    backbone = sum(p.numel() * 4 for p in resumed_trainer.pipe.transformer.parameters() if not p.requires_grad)
    assert sizes < backbone


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_trains_from_a_config_file(wan_dir, data_dir, tmp_path, capsys):
    import yaml

    from ex4d.cli import main

    settings = {k: v for k, v in FAST.items() if k != "quiet"}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({**settings, "steps": 5, "checkpoint_every": 0,
                                                         "validate_every": 0, "validation_clip": "clip1"}))
    rc = main(["train", "--data", str(data_dir), "--wan-dir", str(wan_dir), "--output-dir", str(tmp_path / "run"),
               "--config", str(tmp_path / "train.yaml"), "--steps", "2", "--quiet"])
    assert rc == 0 and capsys.readouterr().out.strip() == str(tmp_path / "run" / "ex4d.ckpt")
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]  # --steps won over the file's 5
    assert json.loads((tmp_path / "run" / "config.json").read_text())["validation_clip"] == "clip1"


def test_cli_bad_input_is_one_line(tmp_path, capsys, data_dir):
    from ex4d.cli import main

    rc = main(["train", "--data", str(tmp_path / "nope"), "--wan-dir", str(tmp_path), "--output-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "training data folder not found" in err, err
    rc = main(["train", "--data", str(data_dir), "--output-dir", str(tmp_path / "r")])
    assert rc == 2 and "--wan-dir" in capsys.readouterr().err
    rc = main(["train", "--data", str(data_dir), "--wan-dir", str(tmp_path), "--output-dir", str(tmp_path / "r"),
               "--num-frames", "8"])
    assert rc == 2 and "4k+1" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- scale-out, bench
@pytest.mark.slow  # ~25 s on a busy 2-core machine: two fresh interpreters importing diffusers
def test_accelerate_launch_ddp_two_cpu_processes(wan_dir, data_dir, tmp_path):
    """accelerate launch (gloo, 2 processes): each process trains on its own clip and the ranks stay in sync."""
    from ex4d.inpaint.loading import read_ex4d_ckpt

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533", "-m", "ex4d.cli",
           "train", "--data", str(data_dir), "--wan-dir", str(wan_dir), "--output-dir", str(tmp_path / "run"),
           "--steps", "2", "--checkpoint-every", "0", "--validate-every", "0", "--weight-dtype", "fp32",
           "--mixed-precision", "no", "--lora-rank", "4", "--num-frames", "9", "--height", "32", "--width", "32",
           "--warmup-steps", "0", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "run" / "ex4d.ckpt")
    sd = read_ex4d_ckpt(tmp_path / "run" / "ex4d.ckpt")
    assert any(v.abs().max() > 0 for k, v in sd.items() if "lora_B" in k)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]


def test_bench_train_tiny(capsys):
    bench = _load("ex4d_bench_train", ROOT / "bench" / "train.py")
    rc = bench.main(["--tiny", "--steps", "2", "--quiet"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert rc == 0 and len(rows) == 1 and "error" not in rows[0], rows
    r = rows[0]
    assert r["steps"] == 2 and r["step_s"] > 0 and r["trainable_params"] > 0 and np.isfinite(r["losses"]).all()
    assert r["trainable_params"] == bench.trainable_count(bench.TINY)
    assert bench.trainable_count(bench.REAL) == 99_786_752  # spec §7.3: LoRA 76,677,120 + encoder 23,109,632


def test_adapter_names_ignore_fsdp_checkpoint_wrappers(wan_dir, data_dir, tmp_path):
    """accelerate's FSDP2 wraps blocks (``blocks.N._checkpoint_wrapped_module.…``); exported names must not change."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    from ex4d.inpaint import lora as lora_mod
    from ex4d.train.config import make_config
    from ex4d.train.trainer import Trainer

    trainer = Trainer(make_config(data=str(data_dir), output_dir=str(tmp_path), steps=1, **FAST), pipe=fresh_pipe(wan_dir))
    plain_lora, plain_enc = trainer.trainable_state()
    blocks = trainer.pipe.transformer.blocks
    blocks[0] = checkpoint_wrapper(blocks[0])
    assert any("_checkpoint_wrapped_module" in n for n, _ in trainer.pipe.transformer.named_parameters())
    lora, enc = trainer.trainable_state()
    assert lora.keys() == plain_lora.keys() == set(lora_mod.lora_target_modules(trainer.pipe.transformer))
    assert enc.keys() == plain_enc.keys()
