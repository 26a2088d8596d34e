"""The BlazeStyleGAN student: pyramid, exact demodulation, mobile-only ops, Table 1 presets."""

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.blazestylegan import (
    PRESETS,
    BlazeStyleGAN,
    BlazeStyleGANConfig,
    ModulatedSeparableConv,
)
from pipeline.models.complexity import blaze_row

TINY = BlazeStyleGANConfig(resolution=32, z_dim=16, w_dim=16, mapping_layers=2,
                           mapping_lr_mul=0.01, channels=[16, 16, 8], head_channels=[8, 8, 8],
                           noise=True)


def test_pyramid_from_8x8_to_the_output_size():
    G = BlazeStyleGAN(TINY)
    image, pyramid = G(torch.randn(2, 16))
    assert [p.shape for p in pyramid] == [(2, 3, 8, 8), (2, 3, 16, 16), (2, 3, 32, 32)]
    assert image is pyramid[-1]
    ws = G.mapping(torch.randn(2, 16))[:, None].expand(-1, G.num_ws, -1)
    assert torch.equal(G.synthesis.final_image(ws), G.synthesis(ws)[0])


def test_blocks_run_at_a_quarter_of_the_level_resolution():
    G = BlazeStyleGAN(TINY)
    ws = torch.zeros(1, G.num_ws, 16)
    assert [x.shape[-1] for _, x, _ in G.synthesis.features(ws)] == [2, 4, 8]


@pytest.mark.parametrize("noise", [False, True])
def test_separable_demodulation_equals_a_per_sample_weight_convolution(noise):
    # The reference: StyleGAN2's modulated conv with the composed (pointwise o depthwise) weight,
    # built per sample and demodulated explicitly, then noise, bias and lrelu_gain as written.
    torch.manual_seed(0)
    conv = ModulatedSeparableConv(6, 5, 16, 8, noise=noise)
    with torch.no_grad():
        conv.bias.normal_()
        if noise:
            conv.noise_strength.fill_(0.3)
    x, w = torch.randn(3, 6, 8, 8), torch.randn(3, 16, 1, 1)
    s = conv.style(w)[:, :, 0, 0]
    composed = ((conv.pointwise * conv.pw_scale)[:, :, 0, 0, None, None]
                * (conv.depthwise * conv.dw_scale)[None, :, 0])
    expected = []
    for n in range(3):
        weight = composed * s[n][None, :, None, None]
        weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        y = F.conv2d(x[n:n + 1], weight, padding=1)
        if noise:
            y = y + conv.noise_strength * conv.noise_const
        y = y + conv.bias
        expected.append(F.leaky_relu(y, 0.2) * math.sqrt(2))
    assert (conv(x, w) - torch.cat(expected)).abs().max() < 1e-5


def test_only_constant_weights_reach_convolutions():
    # Every conv weight is a parameter (or derived from parameters only), never from w or z:
    # the graph traced with two different latents uses identical conv weights.
    G = BlazeStyleGAN(TINY).eval()
    weights = []

    def record(fn):
        def wrapper(x, weight, *args, **kwargs):
            weights.append(weight.detach().clone())
            return fn(x, weight, *args, **kwargs)
        return wrapper

    original = F.conv2d
    F.conv2d = record(original)
    try:
        ws1 = G.mapping(torch.randn(1, 16))[:, None].expand(-1, G.num_ws, -1)
        ws2 = G.mapping(torch.randn(1, 16))[:, None].expand(-1, G.num_ws, -1)
        G.synthesis(ws1)
        first = list(weights)
        weights.clear()
        G.synthesis(ws2)
    finally:
        F.conv2d = original
    assert len(first) == len(weights) > 0
    assert all(torch.equal(a, b) for a, b in zip(first, weights))


@pytest.mark.parametrize("name, params_m, gflops", [
    ("blaze-256", 2.01, 1.28), ("blaze-512", 2.05, 1.57), ("blaze-1024", 2.07, 4.70)])
def test_presets_match_table_1_within_10_percent(name, params_m, gflops):
    row = blaze_row(name, PRESETS[name])
    assert abs(row["params_M"] / params_m - 1) < 0.10
    assert abs(row["gflops"] / gflops - 1) < 0.10


@pytest.mark.parametrize("bad, words", [
    ({"channels": [16, 16]}, "one value per level"),
    ({"resolution": 48}, "power of two"),
    ({"convs": [2, 1]}, "convs needs one value per level"),
    ({"convs": [2, 3, 2]}, "Input should be 1 or 2"),
])
def test_config_validation(bad, words):
    with pytest.raises(ValueError, match=words):
        BlazeStyleGANConfig.model_validate({**TINY.to_dict(), **bad})


def reference_head(head, x, w):
    """The paper's UpToRGB as written, gain after the activation (``lrelu_gain``); the subpixel
    head's depth-to-space spelled out by index."""
    from pipeline.models.layers import lrelu_gain

    x = lrelu_gain(head.project(x * head.style(w) / math.sqrt(x.shape[1])))
    for stage in head.up:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = lrelu_gain(stage["pointwise"](stage["depthwise"](x)))
    rgb = head.to_rgb(x)
    if not head.subpixel:
        return rgb
    n, _, h, w_ = rgb.shape
    out = torch.empty(n, 3, 2 * h, 2 * w_)
    for c in range(3):
        for i in range(2):
            for j in range(2):
                out[:, c, i::2, j::2] = rgb[:, 4 * c + 2 * i + j]
    return out


