"""Windowed generation: the plan's alignment rules, conditioning on what is already generated, exact lengths,
cross-fades, resuming, and the one-window case equal to a plain call of the pipeline."""

import numpy as np
import pytest

from ex4d.errors import InputError
from ex4d.inpaint.windows import WindowStore, generate_windows
from ex4d.utils.windows import model_frames, plan_windows


@pytest.mark.parametrize("window,overlap", [(49, 8), (81, 16), (13, 4), (49, 20)])
@pytest.mark.parametrize("n", [1, 5, 12, 13, 14, 48, 49, 50, 81, 82, 88, 89, 90, 97, 241, 1000])
def test_plan_covers_the_clip_with_aligned_windows(n, window, overlap):
    plan = plan_windows(n, window, overlap)
    assert plan[0].start == 0 and plan[-1].stop == n and plan[0].shared == 0
    for prev, win in zip(plan, plan[1:]):
        assert win.shared == prev.stop - win.start == overlap + 1  # the shared frames are latent-aligned
        assert win.start - prev.start == window - 1 - overlap
    for a, b in zip(plan, plan[2:]):
        assert b.start >= a.stop  # a window shares frames with its neighbours only
    for win in plan:
        assert len(win) <= win.num_frames <= window and win.num_frames % 4 == 1
        assert win.num_frames - len(win) < 4  # padded to the next 4k+1 only
    if n <= window:
        assert len(plan) == 1 and (n % 4 != 1 or plan[0].num_frames == n)


@pytest.mark.parametrize("window,overlap", [(48, 8), (9, 4), (49, 6), (49, 0), (49, 24)])
def test_plan_refuses_misaligned_settings(window, overlap):
    with pytest.raises(InputError, match="--window"):
        plan_windows(100, window, overlap)


class FakeModel:
    """A deterministic stand-in for one model call: each output frame depends on the conditioning frame at that
    position, the mask and the seed, so that what went in can be checked; records every call."""

    def __init__(self, fail_at: int | None = None):
        self.calls, self.fail_at = [], fail_at

    def __call__(self, color, mask, num_frames, seed):
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt("killed")
        self.calls.append((color.copy(), mask.copy(), num_frames, seed))
        idx = list(range(len(color))) + [len(color) - 1] * (num_frames - len(color))  # the pipeline's padding
        c, m = color[idx].astype(np.int64), mask[idx].astype(np.int64)
        seen = (m[..., None] if m.ndim == 3 else m) >= 128
        return np.where(seen, c, (c * 3 + 17 * seed + 5) % 256).astype(np.uint8)


def _clip(n, h=6, w=5, seed=0):
    rng = np.random.default_rng(seed)
    color = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    mask = np.where(rng.random((n, h, w)) < 0.5, 255, 0).astype(np.uint8)
    return color, mask


@pytest.mark.parametrize("n", [12, 13, 14, 36, 37, 38, 60])
def test_each_window_is_conditioned_on_the_previous_windows_output(n):
    color, mask = _clip(n)
    model = FakeModel()
    out = generate_windows(model, color, mask, seed=10, window=13, overlap=4)
    plan = plan_windows(n, 13, 4)
    assert out.shape == (n, 6, 5, 3) and len(model.calls) == len(plan)
    outputs = []
    for k, (win, (c, m, num_frames, seed)) in enumerate(zip(plan, model.calls)):
        assert seed == 10 + k and num_frames == win.num_frames and len(c) == len(win)
        if k:
            prev, prev_win = outputs[-1], plan[k - 1]
            # the shared frames are the previous window's outputs, bit for bit, given as seen
            np.testing.assert_array_equal(c[:win.shared], prev[win.start - prev_win.start:])
            assert (m[:win.shared] == 255).all()
        np.testing.assert_array_equal(c[win.shared:], color[win.start + win.shared:win.stop])  # the render after
        np.testing.assert_array_equal(m[win.shared:], mask[win.start + win.shared:win.stop])
        outputs.append(model(c, m, num_frames, seed)[:len(win)])
    # outside the shared frames the result is each window's own output; inside, a cross-fade from one to the next
    for k, win in enumerate(plan):
        np.testing.assert_array_equal(out[win.start + win.shared:win.stop - (plan[k + 1].shared if k + 1 < len(plan)
                                                                              else 0)],
                                      outputs[k][win.shared:len(win) - (plan[k + 1].shared if k + 1 < len(plan)
                                                                       else 0)])
        if k:
            first, last = win.start, win.start + win.shared - 1
            np.testing.assert_array_equal(out[first], outputs[k - 1][first - plan[k - 1].start])
            np.testing.assert_array_equal(out[last], outputs[k][win.shared - 1])


def test_one_window_is_one_plain_call():
    color, mask = _clip(13)
    model = FakeModel()
    out = generate_windows(model, color, mask, seed=3, window=13, overlap=4)
    assert len(model.calls) == 1 and model.calls[0][2] == 13 and model.calls[0][3] == 3
    np.testing.assert_array_equal(out, FakeModel()(color, mask, 13, 3))


def test_a_killed_run_resumes_at_its_first_unfinished_window(tmp_path):
    color, mask = _clip(60)
    settings = {"seed": 1, "steps": 2}
    key = WindowStore.digest(color, mask, settings)
    whole = generate_windows(FakeModel(), color, mask, seed=1, window=13, overlap=4)
    killed = FakeModel(fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        generate_windows(killed, color, mask, seed=1, window=13, overlap=4, store=WindowStore(tmp_path, key))
    assert len(killed.calls) == 3 and len(list(tmp_path.glob("window_*.npz"))) == 3
    resumed = FakeModel()
    out = generate_windows(resumed, color, mask, seed=1, window=13, overlap=4, store=WindowStore(tmp_path, key))
    np.testing.assert_array_equal(out, whole)
    assert [s for *_, s in resumed.calls] == [1 + k for k in range(3, len(plan_windows(60, 13, 4)))]
    # other inputs: another key, nothing reused
    other = FakeModel()
    color2 = 255 - color
    generate_windows(other, color2, mask, seed=1, window=13, overlap=4,
                     store=WindowStore(tmp_path, WindowStore.digest(color2, mask, settings)))
    assert len(other.calls) == len(plan_windows(60, 13, 4))


def test_tiny_model_one_window_equals_todays_call_and_long_clips_keep_their_length(pipe):
    """With the tiny Wan model: a 22-frame clip comes out with 22 frames; its first window is exactly the pipeline's
    own call on the first 13 frames (today's one-window generation: same seed, same inputs)."""
    color, mask = _clip(22, 32, 32, seed=4)
    kw = dict(height=32, width=32, num_inference_steps=2, guidance_scale=5.0, mask_erode=0, output_type="np")

    def run_window(c, m, num_frames, seed):
        return pipe(c, m, num_frames=num_frames, seed=seed, **kw).frames

    direct = pipe(color[:13], mask[:13], num_frames=13, seed=0, **kw).frames
    out = generate_windows(run_window, color, mask, seed=0, window=13, overlap=4)
    assert out.shape == (22, 32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:8], direct[:8])  # before the first shared frame: window 0 untouched


def test_model_frames_is_the_generation_stages_rounding():
    from ex4d.inpaint.preprocess import round_num_frames

    assert all(model_frames(n) == round_num_frames(n) for n in range(1, 400))
