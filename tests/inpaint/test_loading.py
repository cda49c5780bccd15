import json
import shutil

import pytest
import torch

from ex4d.errors import InputError
from ex4d.inpaint.condition_encoder import ENCODER_KEYS
from ex4d.inpaint.loading import load_adapter, load_pipeline, read_adapter, read_ex4d_ckpt
from ex4d.inpaint.lora import get_lora, lora_rank

from .tiny import tiny_ex4d_state_dict, tiny_videos

KW = dict(height=32, width=32, num_inference_steps=1, mask_erode=0, output_type="latent")


def test_loaded_weights_equal_the_checkpoint(pipe, ex4d_ckpt):
    sd = torch.load(ex4d_ckpt, weights_only=True)
    lora = get_lora(pipe.transformer)
    assert len(lora) * 2 + len(pipe.condition_encoder.state_dict()) == len(sd)
    assert torch.equal(lora["blocks.1.attn2.to_out.0"]["lora_B"], sd["blocks.1.cross_attn.o.lora_B.default.weight"])
    assert torch.equal(lora["blocks.0.ffn.net.0.proj"]["lora_A"], sd["blocks.0.ffn.0.lora_A.default.weight"])
    for k in ENCODER_KEYS:
        assert torch.equal(pipe.condition_encoder.state_dict()[k], sd[k])
    assert pipe.condition_encoder.config.hidden_channels == 8 and lora_rank(lora) == 4


def test_rank_and_sizes_come_from_the_tensors(wan_dir, tmp_path):
    path = tmp_path / "r2.ckpt"
    torch.save(tiny_ex4d_state_dict(rank=2, hidden=6), path)
    p = load_pipeline(wan_dir, path)
    assert lora_rank(get_lora(p.transformer)) == 2 and p.condition_encoder.config.hidden_channels == 6


def test_adapter_round_trips_both_ways(pipe, wan_dir, ex4d_ckpt, tmp_path):
    videos = tiny_videos(5, 32, 32)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(*videos, **KW).frames
    # ours -> fresh pipeline -> same weights and output
    pipe.save_ex4d_adapter(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["lora"]["rank"] == 4
    fresh = load_pipeline(wan_dir, tmp_path / "adapter")
    fresh.set_progress_bar_config(disable=True)
    assert torch.equal(fresh(*videos, **KW).frames, ref)
    # ours -> ex4d.ckpt: identical keys and tensors to the original
    fresh.export_ex4d_ckpt(tmp_path / "back.ckpt")
    a, b = read_ex4d_ckpt(ex4d_ckpt), read_ex4d_ckpt(tmp_path / "back.ckpt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lora, enc, cfg = read_adapter(tmp_path / "adapter" / "adapter_model.safetensors")
    assert len(lora) == 20 and sorted(enc) == sorted(ENCODER_KEYS) and cfg["condition_encoder"]["hidden_channels"] == 8


def test_missing_or_wrong_base_folder(wan_dir, ex4d_ckpt, tmp_path):
    with pytest.raises(InputError, match="no such model folder"):
        load_pipeline(tmp_path / "nope", ex4d_ckpt)
    partial = tmp_path / "partial"
    shutil.copytree(wan_dir, partial)
    shutil.rmtree(partial / "image_encoder")
    with pytest.raises(InputError, match="missing image_encoder"):
        load_pipeline(partial)


def test_bad_checkpoints(pipe, tmp_path):
    sd = tiny_ex4d_state_dict()
    cases = {
        "prefixed": ({f"dit.{k}": v for k, v in sd.items()}, "no EX-4D weights"),
        "nested": ({"state_dict": sd}, "flat"),
        "extra": ({**sd, "diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 32)}, "neither"),
        "no_encoder": ({k: v for k, v in sd.items() if "lora" in k}, "no condition-encoder"),
        "no_lora": ({k: v for k, v in sd.items() if "lora" not in k}, "no LoRA"),
        "missing_module": ({k: v for k, v in sd.items() if "blocks.1.ffn.2." not in k}, "missing"),
        "wrong_width": ({**sd, "latent_patch_embedding.weight": torch.zeros(16, 8, 1, 2, 2),
                         "latent_patch_embedding.bias": torch.zeros(16)}, "width"),
    }
    for name, (content, msg) in cases.items():
        path = tmp_path / f"{name}.ckpt"
        torch.save(content, path)
        with pytest.raises(InputError, match=msg):
            load_adapter(pipe, path)
    with pytest.raises(InputError, match="no such"):
        load_adapter(pipe, tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="readable"):
        load_adapter(pipe, tmp_path / "junk.ckpt")
    # failed loads left the pipeline as it was
    assert torch.equal(get_lora(pipe.transformer)["blocks.1.ffn.net.2"]["lora_B"], sd["blocks.1.ffn.2.lora_B.default.weight"])
    assert pipe.condition_encoder.config.out_channels == 32
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match="adapter_config.json"):
        load_adapter(pipe, tmp_path / "empty_dir")
