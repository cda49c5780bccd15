"""ex4d reads exactly the files the Wan2.1 and EX-4D authors published — checked without downloading them.

The reference identifies each published checkpoint by an MD5 of its tensor names and shapes
(DiffSynth's ``hash_state_dict_keys``; the values are in ``diffsynth/configs/model_config.py``). Here the state dict
of each official file is re-stated at full size on the ``meta`` device (:mod:`.official_layout`, written from the
reference's module structure, not from ex4d's key maps), shown to carry exactly those hashes, and then fed through
ex4d's own loaders (reading patched to hand out the meta tensors), which must build the diffusers / transformers
models with zero missing and zero unexpected tensors and with the configs of the published
``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`` folder. Nothing full-size is ever allocated.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection, UMT5Config, UMT5EncoderModel

from ex4d.inpaint import lora as lora_mod
from ex4d.inpaint import original
from ex4d.inpaint.condition_encoder import CamVidEncoder
from ex4d.inpaint.adapter_io import _check_lora_fits, split_ex4d_state_dict

from . import official_layout as official

# DiffSynth's model_config.py: (hash of names + shapes) -> model of the published file.
REFERENCE_HASHES = {
    "dit": "6bfcfb3b342cb286ce886889d519a77e",  # Wan2.1-I2V-14B, all 7 shards together
    "t5": "9c8818c2cbea55eca56c7b447df170da",  # models_t5_umt5-xxl-enc-bf16.pth
    "clip": "5941c53e207d62f20f9025686193c40b",  # models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth
    # Wan2.1_VAE.pth. The table's other VAE hash, 1378ea76…, is neither this state dict nor it wrapped in
    # "model_state" (which DiffSynth unwraps); Wan's own code loads Wan2.1_VAE.pth with a strict load_state_dict.
    "vae": "ccc42284ea13e1ad04693284c7a09be6",
}
LAYOUTS = {"dit": official.wan_dit, "t5": official.umt5_encoder, "clip": official.xlm_roberta_clip,
           "vae": official.wan_vae}

# The published diffusers configs. transformer: `Wan-I2V-14B-480p` of diffusers' scripts/convert_wan_to_diffusers.py
# (+ the class default rope_max_seq_len). vae: that script's `AutoencoderKLWan()` (Wan2.1 defaults; the latent
# statistics are the reference's WanVideoVAE mean/std). text_encoder: google/umt5-xxl, which the script copies.
# image_encoder: laion/CLIP-ViT-H-14-laion2B-s32B-b79K's vision tower, saved as CLIPVisionModelWithProjection.
PUBLISHED_TRANSFORMER = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    eps=1e-6, image_dim=1280, added_kv_proj_dim=5120, rope_max_seq_len=1024,
)
PUBLISHED_VAE = dict(
    base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
    temperal_downsample=[False, True, True], dropout=0.0,
    latents_mean=[-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                  0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
    latents_std=[2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                 3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160],
)
PUBLISHED_T5 = dict(
    vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
    dense_act_fn="gelu_new", is_gated_act=True, layer_norm_epsilon=1e-6, pad_token_id=0, eos_token_id=1,
)
PUBLISHED_CLIP = dict(
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
    patch_size=14, num_channels=3, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=1024,
)
# Original-layout folder config.json of Wan-AI/Wan2.1-I2V-14B-480P (ex4d reads num_heads and eps from it).
ORIGINAL_DIT_CONFIG = {
    "_class_name": "WanModel", "_diffusers_version": "0.30.0", "model_type": "i2v", "text_len": 512, "in_dim": 36,
    "dim": 5120, "ffn_dim": 13824, "freq_dim": 256, "out_dim": 16, "num_heads": 40, "num_layers": 40, "eps": 1e-06,
}
DIT_SHARDS = 7


# ---------------------------------------------------------------------------------------------- the hash
def test_restated_hash_is_the_reference_algorithm():
    """Worked by hand: each tensor gives "name:d0_d1" and "name" (a 0-d tensor "name:"), a nested dict
    "name|<its own string>"; plain sort; joined by ","; MD5 of the UTF-8 bytes."""
    sd = {"b.weight": torch.empty(2, 3, device="meta"), "a": torch.empty((), device="meta"), "step": 7,
          "inner": {"z": torch.empty(4, device="meta")}}
    expected = "a,a:,b.weight,b.weight:2_3,inner|z,z:4"
    assert official.reference_keys_hash(sd) == hashlib.md5(expected.encode()).hexdigest()


@pytest.mark.parametrize("part", sorted(REFERENCE_HASHES))
def test_official_files_have_the_reference_hashes(part):
    shapes = LAYOUTS[part]()
    sd = official.on_meta(shapes)
    assert official.reference_keys_hash(sd) == REFERENCE_HASHES[part]
    # one tensor fewer, or one dimension different, and the hash no longer matches
    k = sorted(shapes)[len(shapes) // 2]
    assert official.reference_keys_hash({n: t for n, t in sd.items() if n != k}) != REFERENCE_HASHES[part]
    bent = dict(sd, **{k: torch.empty(*shapes[k], 1, device="meta")})
    assert official.reference_keys_hash(bent) != REFERENCE_HASHES[part]


def test_sizes_of_the_official_files():
    """Parameter counts of the re-stated files against the published model sizes."""
    count = {p: sum(math.prod(s) for s in f().values()) for p, f in LAYOUTS.items()}
    assert count["dit"] == pytest.approx(16.39e9, rel=1e-3)  # spec §6.1 (the "14B" I2V DiT)
    # umT5-XXL: embedding + 24 × (2 norms, q k v o, gated FFN, 32×64 position table) + final norm
    assert count["t5"] == 256384 * 4096 + 24 * (2 * 4096 + 4 * 4096**2 + 3 * 4096 * 10240 + 32 * 64) + 4096
    # the published file sizes: 11.4 GB (bf16), 4.77 GB and 508 MB (fp32)
    assert 2 * count["t5"] == pytest.approx(11.4e9, rel=1e-2)
    assert 4 * count["clip"] == pytest.approx(4.77e9, rel=1e-2)
    assert 4 * count["vae"] == pytest.approx(508e6, rel=1e-2)
    ckpt = official.ex4d_ckpt()
    assert len(ckpt) == 808 and sum(math.prod(s) for s in ckpt.values()) == 99_786_752  # spec §7.2, §7.3


# ---------------------------------------------------------------------------------------------- ex4d's loaders
def _shard_names():
    return [f"diffusion_pytorch_model-{i:05d}-of-{DIT_SHARDS:05d}.safetensors" for i in range(1, DIT_SHARDS + 1)]


def _official_folder(tmp_path: Path, with_config: bool = True) -> Path:
    """The file names of Wan-AI/Wan2.1-I2V-14B-480P, the files themselves empty (their reading is patched)."""
    keys = sorted(official.wan_dit())
    names = _shard_names()
    weight_map = {k: names[i * DIT_SHARDS // len(keys)] for i, k in enumerate(keys)}
    (tmp_path / original.DIT_INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    for n in names:
        (tmp_path / n).touch()
    if with_config:
        (tmp_path / "config.json").write_text(json.dumps(ORIGINAL_DIT_CONFIG))
    for n in (original.VAE_FILE, original.T5_FILE, original.CLIP_FILE):
        (tmp_path / n).touch()
    (tmp_path / original.TOKENIZER_DIR).mkdir(parents=True)
    (tmp_path / "xlm-roberta-large").mkdir()  # the CLIP text tower's tokenizer, unused
    (tmp_path / "configuration.json").write_text(json.dumps({"framework": "Pytorch", "task": "image-to-video"}))
    return tmp_path


class _MetaShard:
    """Stands in for ``safetensors.safe_open`` on an official shard: the shard's keys, as meta tensors."""

    def __init__(self, path, framework="pt", device="cpu"):
        index = json.loads((Path(path).parent / original.DIT_INDEX).read_text())["weight_map"]
        self.shapes = {k: s for k, s in official.wan_dit().items() if index[k] == Path(path).name}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def keys(self):
        return list(self.shapes)

    def get_tensor(self, key):
        return torch.empty(self.shapes[key], dtype=torch.bfloat16, device="meta")


