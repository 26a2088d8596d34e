"""Perceptual distances: SSIM on known inputs, VGG19 weights resolution and loading."""

import pytest
import torch
import torchvision

from pipeline import perceptual
from pipeline.perceptual import (
    MultiScaleL1SSIM,
    VGG19Distance,
    WeightsUnavailable,
    perceptual_distance,
    resolve_vgg19_weights,
)
from pipeline.similarity import psnr, ssim


def test_ssim_of_constant_images_has_a_closed_form():
    # Constant images: variances and covariance are 0, so SSIM = (2ab + c1) / (a^2 + b^2 + c1).
    a, b = 0.3, 0.7
    x = torch.full((1, 3, 16, 16), a * 2 - 1)
    y = torch.full((1, 3, 16, 16), b * 2 - 1)
    c1 = 0.01 ** 2
    # float32 round-off in E[x^2] - mu^2 leaves ~1e-5 of spurious variance: compare to 1e-4.
    assert ssim(x, y).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-4)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)


def test_multiscale_distance_grows_with_noise():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    d = MultiScaleL1SSIM()
    small, large = d(x, x + 0.05 * torch.randn_like(x)), d(x, x + 0.5 * torch.randn_like(x))
    assert d(x, x).item() == pytest.approx(0.0, abs=1e-6) and 0 < small < large


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """VGG19 weights in torchvision's format (random values; the features part is enough)."""
    torch.manual_seed(0)
    state = {k: v for k, v in torchvision.models.vgg19(weights=None).state_dict().items()
             if k.startswith("features.")}
    path = tmp_path_factory.mktemp("weights") / "vgg19-local.pth"
    torch.save(state, path)
    return path


def test_vgg19_loads_from_a_local_file(vgg_file):
    distance = perceptual_distance("vgg19-imagenet", vgg_file)
    reference = torchvision.models.vgg19(weights=None)
    reference.load_state_dict(torch.load(vgg_file, weights_only=True), strict=False)
    assert torch.equal(distance.vgg.features[0].weight, reference.features[0].weight)
    x = torch.rand(2, 3, 8, 8) * 2 - 1  # an 8x8 pyramid level works too
    assert distance(x, x).item() == 0.0 and distance(x, -x).item() > 0


def test_missing_and_wrong_weights_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(WeightsUnavailable, match="weights file not found"):
        resolve_vgg19_weights(tmp_path / "nope.pth", allow_download=False)
    (tmp_path / "bad.pth").write_bytes(b"not weights")
    with pytest.raises(WeightsUnavailable, match="bad.pth: not VGG19 weights"):
        VGG19Distance(tmp_path / "bad.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsUnavailable, match="multiscale-l1-ssim"):
        perceptual_distance("vgg19-imagenet", None, allow_download=False)


def test_hub_cache_and_download_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints" / perceptual.VGG19_FILE
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"something else")
    with pytest.raises(WeightsUnavailable, match="is not torchvision's VGG19"):
        resolve_vgg19_weights(None, allow_download=False)
    cache.unlink()

    # the network: wrong bytes arrive
    def fake_download(url, dst, hash_prefix=None, progress=False):
        assert url == perceptual.VGG19_URL
        with open(dst, "wb") as f:
            f.write(b"tampered")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(WeightsUnavailable, match="is not torchvision's VGG19"):
        resolve_vgg19_weights(None, allow_download=True)
    assert list(cache.parent.iterdir()) == []  # nothing half-checked left in the cache


def test_unknown_backbone():
    from pipeline.errors import PipelineError
    with pytest.raises(PipelineError, match="unknown perceptual backbone"):
        perceptual_distance("lpips")


def test_psnr_matches_its_definition():
    x = torch.zeros(2, 3, 8, 8)
    y = x.clone()
    y[0] += 0.2  # mse 0.04 on a peak of 2: 10 log10(4 / 0.04) = 20 dB
    y[1] += 0.02  # 40 dB
    assert psnr(x, y).tolist() == pytest.approx([20.0, 40.0], abs=1e-4)
    assert psnr(x, x).tolist() == pytest.approx([100.0, 100.0])
