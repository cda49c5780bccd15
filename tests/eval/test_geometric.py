import numpy as np
import pytest

from ex4d.eval.geometric import mask_metrics, masked_psnr


def test_mask_metrics_on_a_known_case():
    obs = np.zeros((2, 4, 4), bool)
    obs[:, :2] = True  # 16 observable pixels
    seen = obs.copy()
    seen[0, 0, 0] = False  # one missed
    seen[1, 3, 3] = True  # one leaked
    m = mask_metrics(seen, obs)
    assert m["leak_rate"] == pytest.approx(1 / 16)
    assert m["mask_recall"] == pytest.approx(15 / 16)
    assert m["mask_iou"] == pytest.approx(15 / 17)
    assert mask_metrics(obs, obs) == {"leak_rate": 0.0, "mask_recall": 1.0, "mask_iou": 1.0}
    with pytest.raises(ValueError):
        mask_metrics(seen, obs[0])


def test_masked_psnr_known_values():
    ref = np.full((2, 3, 3, 3), 100, np.uint8)
    assert masked_psnr(ref, ref) == float("inf")
    pred = ref.astype(np.int64) + 10  # mse = 100 -> 10 log10(255^2 / 100)
    assert masked_psnr(pred, ref) == pytest.approx(10 * np.log10(255**2 / 100))
    mask = np.zeros((2, 3, 3), bool)
    mask[0, 0, 0] = True
    pred2 = ref.astype(np.int64).copy()
    pred2[1] += 50  # outside the mask: ignored
    assert masked_psnr(pred2, ref, mask) == float("inf")
    assert np.isnan(masked_psnr(pred2, ref, np.zeros_like(mask)))