def _meta_torch_load(path, *args, **kwargs):
    files = {original.VAE_FILE: official.wan_vae, original.T5_FILE: official.umt5_encoder,
             original.CLIP_FILE: official.xlm_roberta_clip}
    return official.on_meta(files[Path(path).name]())


@pytest.fixture(scope="module")
def official_models(tmp_path_factory):
    """What ``load_pipeline`` builds from the official folder (its base part, with its cross-model checks), every
    read handing out meta tensors; the tokenizer is a stand-in (tests must not modify these models)."""
    from transformers import AutoTokenizer

    from ex4d.inpaint.loading import _load_base

    from .tiny import tiny_tokenizer

    base = _official_folder(tmp_path_factory.mktemp("Wan2.1-I2V-14B-480P"))
    folder = original.inspect_base(base)
    assert folder.layout == "original"
    assert {k: kind for k, (kind, _) in folder.parts.items()} == dict.fromkeys(folder.parts, "original")
    assert [p.name for p in folder.parts["transformer"][1]] == _shard_names()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("safetensors.safe_open", _MetaShard)
        mp.setattr(torch, "load", _meta_torch_load)
        mp.setattr(AutoTokenizer, "from_pretrained", lambda path, **kw: tiny_tokenizer())
        pipe = _load_base(base, torch.bfloat16, 5.0)
    return {name: getattr(pipe, name) for name in ("transformer", "vae", "text_encoder", "image_encoder")}


