"""The StyleGAN2 teacher: shapes, and the two modulation forms computing the same function."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.layers import NoiseInjection, make_kernel, upfirdn2d
from pipeline.models.stylegan2 import (
    PRESETS,
    Discriminator,
    Generator,
    ModulatedConv2d,
    StyleGAN2Config,
    demodulation,
    minibatch_stddev,
)

TINY = StyleGAN2Config(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, mapping_lr_mul=0.01,
                       channel_base=128, channel_max=16, conv_clamp=None, noise=True)


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter a non-trivial value (fresh ones have zero biases and noise strength)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.2)
    return module


@pytest.mark.parametrize("up, demodulate, kernel_size", [
    (False, True, 3), (True, True, 3), (False, False, 1)])
def test_activation_modulation_equals_fused(up, demodulate, kernel_size):
    torch.manual_seed(0)
    conv = randomise(ModulatedConv2d(8, 6, kernel_size, 16, demodulate=demodulate, up=up))
    x, w = torch.randn(3, 8, 8, 8), torch.randn(3, 16)
    assert not conv.fused  # activation modulation is the default form
    activation = conv(x, w)
    conv.fused = True
    fused = conv(x, w)
    assert fused.shape == (3, 6, 16 if up else 8, 16 if up else 8)
    assert (fused - activation).abs().max() < 1e-5


def test_demodulation_stays_float32_under_autocast():
    style, weight = torch.randn(3, 8) * 3, torch.randn(6, 8, 3, 3) * 0.3
    exact = demodulation(style, weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (torch.randn(3, 8) @ torch.randn(8, 6)).dtype == torch.bfloat16  # it autocasts
        autocast = demodulation(style, weight)
    assert autocast.dtype == torch.float32 and torch.equal(autocast, exact)


@pytest.mark.parametrize("preset", ["tiny-64", None])
def test_generator_forms_agree_and_shapes(preset):
    config = PRESETS[preset] if preset else TINY
    torch.manual_seed(0)
    G = randomise(Generator(config))
    z = torch.randn(2, config.z_dim)
    fused = G.set_fused(True)(z, noise_mode="const")
    activation = G.set_fused(False)(z, noise_mode="const")
    assert fused.shape == (2, 3, config.resolution, config.resolution)
    assert (fused - activation).abs().max() < 1e-4
    logits = Discriminator(config)(fused)
    assert logits.shape == (2, 1)


def test_generator_without_noise_equals_zero_noise_strength():
    """noise=False drops the noise inputs: the same function as noise strengths of zero, with
    no noise parameters or buffers, and the same output in every noise mode."""
    torch.manual_seed(0)
    noisy = randomise(Generator(TINY))
    quiet = Generator(TINY.model_copy(update={"noise": False}))
    state = {k: v for k, v in noisy.state_dict().items() if ".noise" not in k}
    assert set(noisy.state_dict()) - set(state)  # the noise strengths and constant images
    quiet.load_state_dict(state)  # strict: nothing else differs
    for module in noisy.modules():
        if isinstance(module, NoiseInjection):
            module.weight.data.zero_()
    z = torch.randn(2, TINY.z_dim)
    reference = noisy(z, noise_mode="random")
    for mode in ("random", "const", "none"):
        assert torch.equal(quiet(z, noise_mode=mode), reference)


def test_noise_modes_and_truncation():
    torch.manual_seed(0)
    G = randomise(Generator(TINY))
    z = torch.randn(2, TINY.z_dim)
    assert torch.equal(G(z, noise_mode="const"), G(z, noise_mode="const"))
    assert not torch.equal(G(z, noise_mode="random"), G(z, noise_mode="random"))
    G.mapping(torch.randn(64, TINY.z_dim), update_w_avg=True)
    w = G.mapping(z)
    assert torch.allclose(G.mapping(z, psi=0.0), G.mapping.w_avg.expand_as(w))
    assert torch.allclose(G.mapping(z, psi=0.5), (w + G.mapping.w_avg) / 2, atol=1e-6)


def test_upfirdn2d_matches_a_direct_definition():
    # Upsample by zero insertion, then a full convolution with the 4-tap kernel, then crop:
    # the textbook definition, written with conv_transpose2d instead of pad + conv2d.
    x = torch.randn(1, 2, 5, 5)
    k = make_kernel() * 4
    up = torch.zeros(1, 2, 10, 10)
    up[:, :, ::2, ::2] = x
    direct = F.conv2d(F.pad(up, [2, 1, 2, 1]), k[None, None].expand(2, 1, 4, 4), groups=2)
    assert torch.allclose(upfirdn2d(x, k, up=2, pad=(2, 1)), direct, atol=1e-6)
    assert upfirdn2d(x, make_kernel(), pad=(1, 1), down=2).shape == (1, 2, 2, 2)  # (5+2-3)/2


def test_upfirdn2d_exports_the_same_values_with_4d_ops_only(monkeypatch):
    x, k = torch.randn(2, 3, 5, 5), make_kernel() * 4
    training = upfirdn2d(x, k, up=2, pad=(2, 1))
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    assert torch.equal(upfirdn2d(x, k, up=2, pad=(2, 1)), training)


def test_minibatch_stddev_feature():
    x = torch.randn(8, 3, 4, 4)
    out = minibatch_stddev(x)
    assert out.shape == (8, 4, 4, 4)
    group = x.reshape(4, 2, 3, 4, 4)
    expected = group.var(0, unbiased=False).add(1e-8).sqrt().mean(dim=(1, 2, 3))
    assert (torch.allclose(out[0, 3, 0, 0], expected[0])
            and torch.allclose(out[1, 3], expected[1].expand(4, 4)))


def test_config_f_parameter_count():
    # The official config-F 1024x1024 generator has 30,370,060 parameters.
    G = Generator(PRESETS["ffhq-1024"])
    assert sum(p.numel() for p in G.parameters()) == 30_370_060


def test_complexity_row_counts_params_and_flops():
    from pipeline.models.complexity import stylegan2_row

    row = stylegan2_row("tiny", TINY)
    assert row["params_M"] == pytest.approx(sum(p.numel() for p in Generator(TINY).parameters())
                                            / 1e6)
    # The 3x3 convs alone (TINY has 16 channels up to 8x8, 8 at 16x16): 2 * Cin * Cout * 9 * H * W,
    # with H, W the input size for the transposed (upsampling) convs.
    macs = 9 * (16 * 16 * 4 * 4            # 4x4 conv
                + 16 * 16 * 4 * 4          # up to 8x8
                + 16 * 16 * 8 * 8          # 8x8 conv
                + 16 * 8 * 8 * 8           # up to 16x16
                + 8 * 8 * 16 * 16)         # 16x16 conv
    convs = 2 * macs
    assert convs / 1e9 < row["gflops"] < 2 * convs / 1e9


def test_snapshot_of_another_version_is_a_clear_error(tmp_path):
    from pipeline.models.stylegan2 import TEACHER_KIND, load_teacher
    from pipeline.snapshot import CheckpointError, save_snapshot

    G = Generator(TINY)
    config = {k: v for k, v in TINY.to_dict().items() if k != "noise"}  # made before the key
    save_snapshot(tmp_path / "old.pt", TEACHER_KIND, G, config)
    with pytest.raises(CheckpointError,
                       match="does not match this version.*config.noise: missing"):
        load_teacher(tmp_path / "old.pt")
    save_snapshot(tmp_path / "other.pt", "something-else", G, TINY.to_dict())
    with pytest.raises(CheckpointError, match="expected a 'stylegan2-generator'"):
        load_teacher(tmp_path / "other.pt")