@pytest.mark.parametrize("head", ["bilinear", "subpixel"])
def test_heads_fold_the_gain_and_keep_the_function(head):
    from pipeline.models.blazestylegan import UpToRGB

    torch.manual_seed(0)
    module = UpToRGB(6, 8, 16, head)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x, w = torch.randn(2, 6, 4, 4), torch.randn(2, 16, 1, 1)
    out = module(x, w)
    assert out.shape == (2, 3, 16, 16)
    assert (out - reference_head(module, x, w)).abs().max() < 1e-5
    assert len(module.up) == (2 if head == "bilinear" else 1)


def test_a_snapshot_from_before_the_head_field_loads_as_bilinear(tmp_path):
    from pipeline.models.blazestylegan import STUDENT_KIND, load_student
    from pipeline.snapshot import save_snapshot

    student = BlazeStyleGAN(TINY)
    config = TINY.to_dict()
    del config["head"]
    save_snapshot(tmp_path / "old.pt", STUDENT_KIND, student, config)
    loaded = load_student(tmp_path / "old.pt")
    assert loaded.config.head == "bilinear"
    z = torch.randn(2, 16)
    assert torch.equal(loaded(z)[0], student(z)[0])


def test_the_subpixel_head_does_no_convolution_at_full_resolution():
    bilinear = blaze_row("b", PRESETS["blaze-1024"])
    subpixel = blaze_row("s", BlazeStyleGANConfig.model_validate(
        {**PRESETS["blaze-1024"].to_dict(), "head": "subpixel"}))
    assert abs(subpixel["params_M"] / bilinear["params_M"] - 1) < 0.01
    assert subpixel["gflops"] < 0.5 * bilinear["gflops"]


def test_a_block_of_one_convolution_skips_the_second():
    from pipeline.models.complexity import count_flops

    short = BlazeStyleGANConfig.model_validate({**TINY.to_dict(), "convs": [2, 1, 2]})
    assert TINY.level_convs == [2, 2, 2] and short.level_convs == [2, 1, 2]
    two = BlazeStyleGANConfig.model_validate({**TINY.to_dict(), "convs": [2, 2, 2]})
    assert two.convs is None and two == TINY  # one name per network
    assert short.num_ws == TINY.num_ws  # ws index the same layers whatever the lengths
    torch.manual_seed(0)
    full, cut = BlazeStyleGAN(TINY).eval(), BlazeStyleGAN(short).eval()
    assert [len(b) for b in cut.synthesis.blocks] == [2, 1, 2]
    state = {k: v for k, v in full.state_dict().items()
             if not k.startswith("synthesis.blocks.1.1.")}
    cut.load_state_dict(state)
    ws = torch.randn(2, TINY.num_ws, TINY.w_dim)
    with torch.no_grad():
        # the 16 px level's features are its first convolution's: run it by hand
        (_, x8), (_, x16) = [(i, x) for i, x, _ in cut.synthesis.features(ws, level=1)]
        up = F.interpolate(x8, scale_factor=2.0, mode="bilinear", align_corners=False)
        first = full.synthesis.blocks[1][0](up, ws[:, 2, :, None, None])
        assert torch.equal(x16, first)
        # and the style input of the dropped layer no longer matters
        other = ws.clone()
        other[:, 3] = torch.randn(2, TINY.w_dim)
        assert torch.equal(cut.synthesis(ws)[0], cut.synthesis(other)[0])
    assert count_flops(lambda: cut.synthesis(ws)) < count_flops(lambda: full.synthesis(ws))


@pytest.mark.parametrize("input_kind", ["z", "w"])
@pytest.mark.parametrize("layout, head, convs", [
    ("nchw", "bilinear", None), ("nhwc", "bilinear", None), ("nhwc", "subpixel", None),
    ("nhwc", "bilinear", [1, 2, 1])])
def test_stripped_generator_is_bit_equal_and_smaller(input_kind, layout, head, convs):
    from pipeline.models.complexity import count_flops, count_parameters
    from pipeline.models.inference import strip_aux_heads
    from pipeline.models.styles import broadcast_ws

    torch.manual_seed(0)
    student = BlazeStyleGAN(BlazeStyleGANConfig.model_validate({**TINY.to_dict(),
                                                                "head": head,
                                                                "convs": convs})).eval()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    stripped = strip_aux_heads(student, input_kind, layout)
    z = torch.randn(3, 16)
    w = student.mapping(z)
    with torch.no_grad():
        full, _ = student.synthesis(broadcast_ws(w, student.num_ws))
        out = stripped(z if input_kind == "z" else w)
    if layout == "nhwc":
        out = out.permute(0, 3, 1, 2)
    assert torch.equal(out, full)
    assert count_parameters(stripped) < count_parameters(student)
    ws = broadcast_ws(w, student.num_ws)
    assert (count_flops(lambda: stripped(w if input_kind == "w" else z))
            < count_flops(lambda: student.synthesis(ws)))