def _published_models():
    with init_empty_weights(include_buffers=True):
        return dict(
            transformer=WanTransformer3DModel(**PUBLISHED_TRANSFORMER),
            vae=AutoencoderKLWan(**PUBLISHED_VAE),
            text_encoder=UMT5EncoderModel(UMT5Config(**{k: v for k, v in PUBLISHED_T5.items()
                                                        if k not in ("dense_act_fn", "is_gated_act")})),
            image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**PUBLISHED_CLIP)),
        )


def _shape_map(sd) -> dict:
    return {k: tuple(v.shape) for k, v in sd.items()}


def _shapes(model) -> dict:
    return _shape_map(model.state_dict())


def test_official_files_load_into_the_published_models(official_models):
    """Zero missing, zero unexpected, same shapes as the diffusers-layout models; configs field by field."""
    published = _published_models()
    for name, model in official_models.items():
        assert all(p.is_meta for p in model.parameters()), name  # nothing was materialised
        mine, theirs = _shapes(model), _shapes(published[name])
        if name == "image_encoder":
            # Wan uses the penultimate hidden state, never CLIP's projection: ex4d builds CLIPVisionModel, whose
            # names (transformers 5) lack the "vision_model." wrapper of CLIPVisionModelWithProjection
            assert theirs.pop("visual_projection.weight") == (1024, 1280)
            theirs = {k.removeprefix("vision_model."): v for k, v in theirs.items()}
        assert set(mine) - set(theirs) == set(), name
        assert set(theirs) - set(mine) == set(), name
        assert mine == theirs, name

    cfg = official_models["transformer"].config
    for k, v in PUBLISHED_TRANSFORMER.items():
        assert (tuple(cfg[k]) if k == "patch_size" else cfg[k]) == v, k
    cfg = official_models["vae"].config
    for k, v in PUBLISHED_VAE.items():
        assert (list(cfg[k]) if isinstance(v, list) else cfg[k]) == v, k
    cfg = official_models["text_encoder"].config
    for k, v in PUBLISHED_T5.items():
        assert getattr(cfg, k) == v, k
    cfg = official_models["image_encoder"].config
    for k, v in PUBLISHED_CLIP.items():
        assert getattr(cfg, k) == v, k


def _published_diffusers_folder(root: Path) -> Path:
    """``model_index.json`` and the subfolders' ``config.json`` of Wan-AI/Wan2.1-I2V-14B-480P-Diffusers (no weights)."""
    index = {"_class_name": "WanImageToVideoPipeline",
             "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
             "image_processor": ["transformers", "CLIPImageProcessor"],
             "scheduler": ["diffusers", "UniPCMultistepScheduler"],
             "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
             "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"]}
    configs = {
        "transformer": {"_class_name": "WanTransformer3DModel", **PUBLISHED_TRANSFORMER},
        "vae": {"_class_name": "AutoencoderKLWan", **PUBLISHED_VAE},
        "text_encoder": {"architectures": ["UMT5EncoderModel"], "model_type": "umt5", "num_decoder_layers": 24,
                         "tie_word_embeddings": False, **PUBLISHED_T5},
        "image_encoder": {"architectures": ["CLIPVisionModelWithProjection"], "model_type": "clip_vision_model",
                          **PUBLISHED_CLIP},
        "tokenizer": {},
        "scheduler": {},
    }
    (root / "model_index.json").write_text(json.dumps(index))
    for sub, cfg in configs.items():
        (root / sub).mkdir()
        (root / sub / "config.json").write_text(json.dumps(cfg))
    return root


