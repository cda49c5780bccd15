"""``ex4d depth --backend depthcrafter`` from an mp4 equals the reference's depth step (EX-4D's reader + Tencent's
pipeline + EX-4D's conversion, restated in ``reference_depthcrafter.py``) stage by stage, on tiny weights in the
published layouts, with EX-4D's settings (5 steps, guidance 1, seed 42), fp32 on the CPU, over 3 windows with
overlap (the last one shorter) and across the pipeline's chunks of 8 frames."""

import numpy as np
import pytest
import torch

from . import reference_depthcrafter as ref

# 10 frames: 3 windows (0-5, 3-8, 6-10) and two chunks of 8 for CLIP, VAE encode and decode
NUM_FRAMES, WINDOW, OVERLAP = 10, 5, 2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models are dominated by per-op overhead; one thread is several times faster on a shared 2-core machine
    # (both pipelines run under the same setting, so the comparison is unaffected).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _source_frames(T=NUM_FRAMES, H=58, W=80):
    """Textured frames with a moving box; 58×80 becomes the reference's 64×64 (up in H, down in W)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    out = []
    for t in range(T):
        img = np.stack([128 + 90 * np.sin(xx / 5.0 + t / 3), 128 + 90 * np.cos(yy / 6.0), 60 + 2 * xx], -1)
        img[15:40, 10 + 6 * t:35 + 6 * t] = [230, 40, 40]
        out.append(np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


def _encode(path, frames, pix_fmt="yuv420p"):
    """H.264 without colour tags (as EX-4D's own example input): OpenCV 4.x converts every stream with BT.601,
    OpenCV 5 and PyAV honour a BT.709 tag, so only untagged streams decode alike under every OpenCV version."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format=pix_fmt)))
        container.mux(stream.encode())
    return path


def _run_both(root, dc_dirs, num_frames=NUM_FRAMES, window=WINDOW, overlap=OVERLAP, steps=5, guidance=1.0):
    """The reference and ``ex4d depth`` on the same mp4; ex4d's intermediate tensors are captured on the way."""
    pytest.importorskip("cv2")
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from ex4d.cli import main
    from ex4d.depth.depthcrafter import DepthCrafterBackend

    unet_root, svd_root = dc_dirs  # tiny.save_depthcrafter: the published layouts
    video_path = _encode(root / "in.mp4", _source_frames(T=num_frames))

    # the reference: its reader, components loaded as DepthCrafterDemo loads them (here in fp32)
    frames = ref.read_frames(video_path, num_frames)
    unet = UNetSpatioTemporalConditionModel.from_pretrained(unet_root).eval()
    vae = AutoencoderKLTemporalDecoder.from_pretrained(svd_root / "vae", variant="fp16",
                                                       torch_dtype=torch.float32).eval()
    encoder = CLIPVisionModelWithProjection.from_pretrained(svd_root / "image_encoder", variant="fp16",
                                                            dtype=torch.float32).eval()
    processor = CLIPImageProcessor.from_pretrained(svd_root / "feature_extractor")
    scheduler = EulerDiscreteScheduler.from_pretrained(svd_root / "scheduler")
    reference = ref.run_pipeline(frames, unet, vae, encoder, processor, scheduler, steps=steps, guidance=guidance,
                                 window=window, overlap=overlap)
    reference["frames"] = frames

    # ex4d, end to end through the CLI, with a spy on the backend's inference
    ours = {}
    infer = DepthCrafterBackend.infer

    def spy(self, frames, progress=True, trace=None):
        ours["frames"] = frames
        ours["decoded"] = infer(self, frames, progress, trace=ours)  # (T, 3, h, w) in [0, 1]
        return ours["decoded"]

    out = root / "depth.npz"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DepthCrafterBackend, "infer", spy)
        code = main(["depth", "--input-video", str(video_path), "--output", str(out), "--backend", "depthcrafter",
                     "--depth-model", str(unet_root), "--depth-svd", str(svd_root), "--depth-window", str(window),
                     "--depth-overlap", str(overlap), "--depth-steps", str(steps), "--depth-guidance", str(guidance),
                     "--num-frames", str(num_frames), "--device", "cpu", "--depth-dtype", "fp32", "--no-download",
                     "--quiet"])
    assert code == 0
    with np.load(out) as z:
        ours["depth"] = z["depth"]
    return reference, ours


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dc_dirs):
    """EX-4D's settings: 5 steps, guidance 1, seed 42; 3 windows."""
    return _run_both(tmp_path_factory.mktemp("dc_parity"), dc_dirs)


def test_frames_are_the_references_bit_for_bit(runs):
    reference, ours = runs
    assert reference["frames"].shape == (NUM_FRAMES, 64, 64, 3)
    np.testing.assert_array_equal(ours["frames"], reference["frames"])


@pytest.mark.parametrize("stage", ["video", "context", "cond", "init_noise", "latents", "decoded"])
def test_pipeline_stages_match(runs, stage):
    reference, ours = runs
    torch.testing.assert_close(ours[stage], reference[stage], rtol=0, atol=0)


def test_three_windows_with_overlap_match(runs):
    reference, ours = runs
    assert len(reference["windows"]) == 3
    assert [w.shape[1] for w in reference["windows"]] == [5, 5, 4]
    for a, b in zip(ours["windows"], reference["windows"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_depth_from_the_mp4_matches(runs):
    reference, ours = runs
    assert ours["depth"].shape == reference["depth"].shape == (NUM_FRAMES, 64, 64)
    rel = np.abs(ours["depth"].astype(np.float64) - reference["depth"]) / reference["depth"]
    assert rel.max() <= 1e-4  # the target; on the CPU in fp32 it is 0 (every stage is bit-identical)
    np.testing.assert_array_equal(ours["depth"], reference["depth"])


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv422p", "yuv444p"])
def test_decode_matches_opencvs_reader(tmp_path, pix_fmt):
    # EX-4D decodes with cv2.VideoCapture (BGR) + cvtColor(BGR2RGB); ex4d decodes with PyAV to RGB: the same values
    # for untagged 8-bit video (10-bit sources, and BT.709-tagged ones under OpenCV 4.x, convert differently).
    cv2 = pytest.importorskip("cv2")
    from ex4d.io.video import load_video

    path = _encode(tmp_path / f"{pix_fmt}.mp4", _source_frames(T=3, H=38, W=54), pix_fmt)
    cap = cv2.VideoCapture(str(path))
    expected = []
    while len(expected) < 3:
        ok, bgr = cap.read()
        assert ok
        expected.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    ours = load_video(path, num_frames=3, height=38, width=54).frames
    np.testing.assert_array_equal(ours, np.stack(expected))


def test_guidance_above_one_matches(tmp_path, dc_dirs):
    # Never used by EX-4D, but DepthCrafter's CFG (a second UNet call on zero latents and zero embeddings) is kept.
    reference, ours = _run_both(tmp_path, dc_dirs, num_frames=3, steps=2, guidance=2.5)
    torch.testing.assert_close(ours["latents"], reference["latents"], rtol=0, atol=0)
    np.testing.assert_array_equal(ours["depth"], reference["depth"])
