"""The student's units (pipeline.models.units) add up to its inference graph, and the profiling
tooling exports and times a unit through the real chain (pipeline.profiling)."""

import pytest
import torch

from pipeline.models.blazestylegan import BlazeStyleGAN, BlazeStyleGANConfig
from pipeline.models.complexity import count_flops
from pipeline.models.inference import strip_aux_heads
from pipeline.models.units import BlockUnit, HeadUnit, randomize_like_trained, student_units

TINY = BlazeStyleGANConfig(resolution=32, z_dim=16, w_dim=16, mapping_layers=2,
                           mapping_lr_mul=0.01, channels=[16, 16, 8], head_channels=[8, 8, 8],
                           noise=True)


def tiny_student(head: str = "bilinear") -> BlazeStyleGAN:
    torch.manual_seed(0)
    config = BlazeStyleGANConfig.model_validate({**TINY.to_dict(), "head": head})
    return randomize_like_trained(BlazeStyleGAN(config)).eval()


@pytest.mark.parametrize("head", ["bilinear", "subpixel"])
def test_units_chained_are_the_inference_graph(head):
    # Each unit run on the output of the one before reproduces the stripped generator exactly.
    student = tiny_student(head)
    graph = strip_aux_heads(student, "w", "nchw")
    w = torch.randn(2, 16)
    with torch.no_grad():
        x = student.synthesis.const
        for i, convs in enumerate(student.synthesis.blocks):
            x = BlockUnit(x[:1], convs, upsample=i > 0)(w[:1])
        image = HeadUnit(x, student.synthesis.heads[-1])(w[:1])
        assert torch.equal(image, graph(w[:1]))


def test_units_cover_the_graph_and_their_flops_add_up():
    student = tiny_student()
    units = student_units(student)
    assert [u.name for u in units] == ["overhead", "block 8", "block 16", "block 32", "head",
                                      "mapping"]
    w = torch.randn(1, 16)
    shapes = [u.model(torch.randn(1, u.input_dim)).shape for u in units]
    assert shapes[1:5] == [(1, 16, 2, 2), (1, 16, 4, 4), (1, 8, 8, 8), (1, 3, 32, 32)]
    synthesis = sum(count_flops(lambda u=u: u.model(w)) for u in units
                    if u.kind in ("block", "head"))
    graph = strip_aux_heads(student, "w", "nhwc")
    assert synthesis == count_flops(lambda: graph(w))


def test_randomize_like_trained_leaves_no_zero_bias():
    student = tiny_student()
    biases = [m.bias for m in student.synthesis.modules()
              if getattr(m, "bias", None) is not None]
    assert biases and all(b.abs().min() > 0 for b in biases)


@pytest.mark.slow
def test_a_unit_through_the_chain_is_checked_and_listed(tmp_path):
    from pipeline.profiling.chain import export_for_timing, throughput, time_interleaved

    head = next(u for u in student_units(tiny_student("subpixel")) if u.kind == "head")
    exported = export_for_timing(head.model, torch.randn(2, 16), tmp_path / "head", "nchw")
    assert exported.float32_max_abs_error < 1e-5 and exported.float16_psnr_db > 40
    assert exported.operators["CONV_2D"] >= 3 and "RESIZE_BILINEAR" in exported.operators
    assert not any(name.startswith("Flex") for name in exported.operators)
    timings = time_interleaved({"head": exported.tflite["float16"]}, threads=1, warmup=1,
                               runs=3, rounds=2)
    assert len(timings["head"]["rounds_ms"]) == 2 and timings["head"]["p50_ms"] > 0
    rate = throughput(timings["head"]["p50_ms"], exported.gflops, peak_gflops=100.0)
    assert rate["peak_share"] == pytest.approx(rate["gflops_per_s"] / 100.0)
    # An NCHW output of the same shape in NHWC (16 channels of 16 x 16) is compared transposed.
    block = next(u for u in student_units(tiny_student()) if u.name == "block 32")
    square = BlockUnit(torch.randn(1, 16, 4, 4), block.model.convs, upsample=True)
    assert square(torch.randn(1, 16)).shape == (1, 8, 8, 8)
    assert export_for_timing(square, torch.randn(2, 16), tmp_path / "square",
                             "nchw").float32_max_abs_error < 1e-5