def test_diffusers_folder_loads_the_same_models(official_models, tmp_path, monkeypatch):
    """ex4d's diffusers-layout loader on the published configs (``from_pretrained`` patched to build on meta from
    the folder's config.json): the classes it picks give, key for key, what the original layout gives."""
    from diffusers import ModelMixin
    from transformers import AutoTokenizer, PreTrainedModel

    from ex4d.inpaint.loading import _load_diffusers_components

    def diffusers_meta(cls, base, subfolder=None, **kwargs):
        with init_empty_weights(include_buffers=True):
            return cls.from_config(cls.load_config(Path(base) / (subfolder or "")))

    def transformers_meta(cls, path, **kwargs):
        with init_empty_weights(include_buffers=True):
            return cls(cls.config_class.from_pretrained(path))

    monkeypatch.setattr(ModelMixin, "from_pretrained", classmethod(diffusers_meta))
    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(transformers_meta))
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda path, **kw: "tokenizer")
    comps = _load_diffusers_components(_published_diffusers_folder(tmp_path), torch.bfloat16)
    assert type(comps["image_encoder"]) is CLIPVisionModelWithProjection
    for name, model in official_models.items():
        theirs = _shapes(comps[name])
        if name == "image_encoder":
            assert theirs.pop("visual_projection.weight") == (1024, 1280)
            theirs = {k.removeprefix("vision_model."): v for k, v in theirs.items()}
        assert theirs == _shapes(model), name
    # Every config field agrees, not only the published ones, except metadata and umT5's decoder-output scaling
    # (google/umt5-xxl: tie_word_embeddings false), which only a decoder uses.
    skip = {"architectures", "scale_decoder_outputs", "transformers_version", "dtype"}
    for name in official_models:
        a, b = comps[name].config, official_models[name].config
        a, b = (dict(a), dict(b)) if name in ("transformer", "vae") else (a.to_dict(), b.to_dict())
        fields = {k for k in a.keys() | b.keys() if not k.startswith("_") and k not in skip}
        assert {k: _plain(a.get(k)) for k in fields} == {k: _plain(b.get(k)) for k in fields}, name


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def test_original_dit_without_config_json_gives_the_same_model(tmp_path, monkeypatch):
    """No config.json: 40 heads from the head width 128 every Wan2.1 DiT has."""
    monkeypatch.setattr("safetensors.safe_open", _MetaShard)
    folder = original.inspect_base(_official_folder(tmp_path, with_config=False))
    model = original.load_transformer(folder.parts["transformer"][1], torch.bfloat16)
    assert dict(model.config) == dict(_published_models()["transformer"].config)


def test_published_fp32_modules_stay_fp32(official_models):
    """As ``from_pretrained`` does for the diffusers layout: the DiT's _keep_in_fp32_modules, the whole VAE."""
    keep = WanTransformer3DModel._keep_in_fp32_modules
    for k, v in official_models["transformer"].state_dict().items():
        want = torch.float32 if any(m in k.split(".") for m in keep) else torch.bfloat16
        assert v.dtype == want, k
    assert {v.dtype for v in official_models["vae"].state_dict().values()} == {torch.float32}


# ---------------------------------------------------------------------------------------------- ex4d.ckpt
def _module_tree(shapes: dict) -> torch.nn.Module:
    """A bare module tree with the original names: every 2-D ``….weight`` becomes an ``nn.Linear`` on meta
    (enough for peft's target matching, which is by module name and type)."""
    root = torch.nn.Module()
    for key, shape in shapes.items():
        if not key.endswith(".weight") or len(shape) != 2:
            continue
        *path, leaf = key[: -len(".weight")].split(".")
        node = root
        for p in path:
            if not hasattr(node, p):
                node.add_module(p, torch.nn.Module())
            node = getattr(node, p)
        node.add_module(leaf, torch.nn.Linear(shape[1], shape[0], bias=key[:-7] + ".bias" in shapes, device="meta"))
    return root


