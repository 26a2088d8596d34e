"""ONNX export and simplification of tiny student and teacher generators, through the real tools
(torch.onnx dynamo exporter, onnx.checker, ONNX Runtime, onnx-simplifier), and the gates."""

import onnx
import pytest
import torch

from pipeline.export import onnx_export
from pipeline.export.onnx_export import export_onnx
from pipeline.export.onnx_simplify import simplify_onnx
from pipeline.models.blazestylegan import BlazeStyleGAN, BlazeStyleGANConfig
from pipeline.models.inference import ExportedTeacher, strip_aux_heads
from pipeline.models.stylegan2 import Generator, StyleGAN2Config
from pipeline.runtimes import ConversionMismatch, run_onnx

STUDENT = BlazeStyleGANConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=2,
                              mapping_lr_mul=0.01, channels=[16, 8], head_channels=[8, 8],
                              noise=True)
TEACHER = StyleGAN2Config(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, mapping_lr_mul=0.01,
                          channel_base=128, channel_max=16, conv_clamp=None, noise=True)


def trained_looking(module: torch.nn.Module) -> torch.nn.Module:
    """Noise strengths moved off their zero initialization, so the noise constants take part."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "noise" in name:
                p.fill_(0.3)
    return module.eval()


def student(input_kind="z", layout="nhwc"):
    torch.manual_seed(0)
    return strip_aux_heads(trained_looking(BlazeStyleGAN(STUDENT)), input_kind, layout)


def fused_teacher() -> Generator:
    """A teacher in the fused form, which export must switch to activation modulation."""
    return trained_looking(Generator(TEACHER).set_fused(True))


@pytest.mark.parametrize("make", [lambda: student("z", "nhwc"), lambda: student("w", "nchw"),
                                  lambda: ExportedTeacher(fused_teacher().eval(), "z", "nhwc")],
                         ids=["student-z-nhwc", "student-w-nchw", "teacher-z-nhwc"])
def test_export_then_simplify_match_pytorch(tmp_path, make):
    model = make()
    latents = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    metrics = export_onnx(model, tmp_path / "m.onnx", opset=18, batch_size=1, latents=latents,
                          max_abs_error=1e-4)
    graph = onnx.load(str(tmp_path / "m.onnx"))
    assert [i.name for i in graph.graph.input] == [model.input]
    assert [o.name for o in graph.graph.output] == ["image"]
    assert [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim] == [1, 16]
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL
                   for init in graph.graph.initializer)
    assert metrics["max_abs_error_vs_pytorch"] <= 1e-4 and metrics["opset"] == 18

    simplified = simplify_onnx(tmp_path / "m.onnx", tmp_path / "s.onnx", latents, 1e-5)
    assert simplified["nodes_after"] <= simplified["nodes_before"]
    with torch.no_grad():
        expected = model(latents).numpy()
    assert abs(run_onnx(tmp_path / "s.onnx", latents.numpy()) - expected).max() <= 1e-4


def test_teacher_uses_constant_conv_weights_only(tmp_path):
    # Mobile converters need constant weights: no Conv may take a computed (per-sample) weight.
    model = ExportedTeacher(fused_teacher(), "z", "nhwc")
    export_onnx(model, tmp_path / "t.onnx", 18, 1, torch.randn(2, 16), 1e-4)
    simplify_onnx(tmp_path / "t.onnx", tmp_path / "s.onnx", torch.randn(2, 16), 1e-5)
    graph = onnx.load(str(tmp_path / "s.onnx")).graph
    constants = {init.name for init in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert convs and all(node.input[1] in constants for node in convs)


def test_a_wrong_conversion_is_refused_and_nothing_written(tmp_path, monkeypatch):
    real = onnx_export.run_onnx
    monkeypatch.setattr(onnx_export, "run_onnx", lambda *a: real(*a) + 1e-3)
    with pytest.raises(ConversionMismatch, match="max abs error 0.001 is beyond the tolerance"):
        export_onnx(student(), tmp_path / "m.onnx", 18, 1, torch.randn(2, 16), 1e-4)
    assert list(tmp_path.iterdir()) == []
