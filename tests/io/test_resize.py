"""ex4d.io.resize reproduces cv2.resize(..., INTER_LINEAR) on uint8 images bit for bit."""

import numpy as np
import pytest

from ex4d.io.resize import resize_linear_u8


def _cv2():
    return pytest.importorskip("cv2")


def _cv2_resize(img, height, width):
    cv2 = _cv2()
    out = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    return out.reshape(height, width, *img.shape[2:])  # cv2 drops a trailing channel axis of 1


def test_hand_worked_upscale():
    # 1×2 -> 1×4: source positions -0.25 (edge), 0.25, 0.75, 1.25 (edge); 11-bit weights 512/1536, then the
    # uint8 vertical pass ((2048·(h >> 4)) >> 16 + 2) >> 2: 255·0.25 -> 64, 255·0.75 -> 191.
    img = np.array([[0, 255]], np.uint8)
    np.testing.assert_array_equal(resize_linear_u8(img, 1, 4), [[0, 64, 191, 255]])


def test_exact_half_is_area_average_rounded_up():
    # OpenCV turns an exact 2× downscale into its fast area path: (a + b + c + d + 2) >> 2.
    img = np.array([[0, 1], [1, 0]], np.uint8)  # mean 0.5 -> 1 (round half up), not round-half-even's 0
    np.testing.assert_array_equal(resize_linear_u8(img, 1, 1), [[1]])


def test_same_size_returns_input():
    img = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    assert resize_linear_u8(img, 2, 4) is img


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        resize_linear_u8(np.zeros((4, 4), np.float32), 2, 2)
    with pytest.raises(ValueError, match="positive"):
        resize_linear_u8(np.zeros((4, 4), np.uint8), 0, 2)


@pytest.mark.parametrize("seed", range(4))
def test_matches_opencv_on_random_sizes(seed):
    rng = np.random.default_rng(seed)
    for trial in range(150):
        H, W = (int(v) for v in rng.integers(1, 70, 2))
        h, w = (int(v) for v in rng.integers(1, 140, 2))
        if trial % 10 == 0:  # exact 2× down (OpenCV's area path) and exact 2× up
            h, w = (max(1, H // 2), max(1, W // 2)) if trial % 20 == 0 else (2 * H, 2 * W)
            H, W = (2 * h, 2 * w) if trial % 20 == 0 else (H, W)
        channels = [(), (1,), (2,), (3,), (4,)][trial % 5]
        img = rng.integers(0, 256, (H, W, *channels), dtype=np.uint8)
        np.testing.assert_array_equal(resize_linear_u8(img, h, w), _cv2_resize(img, h, w),
                                      err_msg=f"{img.shape} -> {h}x{w}")


@pytest.mark.parametrize("src, dst", [((270, 480), (256, 448)), ((360, 640), (384, 640)), ((240, 426), (256, 448)),
                                      ((96, 160), (576, 1024)), ((1000, 64), (500, 32))])
def test_matches_opencv_on_video_sizes(src, dst):
    # The reference's working sizes (multiples of 64) from common video sizes, with extreme pixel values too.
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    img[::7] = 255
    img[1::11] = 0
    np.testing.assert_array_equal(resize_linear_u8(img, *dst), _cv2_resize(img, *dst))


def test_differs_from_float_bilinear():
    # Why this module exists: a float bilinear filter rounded to uint8 is off by one on a share of the pixels.
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    flt = F.interpolate(x, size=(64, 128), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    flt = flt.round().clamp(0, 255).to(torch.uint8).numpy()
    ours = resize_linear_u8(img, 64, 128)
    diff = np.abs(ours.astype(int) - flt.astype(int))
    assert diff.max() == 1 and 0.01 < (diff > 0).mean() < 0.5


def test_planes_batch_equals_opencv_per_frame():
    # Frames (T, C, H, W) as the generation preprocessing holds them: each frame as cv2 resizes the (H, W, C) image.
    torch = pytest.importorskip("torch")
    from ex4d.io.resize import resize_planes_u8

    rng = np.random.default_rng(11)
    frames = rng.integers(0, 256, (3, 45, 70, 3), dtype=np.uint8)
    for h, w in [(32, 48), (90, 140), (51, 33)]:
        planes = torch.from_numpy(frames).permute(0, 3, 1, 2)
        out = resize_planes_u8(planes, h, w).permute(0, 2, 3, 1).numpy()
        expected = np.stack([_cv2_resize(f, h, w) for f in frames])
        np.testing.assert_array_equal(out, expected)


def test_generation_preprocessing_resizes_as_opencv():
    # generate.py resizes the colour and mask renders with cv2.resize(frame, (width, height)) before anything else.
    from ex4d.inpaint.preprocess import prepare_videos

    rng = np.random.default_rng(5)
    color = rng.integers(0, 256, (5, 36, 60, 3), dtype=np.uint8)
    mask = np.full((5, 36, 60), 255, np.uint8)
    video, _ = prepare_videos(color, mask, 32, 48, mask_erode=0)  # all seen: video = colour/255·2 − 1
    expected = np.stack([_cv2_resize(f, 32, 48) for f in color]).astype(np.float32) / 255.0 * 2 - 1
    np.testing.assert_allclose(video[0].permute(1, 2, 3, 0).numpy(), expected, rtol=0, atol=1e-6)


@pytest.mark.gpu
def test_planes_on_cuda_equal_cpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from ex4d.io.resize import resize_planes_u8

    x = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (4, 3, 90, 160), dtype=np.uint8))
    for h, w in [(64, 128), (45, 80), (200, 300)]:
        assert torch.equal(resize_planes_u8(x.cuda(), h, w).cpu(), resize_planes_u8(x, h, w))