def test_reference_lora_injection_gives_the_ex4d_ckpt_keys():
    """generate.py's ``LoraConfig(r=16, lora_alpha=16, target_modules="q,k,v,o,ffn.0,ffn.2")`` injected into the
    official DiT's modules yields exactly the LoRA keys and shapes of :func:`official_layout.ex4d_ckpt`."""
    from peft import LoraConfig, inject_adapter_in_model

    dit = _module_tree(official.wan_dit())
    with init_empty_weights():
        inject_adapter_in_model(LoraConfig(r=16, lora_alpha=16.0, init_lora_weights=True,
                                           target_modules=["q", "k", "v", "o", "ffn.0", "ffn.2"]), dit)
    injected = {k: tuple(v.shape) for k, v in dit.state_dict().items() if ".lora_" in k}
    expected = {k: s for k, s in official.ex4d_ckpt().items() if ".lora_" in k}
    assert injected == expected
    assert len(injected) == 800 and sum(math.prod(s) for s in injected.values()) == 76_677_120  # spec §7.3


def test_full_size_ex4d_ckpt_fits_the_published_transformer():
    """ex4d's split of ``ex4d.ckpt`` + its fit checks + peft injection + copy, on the full-size meta transformer
    (the published diffusers one, which the original layout gives too: see above)."""
    sd = official.on_meta(official.ex4d_ckpt())
    lora, encoder = split_ex4d_state_dict(sd, "ex4d.ckpt")
    published = _published_models()
    transformer = published["transformer"]
    assert len(lora) == 400 and lora_mod.lora_rank(lora) == 16
    assert set(lora) == set(lora_mod.lora_target_modules(transformer))
    _check_lora_fits(transformer, lora)
    with init_empty_weights():
        lora_mod.apply_lora(transformer, lora_mod.lora_rank(lora))
    lora_mod.load_lora(transformer, lora)  # every adapted module covered, nothing else, shapes equal
    adapted = {k: tuple(v.shape) for k, v in transformer.state_dict().items() if ".lora_" in k}
    assert len(adapted) == 800

    cfg = CamVidEncoder.config_from_state_dict(encoder)
    assert cfg == dict(in_channels=16, hidden_channels=1024, out_channels=5120, patch_size=(1, 2, 2))
    with init_empty_weights():
        enc = CamVidEncoder(**cfg)
    assert _shapes(enc) == {k: tuple(v.shape) for k, v in encoder.items()}
    assert sum(p.numel() for p in enc.parameters()) == 23_109_632  # spec §7.3
    inner = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    assert cfg["out_channels"] == inner and cfg["in_channels"] == published["vae"].config.z_dim

    # and what `export_ex4d_ckpt` writes from this adapter (its names, with the adapter's own tensors) is the file
    adapter = {name: {w: getattr(m, w)[lora_mod.ADAPTER_NAME].weight for w in ("lora_A", "lora_B")}
               for name, m in transformer.named_modules() if lora_mod.ADAPTER_NAME in getattr(m, "lora_A", {})}
    exported = {**_shape_map(lora_mod.lora_to_reference_state_dict(adapter)), **_shapes(enc)}
    assert exported == official.ex4d_ckpt()


# ---------------------------------------------------------------------------------------------- the tiny writer
def test_tiny_original_layout_writer_uses_the_official_names():
    """The tests' tiny original-layout folders (:mod:`.tiny`) are written with the official names: its inverse
    maps, applied to the published models at full size, give exactly the hashed key sets (CLIP: the vision tower;
    the tiny text tower is a stand-in that ex4d never reads)."""
    from .tiny import clip_to_original, dit_to_original, t5_to_original, vae_to_original

    published = _published_models()
    assert _shape_map(dit_to_original(published["transformer"].state_dict())) == official.wan_dit()
    assert _shape_map(vae_to_original(published["vae"])) == official.wan_vae()
    assert _shape_map(t5_to_original(published["text_encoder"])) == official.umt5_encoder()
    with init_empty_weights():
        vision = CLIPVisionModel(CLIPVisionConfig(**PUBLISHED_CLIP))
    def tower(shapes):
        return {k: s for k, s in shapes.items() if k.startswith("visual.") and k != "visual.head"}

    assert tower(_shape_map(clip_to_original(vision))) == tower(official.xlm_roberta_clip())

