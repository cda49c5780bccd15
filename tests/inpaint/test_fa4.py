"""The FA4 attention backend's wiring on the CPU: the PyPI kernel is replaced by an SDPA stand-in with FA4's
signature ((B, L, H, D) layout, ``softmax_scale``, returns ``(out, lse)``), so that selection, diffusers' dispatch,
the custom op under ``torch.compile(fullgraph=True)`` and the fallbacks are checked without a Hopper GPU.
The kernel itself is checked against the exact backends by the gpu-marked test at the end."""

import sys

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_dispatch import _HUB_KERNELS_REGISTRY, AttentionBackendName

import ex4d.inpaint.fa4 as fa4
from ex4d.errors import InputError
from ex4d.inpaint.loading import load_pipeline
from ex4d.inpaint.speed import SpeedSettings, configure_speed, pick_attention_backend, set_model_attention_backend
from ex4d.utils.modules import module_found

from .tiny import tiny_videos

KW = dict(height=32, width=32, num_inference_steps=2, mask_erode=2, output_type="latent", guidance_scale=5.0)


def _sdpa_stand_in(calls):
    def flash_attn_func(q, k, v, softmax_scale=None, causal=False):
        calls.append(tuple(q.shape))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             scale=softmax_scale, is_causal=causal).transpose(1, 2)
        lse = torch.zeros(q.shape[0], q.shape[2], q.shape[1])
        return out.contiguous(), lse

    return flash_attn_func


@pytest.fixture
def stand_in(monkeypatch):
    """FA4 'installed' with the SDPA stand-in as its kernel; diffusers' FA4 slot restored afterwards."""
    calls = []
    monkeypatch.setattr(fa4, "fa4_installed", lambda: True)
    monkeypatch.setattr(fa4, "_load_kernel", lambda: _sdpa_stand_in(calls))
    monkeypatch.setattr(_HUB_KERNELS_REGISTRY[AttentionBackendName.FLASH_4_HUB], "kernel_fn", None)
    return calls


def _run(p):
    p.set_progress_bar_config(disable=True)
    return p(*tiny_videos(5, 32, 32), **KW).frames


def test_fa4_backend_through_diffusers_and_compile(wan_dir, ex4d_ckpt, stand_in):
    reference = load_pipeline(wan_dir, ex4d_ckpt)
    configure_speed(reference, SpeedSettings(mode="eager"), "cpu")
    expected = _run(reference)

    p = load_pipeline(wan_dir, ex4d_ckpt)
    summary = configure_speed(p, SpeedSettings(attention="fa4", compile=True, compile_backend="eager"), "cpu")
    assert summary["attention"] == "fa4" and summary["compile"]
    procs = [m.processor for m in p.transformer.modules() if hasattr(getattr(m, "processor", None), "_attention_backend")]
    assert procs and {pr._attention_backend for pr in procs} == {AttentionBackendName.FLASH_4_HUB}
    assert _HUB_KERNELS_REGISTRY[AttentionBackendName.FLASH_4_HUB].kernel_fn is fa4.fa4_attention  # no Hub download
    out = _run(p)
    # every self- and cross-attention of every step went through the kernel, in (B, L, H, D) layout
    assert len(stand_in) > 0 and all(len(s) == 4 for s in stand_in)
    torch.testing.assert_close(out, expected, atol=2e-4, rtol=1e-4)


def test_custom_op_contract(stand_in):
    q, k, v = (torch.randn(2, 7, 3, 16) for _ in range(3))
    torch.library.opcheck(torch.ops.ex4d.fa4_attention, (q, k, v, 0.25))
    # cross-attention shapes: Lk != Lq; the default scale is 1/sqrt(D)
    k2, v2 = torch.randn(2, 5, 3, 16), torch.randn(2, 5, 3, 16)
    expected = F.scaled_dot_product_attention(q.transpose(1, 2), k2.transpose(1, 2), v2.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(fa4.fa4_attention(q, k2, v2), expected)
    compiled = torch.compile(lambda a, b, c: fa4.fa4_attention(a, b, c) * 2, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k2, v2), expected * 2)
    with pytest.raises(ValueError, match="non-causal"):
        fa4.fa4_attention(q, k, v, causal=True)


def test_gradients_use_the_packages_autograd(stand_in):
    q, k, v = (torch.randn(1, 6, 2, 8, requires_grad=True) for _ in range(3))
    fa4.fa4_attention(q, k, v).sum().backward()
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    F.scaled_dot_product_attention(q2.transpose(1, 2), k2.transpose(1, 2), v2.transpose(1, 2)).sum().backward()
    torch.testing.assert_close(q.grad, q2.grad)


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(fa4, "fa4_installed", lambda: False)
    with pytest.raises(InputError, match=r'pip install "ex4d\[fa4\]"'):
        set_model_attention_backend(torch.nn.Linear(1, 1), "fa4")


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device of a chosen compute capability, as far as backend selection can tell."""
    capability = {"value": (9, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability["value"])
    return capability


@pytest.fixture
def fa4_namespace_only(tmp_path, monkeypatch):
    """``flash_attn`` installed only as FA4's namespace package (``flash_attn/cute``), as the PyPI wheel lays it out."""
    (tmp_path / "flash_attn" / "cute").mkdir(parents=True)
    (tmp_path / "flash_attn" / "cute" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "flash_attn" or m.startswith("flash_attn.")]:
        monkeypatch.delitem(sys.modules, name)
    yield
    for name in [m for m in sys.modules if m == "flash_attn" or m.startswith("flash_attn.")]:
        sys.modules.pop(name, None)


def test_auto_picks_fa4_on_hopper_and_blackwell_only(fake_gpu, fa4_namespace_only):
    cuda = torch.device("cuda", 0)
    assert fa4.fa4_installed()
    for capability, expected in [((9, 0), "fa4"), ((10, 0), "fa4"), ((8, 9), "native"), ((8, 0), "native")]:
        fake_gpu["value"] = capability
        # FA4's namespace package is not flash-attn 2: below Hopper the pick falls back as without FA4
        assert pick_attention_backend(cuda) == expected, capability
    assert pick_attention_backend(torch.device("cpu")) == "native"


def test_auto_without_fa4_is_unchanged(fake_gpu, monkeypatch):
    monkeypatch.setattr(fa4, "fa4_installed", lambda: False)
    cuda = torch.device("cuda", 0)
    if module_found("flash_attn_interface") or module_found("flash_attn.flash_attn_interface"):
        pytest.skip("flash-attn 2 or 3 is installed here")
    assert pick_attention_backend(cuda) == "_native_cudnn"
    fake_gpu["value"] = (8, 0)
    assert pick_attention_backend(cuda) == "native"


@pytest.mark.gpu
def test_fa4_matches_exact_backends_on_gpu():
    """On a Hopper/Blackwell GPU with the fa4 extra: FA4 equals cuDNN/SDPA attention within bf16 rounding on Wan's
    head width (128), self- and cross-attention shapes."""
    device = torch.device("cuda")
    if not fa4.fa4_supported(device):
        pytest.skip("needs FA4 installed and a Hopper or Blackwell GPU")
    torch.manual_seed(0)
    for lq, lk in [(1560, 1560), (1560, 769)]:
        q = torch.randn(2, lq, 40, 128, device=device, dtype=torch.bfloat16)
        k, v = (torch.randn(2, lk, 40, 128, device=device, dtype=torch.bfloat16) for _ in range(2))
        out = fa4.fa4_attention(q, k, v)
        exact = F.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
        err = (out.float() - exact).abs().max().item()
        assert err < 2e-2, err  # bf16 output rounding of values ~O(1)
