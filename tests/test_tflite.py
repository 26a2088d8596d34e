"""TFLite conversion of tiny student and teacher generators through the real tools (torch.onnx,
onnx-simplifier, onnx2tf, LiteRT), the gates, and the provenance recorded beside each model."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from pipeline.errors import ConfigError
from pipeline.export.onnx_export import export_onnx
from pipeline.export.onnx_simplify import simplify_onnx
from pipeline.export.tflite import (
    ConversionFailed,
    ConvertTfliteConfig,
    convert_generators,
    convert_tflite,
    onnx_to_tflite,
    output_layout,
)
from pipeline.models.inference import INFERENCE_KIND, ExportedTeacher
from pipeline.models.stylegan2 import TEACHER_KIND, Generator
from pipeline.provenance import git_state, params_sha256
from pipeline.runtimes import ConversionMismatch, run_tflite
from pipeline.snapshot import save_snapshot
from test_onnx_export import STUDENT, TEACHER, student, trained_looking

pytestmark = pytest.mark.slow  # onnx2tf takes a few seconds per model

CONFIG = ConvertTfliteConfig(check_latents=4, seed=0, max_abs_error=1e-4, min_psnr_db=45.0,
                             threads=1)
PROVENANCE = {"git_commit": "0" * 40, "code_dirty": False, "params_sha256": "1" * 64,
              "params_sections": ["convert_tflite"]}  # as pipeline.provenance.provenance


def teacher(input_kind="z", layout="nhwc"):
    torch.manual_seed(0)
    return ExportedTeacher(trained_looking(Generator(TEACHER).set_fused(True)), input_kind,
                           layout)


def noise_as_hw(model):
    """The trap of docs/dependencies.md: each noise constant stored as (1, H, W) instead of
    (1, 1, H, W). Same function in PyTorch (broadcasting), but onnx2tf 1.28.8 converts it wrongly
    and reports success."""
    for module in model.modules():
        if getattr(module, "noise_const", None) is not None:
            module.noise_const = module.noise_const[0]
    return model


def to_onnx(model, path, latents):
    export_onnx(model, path.with_suffix(".raw.onnx"), 18, 1, latents, 1e-4)
    simplify_onnx(path.with_suffix(".raw.onnx"), path, latents, 1e-5)
    return path


@pytest.mark.parametrize("make", [lambda: student("z", "nhwc"), lambda: teacher("z", "nhwc"),
                                  lambda: student("w", "nchw")],
                         ids=["student-z-nhwc", "teacher-z-nhwc", "student-w-nchw"])
def test_float32_and_float16_match_pytorch_and_describe_themselves(tmp_path, make):
    model = make()
    latents = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    source = to_onnx(model, tmp_path / "m.onnx", latents)
    out = tmp_path / "out"
    out.mkdir()
    metrics = convert_tflite("g", source, model, latents, out, CONFIG, PROVENANCE).model_dump()

    assert sorted(p.name for p in out.iterdir()) == ["g_float16.json", "g_float16.tflite",
                                                     "g_float32.json", "g_float32.tflite"]
    assert metrics["float32"]["max_abs_error_vs_pytorch"] <= 1e-4
    assert metrics["float16"]["psnr_db_vs_pytorch_min"] >= 45.0
    # float16 weights: a smaller file, measurably different outputs.
    assert metrics["float16"]["bytes"] < metrics["float32"]["bytes"]
    errors = {p: metrics[p]["max_abs_error_vs_pytorch"] for p in ("float16", "float32")}
    assert errors["float16"] > errors["float32"]

    card = json.loads((out / "g_float16.json").read_text())
    assert card["precision"] == "float16" and card["resolution"] == 16
    assert card["input"]["shape"] == [1, 16] and card["input"]["dtype"] == "float32"
    assert card["input"]["latent"] == model.input
    # onnx2tf writes TensorFlow's layout: an NCHW model comes out NHWC, and the card says so.
    assert card["output"]["layout"] == "NHWC" and card["output"]["shape"] == [1, 16, 16, 3]
    assert card["output"]["range"] == [-1.0, 1.0]
    assert card["source"]["params_sha256"] == "1" * 64 and card["source"]["onnx"] == "m.onnx"

    # Anyone can run the model from the card alone, and gets PyTorch's images.
    actual = run_tflite(out / "g_float16.tflite", latents.numpy())
    with torch.no_grad():
        expected = model(latents).numpy()
    if model.layout == "nchw":
        expected = expected.transpose(0, 2, 3, 1)
    assert np.abs(actual - expected).max() < 0.02


def test_the_silently_wrong_conversion_is_refused_and_nothing_written(tmp_path):
    model = noise_as_hw(student("z", "nhwc"))
    latents = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    source = to_onnx(model, tmp_path / "m.onnx", latents)  # ONNX Runtime still agrees with PyTorch
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConversionMismatch, match="float32 TFLite: max abs error vs PyTorch .* is "
                                                 "beyond the tolerance 0.0001; nothing written"):
        convert_tflite("g", source, model, latents, out, CONFIG, PROVENANCE)
    assert list(out.iterdir()) == []


def test_the_float16_gate_refuses_below_its_psnr(tmp_path):
    model = student("z", "nhwc")
    latents = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
    source = to_onnx(model, tmp_path / "m.onnx", latents)
    (tmp_path / "out").mkdir()
    strict = CONFIG.model_copy(update={"min_psnr_db": 100.0})  # float16 never reaches the cap
    with pytest.raises(ConversionMismatch, match="float16 TFLite: PSNR vs PyTorch .* dB on its "
                                                 "worst image, below the tolerance 100 dB"):
        convert_tflite("g", source, model, latents, tmp_path / "out", strict, PROVENANCE)
    assert list((tmp_path / "out").iterdir()) == []


class SixDimPad(nn.Module):
    """Zero insertion by padding a 6-D view, as StyleGAN2's reference upfirdn2d does: onnx2tf
    turns the 6-D Pad into a TensorFlow Select op (FlexPad) that mobile runtimes lack."""

    def __init__(self):
        super().__init__()
        self.input, self.layout, self.linear = "z", "nchw", nn.Linear(16, 3 * 4 * 4)

    def forward(self, z):
        x = self.linear(z).reshape(-1, 3, 4, 1, 4, 1)
        return torch.nn.functional.pad(x, [0, 1, 0, 0, 0, 1]).reshape(-1, 3, 8, 8)


def test_a_model_needing_tensorflow_select_ops_is_refused(tmp_path):
    onnx_path = tmp_path / "pad.onnx"
    torch.onnx.export(SixDimPad().eval(), (torch.zeros(1, 16),), str(onnx_path), dynamo=True,
                      external_data=False, input_names=["z"], verbose=False)
    with pytest.raises(ConversionFailed, match=r"needs TensorFlow Select ops \(FlexPad\)"):
        onnx_to_tflite(onnx_path, tmp_path)


def test_an_onnx2tf_crash_is_reported_with_its_log(tmp_path, monkeypatch):
    import onnx2tf
    import onnx2tf.onnx2tf as onnx2tf_main

    download, stdout = onnx2tf_main.download_test_image_data, sys.stdout

    def crash(**kwargs):
        print("\x1b[31mERROR:\x1b[0m the op that failed")
        raise ValueError("unsupported op")

    monkeypatch.setattr(onnx2tf, "convert", crash)
    source = tmp_path / "m.onnx"
    source.write_bytes(b"")
    with pytest.raises(ConversionFailed, match="ValueError: unsupported op.*\nERROR: the op that "
                                               "failed"):
        onnx_to_tflite(source, tmp_path)
    assert onnx2tf_main.download_test_image_data is download and sys.stdout is stdout


def test_output_layout():
    assert output_layout("g", [1, 16, 16, 3], (4, 16, 16, 3), "nhwc") == "nhwc"
    assert output_layout("g", [1, 16, 16, 3], (4, 3, 16, 16), "nchw") == "nhwc"  # onnx2tf's
    with pytest.raises(ConversionMismatch, match=r"output shape \[1, 16, 3, 16\], expected"):
        output_layout("g", [1, 16, 3, 16], (4, 3, 16, 16), "nchw")


def snapshots(tmp_path, input_kind="z", layout="nhwc"):
    student_model, teacher_model = student(input_kind, layout), teacher().generator
    save_snapshot(tmp_path / "student.pt", INFERENCE_KIND, student_model,
                  {"student": STUDENT.to_dict(), "input": input_kind, "layout": layout})
    save_snapshot(tmp_path / "teacher.pt", TEACHER_KIND, teacher_model, TEACHER.to_dict())
    latents = torch.randn(2, 16)
    return (tmp_path / "student.pt", tmp_path / "teacher.pt",
            to_onnx(student_model, tmp_path / "student.onnx", latents),
            to_onnx(ExportedTeacher(teacher_model, input_kind, layout), tmp_path / "teacher.onnx",
                    latents))


def test_generators_are_converted_all_or_nothing(tmp_path):
    student_pt, teacher_pt, student_onnx, teacher_onnx = snapshots(tmp_path)
    out = tmp_path / "tflite"
    metrics = convert_generators(CONFIG, student_path=student_pt, teacher_path=teacher_pt,
                                 student_onnx=student_onnx, teacher_onnx=teacher_onnx,
                                 out_dir=out, provenance=PROVENANCE).model_dump()
    assert set(metrics) == {"student", "teacher"}
    assert len(list(out.glob("*.tflite"))) == 4
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    # The teacher's check fails (its ONNX is the student's): the student's models, converted and
    # checked first, are not written either, and the previous directory stays as it was.
    with pytest.raises(ConversionMismatch, match="teacher float32 TFLite"):
        convert_generators(CONFIG, student_path=student_pt, teacher_path=teacher_pt,
                           student_onnx=student_onnx, teacher_onnx=student_onnx, out_dir=out,
                           provenance=PROVENANCE)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_params_hash_follows_values_not_formatting(tmp_path):
    sections = ("a", "b")
    path = tmp_path / "params.yaml"
    path.write_text("a:\n  x: 1\n  y: [1, 2]\nb: {z: 0.5}\nunrelated: 3\n")
    reference = params_sha256(path, sections)
    path.write_text("# comment\nb:\n  z: 0.5\nunrelated: 4\na: {y: [1, 2], x: 1}\n")
    assert params_sha256(path, sections) == reference
    path.write_text(yaml.safe_dump({"a": {"x": 2, "y": [1, 2]}, "b": {"z": 0.5}}))
    assert params_sha256(path, sections) != reference
    with pytest.raises(ConfigError, match="missing section.*b"):
        path.write_text("a: {x: 1}\n")
        params_sha256(path, sections)


def test_git_state_sees_commits_and_code_changes_only(tmp_path):
    assert git_state(tmp_path) == {"git_commit": None, "code_dirty": None}

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
                       cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline/m.py").write_text("x = 1\n")
    (tmp_path / "params.yaml").write_text("a: 1\n")
    (tmp_path / "dvc.lock").write_text("x\n")
    git("add", "-A")
    git("commit", "-qm", "c")
    state = git_state(tmp_path)
    assert len(state["git_commit"]) == 40 and state["code_dirty"] is False
    (tmp_path / "dvc.lock").write_text("y\n")  # DVC's bookkeeping
    (tmp_path / "params.yaml").write_text("a: 2\n")  # pinned by params_sha256 instead
    assert git_state(tmp_path)["code_dirty"] is False
    (tmp_path / "pipeline/new.py").write_text("")  # code not in the commit, even untracked
    assert git_state(tmp_path)["code_dirty"] is True
