import numpy as np
import pytest
import torch

from ex4d.errors import InputError
from ex4d.inpaint.preprocess import (
    check_size,
    encoder_mask_input,
    erode,
    erosion_kernels,
    prepare_videos,
    reference_frame_indices,
    round_num_frames,
    round_size,
)

from .tiny import tiny_videos


def brute_erode(img: np.ndarray, k: int) -> np.ndarray:
    """cv2.erode with a k×k kernel of ones, anchor (k//2, k//2), border value +inf (no erosion from outside)."""
    h, w = img.shape
    a = k // 2
    out = np.empty_like(img)
    for y in range(h):
        for x in range(w):
            ys = slice(max(y - a, 0), min(y - a + k, h))
            xs = slice(max(x - a, 0), min(x - a + k, w))
            out[y, x] = img[ys, xs].min()
    return out


@pytest.mark.parametrize("k", [2, 3, 4, 7, 8])
def test_erode_matches_opencv_semantics(k):
    rng = np.random.default_rng(k)
    img = (rng.random((13, 17)) > 0.2).astype(np.float32) * 255
    got = erode(torch.from_numpy(img), k).numpy()
    np.testing.assert_array_equal(got, brute_erode(img, k))


def test_all_white_frame_survives_erosion():
    white = torch.full((3, 16, 16), 255.0)
    assert torch.equal(erode(white, 8), white)


def test_kernels_seeded_and_in_range():
    a = erosion_kernels(200, erode_seed=3)
    assert a == erosion_kernels(200, erode_seed=3) and a != erosion_kernels(200, erode_seed=4)
    assert set(a) == set(range(2, 9))
    assert erosion_kernels(4, mask_erode=5) == [5] * 4 and erosion_kernels(2, mask_erode=0) == [0, 0]
    with pytest.raises(InputError):
        erosion_kernels(2, mask_erode=-1)


def test_frame_indices_and_rounding():
    assert reference_frame_indices(100, 5) == [0, 24, 49, 74, 99]
    assert reference_frame_indices(3, 5) == [0, 1, 2, 2, 2]
    assert [round_num_frames(t) for t in (49, 48, 47, 50, 1, 2)] == [49, 49, 49, 53, 1, 5]
    assert round_size(500, 270) == (512, 272)
    with pytest.raises(InputError, match="4k\\+1"):
        check_size(48, 512, 512)
    with pytest.raises(InputError, match="multiples of 16"):
        check_size(49, 500, 512)


def test_prepare_videos_values_and_shapes():
    color, mask = tiny_videos(9, 40, 48)
    v, m = prepare_videos(color, mask, 32, 48, mask_erode=0)
    assert v.shape == m.shape == (1, 3, 9, 32, 48)
    assert set(torch.unique(m).tolist()) == {-1.0, 1.0}
    assert v.min() >= -1 and v.max() <= 1
    assert (v[m < 0] == -1).all()  # unseen pixels are black
    assert (m[:, :, 0] == 1).all()  # frame 0 fully seen
    assert set(torch.unique(encoder_mask_input(m)).tolist()) == {-3.0, 1.0}  # the double scaling


def test_prepare_videos_exact_formula():
    color = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    mask = np.where(np.random.default_rng(1).random((5, 16, 16)) > 0.5, 255, 0).astype(np.uint8)
    v, m = prepare_videos(color, mask, 16, 16, mask_erode=0)
    mb = torch.from_numpy(mask > 127).float()
    want_v = (torch.from_numpy(color).float() / 255 * mb[..., None]) * 2 - 1
    assert torch.allclose(v[0].permute(1, 2, 3, 0), want_v)
    assert torch.equal(m[0, 0], mb * 2 - 1)


def test_seeded_erosion_is_deterministic_and_erodes():
    color, mask = tiny_videos(9, 32, 32)
    a = prepare_videos(color, mask, 32, 32, erode_seed=1)[1]
    b = prepare_videos(color, mask, 32, 32, erode_seed=1)[1]
    none = prepare_videos(color, mask, 32, 32, mask_erode=0)[1]
    fixed = prepare_videos(color, mask, 32, 32, mask_erode=8)[1]
    assert torch.equal(a, b)
    assert (a <= none).all() and (a < none).any()
    assert (fixed <= a).all()


def test_sampling_and_padding():
    color, mask = tiny_videos(3, 16, 16)
    v, _ = prepare_videos(color, mask, 16, 16, num_frames=5, mask_erode=0)
    assert v.shape[2] == 5 and torch.equal(v[:, :, 2], v[:, :, 4])


def test_bad_inputs():
    color, mask = tiny_videos(9, 32, 32)
    with pytest.raises(InputError, match="length"):
        prepare_videos(color, mask[:5], 32, 32)
    with pytest.raises(InputError, match="size"):
        prepare_videos(color, mask[:, :16], 32, 32)
    with pytest.raises(InputError, match="4k\\+1"):
        prepare_videos(color[:8], mask[:8], 32, 32)
    with pytest.raises(InputError, match="uint8"):
        prepare_videos(color.astype(np.float32), mask, 32, 32)
    with pytest.raises(InputError, match="multiples of 16"):
        prepare_videos(color, mask, 30, 32)


@pytest.mark.gpu
def test_preprocessing_on_cuda_equals_cpu():
    """The pipeline preprocesses on its execution device: the same tensors as on the CPU (no resize: bit-exact)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    rng = np.random.default_rng(0)
    color = rng.integers(0, 256, (9, 64, 96, 3), dtype=np.uint8)
    mask = np.where(rng.random((9, 64, 96)) < 0.3, 0, 255).astype(np.uint8)
    for size in ((64, 96), (48, 80)):
        cpu = prepare_videos(color, mask, *size, mask_erode=None, erode_seed=3)
        gpu = prepare_videos(color, mask, *size, mask_erode=None, erode_seed=3, device="cuda")
        assert all(g.device.type == "cuda" for g in gpu)
        for a, b in zip(cpu, gpu):
            if size == (64, 96):
                assert torch.equal(a, b.cpu())
            else:  # bilinear resize: float rounding may move a value across a .5 before rounding
                assert (a != b.cpu()).float().mean() < 1e-3
