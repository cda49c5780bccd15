"""LPIPS / FID / FVD networks and the Fréchet distance (random weights saved in the published file layouts)."""

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from ex4d.errors import InputError
from ex4d.eval import features as ft
from ex4d.eval.harness import evaluate_dirs, evaluate_pair

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

ENV_VARS = ("EX4D_LPIPS_WEIGHTS", "EX4D_LPIPS_BACKBONE", "EX4D_INCEPTION_WEIGHTS", "EX4D_I3D_WEIGHTS",
            "EX4D_WEIGHTS_DIR")


@pytest.fixture(autouse=True)
def no_local_weights(monkeypatch, tmp_path):
    """Tests never see real weights that may sit in this machine's caches."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


@pytest.fixture
def small_inception(monkeypatch):
    """Run Inception at 75×75 (its smallest input) instead of 299×299: same layers, 16× less CPU time."""
    monkeypatch.setattr(ft.FIDInceptionV3, "input_size", 75)


# ---------------------------------------------------------------------------------------------------------------
# Fréchet distance
# ---------------------------------------------------------------------------------------------------------------

def sqrtm_frechet(mu1, s1, mu2, s2):
    """pytorch-fid's formula with scipy.linalg.sqrtm, as an independent check."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_closed_forms():
    # 1-D: (mu1 - mu2)² + (sigma1 - sigma2)².
    assert ft.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)
    # Diagonal covariances: |Δmu|² + Σ (√a - √b)².
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 5 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert ft.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)
    # The same Gaussians rotated together: the distance does not change.
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    assert ft.frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T) == pytest.approx(expected)
    # Against N(0, I): tr(I + S - 2 S^½) = Σ (1 - √λ)² over the eigenvalues of S.
    m = np.random.default_rng(1).normal(size=(4, 4))
    s = m @ m.T + 0.1 * np.eye(4)
    lam = np.linalg.eigvalsh(s)
    assert ft.frechet_distance(np.zeros(4), np.eye(4), np.zeros(4), s) == pytest.approx(((1 - np.sqrt(lam)) ** 2).sum())
    # General (non-commuting) covariances: agrees with pytorch-fid's sqrtm formula.
    rng = np.random.default_rng(2)
    m1, m2 = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = m1 @ m1.T, m2 @ m2.T
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    assert ft.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(sqrtm_frechet(mu1, s1, mu2, s2), rel=1e-9)
    assert ft.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_from_features():
    rng = np.random.default_rng(3)
    # Few samples in many dimensions (the sample-space path) and many samples (the covariance path) agree with
    # the covariance formula.
    for n1, n2, d in ((7, 5, 30), (60, 50, 4)):
        f1, f2 = rng.normal(size=(n1, d)), rng.normal(1.0, 2.0, size=(n2, d))
        for ddof in (0, 1):
            stats = ft.frechet_distance(*ft.feature_stats(f1, ddof), *ft.feature_stats(f2, ddof))
            # (rel 1e-7: with rank-deficient covariances the D×D path is the less exact one)
            assert ft.frechet_distance_from_features(f1, f2, ddof) == pytest.approx(stats, rel=1e-7)
        assert ft.frechet_distance_from_features(f1, f1) == pytest.approx(0.0, abs=1e-9)
    # Large samples of two known Gaussians converge to the closed form |Δmu|² + Σ (σ1 - σ2)².
    f1 = rng.normal([0.0, 0.0], [1.0, 2.0], size=(200_000, 2))
    f2 = rng.normal([1.0, -1.0], [3.0, 2.0], size=(200_000, 2))
    assert ft.frechet_distance_from_features(f1, f2) == pytest.approx(2 + 4, rel=0.01)
    with pytest.raises(ValueError):
        ft.frechet_distance_from_features(f1[:1], f2[:1])
    np.testing.assert_allclose(ft.feature_stats(f1[:3], ddof=1)[1], np.cov(f1[:3], rowvar=False))


# ---------------------------------------------------------------------------------------------------------------
# Weight files in the published layouts (random values)
# ---------------------------------------------------------------------------------------------------------------

def write_lpips_weights(folder, net, seed=0):
    """(lin file, backbone file) in the layouts of the LPIPS repo's v0.1/<net>.pth and torchvision's checkpoint."""
    torch.manual_seed(seed)
    features = ft.LPIPS(net).net.features
    backbone = {f"features.{k}": torch.randn_like(v) * 0.05 for k, v in features.state_dict().items()}
    backbone["classifier.1.weight"] = torch.randn(10, 4)  # torchvision's file also holds the classifier: ignored
    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(ft._LPIPS_TAPS[net][1])}
    lin_path, backbone_path = folder / ft.LPIPS_LINEAR[net].filename, folder / ft.LPIPS_BACKBONES[net].filename
    torch.save(lin, lin_path)
    torch.save(backbone, backbone_path)
    return lin_path, backbone_path


def random_inception_state(seed=0, keep_batch_counters=False):
    torch.manual_seed(seed)
    model = ft.FIDInceptionV3()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    state = model.state_dict()
    if not keep_batch_counters:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    return model, state


class FakeI3D(torch.nn.Module):
    """Stands in for StyleGAN-V's TorchScript I3D: same call signature, cheap 6-d features."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        y = x.float()
        if rescale:
            y = y / 127.5 - 1
        motion = (y[:, :, 1:] - y[:, :, :-1]).abs().mean(dim=(2, 3, 4))
        return torch.cat([y.mean(dim=(2, 3, 4)), motion], dim=1)


def write_fake_i3d(path):
    torch.jit.script(FakeI3D()).save(str(path))
    return path


# ---------------------------------------------------------------------------------------------------------------
# Missing / wrong weights
# ---------------------------------------------------------------------------------------------------------------

def test_missing_weights_name_file_origin_and_env_var(tmp_path, monkeypatch):
    cases = [(lambda: ft.load_inception(), "pt_inception-2015-12-05-6726825d.pth", "EX4D_INCEPTION_WEIGHTS",
              "github.com/mseitzer/pytorch-fid"),
             (lambda: ft.load_lpips("alex"), "alex.pth", "EX4D_LPIPS_WEIGHTS", "PerceptualSimilarity"),
             (lambda: ft.load_lpips("vgg"), "vgg.pth", "EX4D_LPIPS_WEIGHTS", "PerceptualSimilarity"),
             (lambda: ft.load_i3d(), "i3d_torchscript.pt", "EX4D_I3D_WEIGHTS", "dropbox.com")]
    for load, name, env, origin in cases:
        with pytest.raises(ft.MissingWeightsError) as info:
            load()
        msg = str(info.value)
        assert name in msg and env in msg and origin in msg and "\n" not in msg
        assert isinstance(info.value, InputError)
    # Backbone missing while the lin file is there.
    lin, backbone = write_lpips_weights(tmp_path, "vgg")
    backbone.unlink()
    monkeypatch.setenv("EX4D_LPIPS_WEIGHTS", str(lin))
    with pytest.raises(ft.MissingWeightsError, match="vgg16-397923af.pth.*EX4D_LPIPS_BACKBONE"):
        ft.load_lpips("vgg")
    # An env var naming a file that does not exist is reported as such.
    monkeypatch.setenv("EX4D_INCEPTION_WEIGHTS", str(tmp_path / "nope.pth"))
    with pytest.raises(ft.MissingWeightsError, match="nope.pth.*EX4D_INCEPTION_WEIGHTS.*does not exist"):
        ft.load_inception()


def test_weights_are_found_in_weights_dir_and_torch_cache(tmp_path, monkeypatch):
    lin, backbone = write_lpips_weights(tmp_path, "alex")
    monkeypatch.setenv("EX4D_WEIGHTS_DIR", str(tmp_path))
    assert ft.find_weights(ft.LPIPS_LINEAR["alex"]) == lin
    monkeypatch.delenv("EX4D_WEIGHTS_DIR")
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    backbone.rename(cache / backbone.name)
    assert ft.find_weights(ft.LPIPS_BACKBONES["alex"]) == cache / backbone.name
    monkeypatch.setenv("EX4D_LPIPS_WEIGHTS", str(tmp_path))  # a folder holding the standard name
    assert ft.find_weights(ft.LPIPS_LINEAR["alex"]) == lin


def test_wrong_files_are_reported(tmp_path):
    _, state = random_inception_state()
    del state["Mixed_7c.branch_pool.conv.weight"]
    torch.save(state, tmp_path / "a.pth")
    with pytest.raises(InputError, match="a.pth.*Mixed_7c.branch_pool.conv.weight"):
        ft.load_inception(tmp_path / "a.pth")
    state["Mixed_7c.branch_pool.conv.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "b.pth")
    with pytest.raises(InputError, match=r"shape \(3, 3\), expected \(192, 2048, 1, 1\)"):
        ft.load_inception(tmp_path / "b.pth")
    (tmp_path / "c.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="c.pth: not a readable PyTorch state dict"):
        ft.load_inception(tmp_path / "c.pth")
    with pytest.raises(InputError, match="not a TorchScript I3D"):
        ft.load_i3d(tmp_path / "c.pth")


# ---------------------------------------------------------------------------------------------------------------
# Architectures
# ---------------------------------------------------------------------------------------------------------------

def test_inception_matches_the_published_layout():
    model = ft.FIDInceptionV3()
    state = model.state_dict()
    # torchvision inception_v3 has 27,161,264 parameters; without AuxLogits (3,326,696) and with 1008 classes
    # (+16,392) that is pytorch-fid's network.
    assert sum(p.numel() for p in model.parameters()) == 27_161_264 - 3_326_696 + 16_392
    known = {"Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "Conv2d_1a_3x3.bn.running_var": (32,),
             "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3), "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
             "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
             "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
             "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
             "Mixed_7b.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
             "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1), "fc.weight": (1008, 2048), "fc.bias": (1008,)}
    for key, shape in known.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in state)


def test_inception_weights_round_trip(tmp_path, monkeypatch, small_inception):
    reference, state = random_inception_state(seed=1)
    torch.save(state, tmp_path / ft.INCEPTION_WEIGHTS.filename)
    monkeypatch.setenv("EX4D_INCEPTION_WEIGHTS", str(tmp_path / ft.INCEPTION_WEIGHTS.filename))
    torch.manual_seed(99)  # a different random init underneath
    model = ft.load_inception()
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key
    frames = np.random.default_rng(0).integers(0, 256, (2, 40, 56, 3), dtype=np.uint8)
    got = ft.inception_features(model, frames)
    assert got.shape == (2, 2048) and np.isfinite(got).all() and (got >= 0).all() and got.std() > 0
    with torch.no_grad():
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
        np.testing.assert_allclose(got, reference.eval()(x).double().numpy(), rtol=1e-5, atol=1e-6)


def independent_alex_lpips(lin_path, backbone_path, x0, x1):
    """LPIPS(alex) spelled out with F.conv2d from the two weight files."""
    bb, lin = torch.load(backbone_path), torch.load(lin_path)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(x):
        x = (x - shift) / scale
        out = []
        x = F.relu(F.conv2d(x, bb["features.0.weight"], bb["features.0.bias"], stride=4, padding=2))
        out.append(x)
        x = F.relu(F.conv2d(F.max_pool2d(x, 3, 2), bb["features.3.weight"], bb["features.3.bias"], padding=2))
        out.append(x)
        x = F.relu(F.conv2d(F.max_pool2d(x, 3, 2), bb["features.6.weight"], bb["features.6.bias"], padding=1))
        out.append(x)
        x = F.relu(F.conv2d(x, bb["features.8.weight"], bb["features.8.bias"], padding=1))
        out.append(x)
        x = F.relu(F.conv2d(x, bb["features.10.weight"], bb["features.10.bias"], padding=1))
        out.append(x)
        return out

    total = 0
    for k, (a, b) in enumerate(zip(taps(x0), taps(x1))):
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        w = lin[f"lin{k}.model.1.weight"].view(1, -1, 1, 1)
        total = total + ((a - b) ** 2 * w).sum(dim=1).mean(dim=(1, 2))
    return total


def test_lpips_alex_loads_published_layout_and_matches_an_independent_computation(tmp_path, monkeypatch):
    lin, backbone = write_lpips_weights(tmp_path, "alex")
    monkeypatch.setenv("EX4D_LPIPS_WEIGHTS", str(lin))
    monkeypatch.setenv("EX4D_LPIPS_BACKBONE", str(backbone))
    model = ft.load_lpips("alex")
    assert sum(p.numel() for p in model.net.parameters()) == 2_469_696  # torchvision AlexNet().features
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (3, 64, 72, 3), dtype=np.uint8)
    pred = np.clip(ref.astype(int) + rng.normal(0, 30, ref.shape), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(ft.lpips_frames(model, ref, ref), 0.0)
    got = ft.lpips_frames(model, pred, ref, batch_size=2)
    x0 = torch.from_numpy(pred).permute(0, 3, 1, 2).float() / 127.5 - 1
    x1 = torch.from_numpy(ref).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        expected = independent_alex_lpips(lin, backbone, x0, x1).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert (got > 0).all()
    np.testing.assert_allclose(ft.lpips_frames(model, ref, pred), got, rtol=1e-5)  # symmetric
    with pytest.raises(InputError, match="at least 32x32"):
        ft.lpips_frames(model, ref[:, :16, :16], ref[:, :16, :16])


def test_lpips_vgg_loads_published_layout(tmp_path):
    lin, backbone = write_lpips_weights(tmp_path, "vgg")
    model = ft.load_lpips("vgg", linear_path=lin, backbone_path=backbone)
    assert sum(p.numel() for p in model.net.parameters()) == 14_714_688  # torchvision vgg16().features
    state = torch.load(backbone)
    assert torch.equal(model.net.features[28].weight, state["features.28.weight"])  # conv5_3
    assert torch.equal(model.lin4.model[1].weight, torch.load(lin)["lin4.model.1.weight"])
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8) for _ in range(2))
    assert np.all(ft.lpips_frames(model, a, a) == 0) and np.all(ft.lpips_frames(model, a, b) > 0)
    with pytest.raises(InputError, match="network must be one of"):
        ft.LPIPS("squeeze")


def test_i3d_torchscript_and_clips(tmp_path):
    model = ft.load_i3d(write_fake_i3d(tmp_path / "i3d_torchscript.pt"))
    frames = np.random.default_rng(0).integers(0, 256, (35, 8, 8, 3), dtype=np.uint8)
    clips = ft.video_clips(frames, 16)
    assert clips.shape == (2, 16, 8, 8, 3)
    np.testing.assert_array_equal(clips[1, 0], frames[16])
    assert ft.video_clips(frames, 0).shape == (1, 35, 8, 8, 3)
    got = ft.i3d_features(model, clips)
    assert got.shape == (2, 6)
    expected_mean = clips[0].reshape(-1, 3).mean(axis=0) / 127.5 - 1  # the detector got rescale=True
    np.testing.assert_allclose(got[0, :3], expected_mean, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Through the harness
# ---------------------------------------------------------------------------------------------------------------

def test_feature_metrics_through_the_harness(tmp_path, monkeypatch, small_inception):
    lin, backbone = write_lpips_weights(tmp_path, "alex")
    _, state = random_inception_state(seed=2)
    torch.save(state, tmp_path / ft.INCEPTION_WEIGHTS.filename)
    write_fake_i3d(tmp_path / ft.I3D_WEIGHTS.filename)
    monkeypatch.setenv("EX4D_WEIGHTS_DIR", str(tmp_path))

    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    same = evaluate_pair(ref, ref, metrics="lpips,fid,fvd", device="cpu", fvd_frames=2)
    assert same["lpips"] == 0.0
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    assert same["fvd"] == pytest.approx(0.0, abs=1e-9)
    pred = ref.copy()
    pred[:, :, :16] = 255 - pred[:, :, :16]
    diff = evaluate_pair(pred, ref, metrics="lpips,fvd", device="cpu", fvd_frames=2)
    assert diff["lpips"] > 0 and diff["fvd"] > 0 and len(diff["per_frame"]["lpips"]) == 4
    with pytest.raises(InputError, match="FVD uses clips of 16 frames but the video has 4"):
        evaluate_pair(ref, ref, metrics="fvd", device="cpu")

    # Dataset level: FVD over all clips of the set and of each bucket.
    for d in ("p", "r"):
        (tmp_path / d).mkdir()
    for name, offset in (("a_30", 0), ("b_30", 40), ("c_90", 0)):
        np.savez(tmp_path / "r" / f"{name}.npz", frames=ref)
        np.savez(tmp_path / "p" / f"{name}.npz", frames=(ref.astype(int) + offset).clip(0, 255).astype(np.uint8))
    res = evaluate_dirs(tmp_path / "p", tmp_path / "r", metrics="psnr,fvd", device="cpu", fvd_frames=2)
    assert res["buckets"]["extreme"]["mean"]["fvd"] == pytest.approx(0.0, abs=1e-9)
    assert res["buckets"]["small"]["mean"]["fvd"] > 0 and res["mean"]["fvd"] > 0
    assert "fvd" not in res["videos"][0]  # FVD is a set-level number
