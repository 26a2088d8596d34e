"""The typed hand-offs between stages: each artifact's file round-trips byte for byte through its
model, a file that does not match its model fails with one line naming the file and the field,
and the bundle stage refuses such a file before writing anything."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import ROOT
from pipeline.artifacts.base import ArtifactError, read_artifact, write_artifact
from pipeline.artifacts.evaluation import Evaluation
from pipeline.artifacts.release import ReleaseMetrics
from pipeline.artifacts.tflite import ConversionMetrics, TfliteCard, Verified, card_file, model_file
from pipeline.data.layout import DatasetMeta
from pipeline.errors import PipelineError
from pipeline.export import tflite
from pipeline.export.bundle import BundleConfig, build_bundle
from pipeline.io import write_json
from pipeline.metrics.reference import ReferenceSummary

CHECKS = {"float32": {"max_abs_error_vs_pytorch": 3.0517578125e-05,
                      "max_abs_error_vs_onnx": 2.86102294921875e-05,
                      "psnr_db_vs_pytorch_min": 98.5, "psnr_db_vs_pytorch_mean": 100.0,
                      "bytes": 1048576},
          "float16": {"max_abs_error_vs_pytorch": 0.0021514892578125,
                      "max_abs_error_vs_onnx": 0.002147674560546875,
                      "psnr_db_vs_pytorch_min": 61.23456789012345,
                      "psnr_db_vs_pytorch_mean": 63.1, "bytes": 524800}}
TOLERANCES = {"float32": {"tolerance_max_abs_error": 0.0001},
              "float16": {"tolerance_min_psnr_db": 45.0}}
NORMALIZATION = ("uint8 = clip(round((x + 1) * 127.5), 0, 255); values slightly outside [-1, 1] "
                 "occur and are clipped")


def card(precision="float16"):
    """An interface card as interface_card writes it."""
    return {
        "format": "tflite", "precision": precision,
        "weights": "float16, dequantized at load time" if precision == "float16" else "float32",
        "resolution": 32,
        "input": {"name": "serving_default_z:0", "index": 0, "shape": [1, 64],
                  "dtype": "float32", "latent": "z",
                  "meaning": "z: standard normal noise, one row per image",
                  "distribution": "standard_normal", "range": None},
        "output": {"name": "PartitionedCall:0", "index": 87, "shape": [1, 32, 32, 3],
                   "dtype": "float32", "layout": "NHWC", "channels": "RGB", "range": [-1.0, 1.0],
                   "normalization": NORMALIZATION},
        "verified": {"against": "PyTorch, LiteRT with XNNPACK on x86-64", "latents": 8,
                     **CHECKS[precision], **TOLERANCES[precision]},
        "source": {"git_commit": "a" * 40, "code_dirty": False, "params_sha256": "b" * 64,
                   "params_sections": ["prepare", "train_teacher", "distill"],
                   "onnx": "student_simplified.onnx", "onnx_sha256": "c" * 64,
                   "tflite_sha256": "d" * 64},
    }


CONVERSION = {name: CHECKS for name in ("student", "teacher")}


def evaluation(fid=None, phone=False):
    """metrics/evaluate.json as evaluate writes it (FID absent when not measured)."""
    timing = {"mean_ms": 0.8123456789, "p50_ms": 0.8, "p90_ms": 0.95, "std_ms": 0.0412,
              "runs": 50, "achieved_gflops": 2.5, "fraction_of_peak": 0.0125}
    runtimes = ("litert_float16", "litert_float32", "onnxruntime", "pytorch")
    out = {
        "complexity": {"student": {"params": 271523, "gflops": 0.0421},
                       "teacher": {"params": 1234567, "gflops": 0.51}},
        "latency": {"peak_sgemm_gflops": 200.0, "threads": 4,
                    **{name: {r: timing for r in runtimes} for name in ("student", "teacher")}},
        "similarity": {pair: {"psnr_db": 21.5, "ssim": 0.71} for pair in (
            "student_vs_teacher", "student_float16_vs_teacher", "student_float16_vs_student")},
        "quality": {name: {"swd_32": 12.5, "swd_16": 7.25, "swd_mean": 9.875,
                           **({"fid": fid} if fid is not None else {})}
                    for name in ("teacher", "student", "student_float16")},
        "samples": 64,
        "fid_unavailable_reason": None if fid is not None else "fid.allow_download is false",
    }
    if phone:
        out["android"] = {"student_float16": {"init_ms": 11.406, "first_ms": 1.312,
                                              "warmup_mean_ms": 0.4975, "mean_ms": 0.41032,
                                              "runs": 50, "min_ms": 0.384, "max_ms": 0.611,
                                              "std_ms": 0.038},
                          "teacher_float16": {"init_ms": 20.0, "first_ms": 3.0,
                                              "warmup_mean_ms": 2.0, "mean_ms": 1.5}}
    return out


REFERENCE = {"images": 500, "dataset_sha256": "d" * 64, "seed": 0, "resolution": 32,
             "fid_available": False, "fid_unavailable_reason": "no weights here",
             "fid_weights_sha256": None}
DATASET = {"format": 1, "resolution": 32, "count": 12, "source": "synthetic",
           "manifest_sha256": "e" * 64}

FILES = {"card_float16": (TfliteCard, card("float16")),
         "card_float32": (TfliteCard, card("float32")),
         "conversion": (ConversionMetrics, CONVERSION),
         "evaluation_offline": (Evaluation, evaluation()),
         "evaluation_fid_phone": (Evaluation, evaluation(fid=35.25, phone=True)),
         "dataset": (DatasetMeta, DATASET),
         "reference": (ReferenceSummary, REFERENCE),
         "release_metrics": (ReleaseMetrics, {"evaluate": evaluation(),
                                              "convert_tflite": CHECKS})}


@pytest.mark.parametrize("name", sorted(FILES))
def test_a_file_round_trips_byte_for_byte(tmp_path, name):
    model, data = FILES[name]
    today = tmp_path / "today.json"
    write_json(today, data)  # what the stage wrote before the models
    artifact = read_artifact(today, model, "evaluate")
    assert artifact.model_dump(mode="json") == json.loads(today.read_text())
    write_artifact(tmp_path / "again.json", artifact)
    assert (tmp_path / "again.json").read_bytes() == today.read_bytes()
    write_artifact(tmp_path / "third.json", read_artifact(tmp_path / "again.json", model, "x"))
    assert (tmp_path / "third.json").read_bytes() == today.read_bytes()


def test_absent_keys_stay_absent():
    offline = Evaluation.model_validate(evaluation()).model_dump()
    assert "fid" not in offline["quality"]["student"] and "android" not in offline
    assert offline["fid_unavailable_reason"] == "fid.allow_download is false"
    phone = Evaluation.model_validate(evaluation(fid=1.5, phone=True))
    assert "runs" not in phone.model_dump()["android"]["teacher_float16"]
    assert phone.quality.student.fid == 1.5
    assert phone.quality.student.swd_levels == {32: 12.5, 16: 7.25}
    float32 = TfliteCard.model_validate_json(json.dumps(card("float32"))).model_dump()
    assert "tolerance_min_psnr_db" not in float32["verified"]
    assert float32["input"]["range"] is None


def renamed(data, dotted, new):
    """``data`` with the key at ``dotted`` renamed to ``new`` (None: removed)."""
    data = json.loads(json.dumps(data))
    *parents, key = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    value = node.pop(key)
    if new is not None:
        node[new] = value
    return data


@pytest.mark.parametrize("model,data,dotted,new,expected", [
    (Evaluation, evaluation(), "latency.student.litert_float16.mean_ms", "avg_ms",
     "latency.student.litert_float16.mean_ms: missing; "
     "latency.student.litert_float16.avg_ms: unknown key"),
    (Evaluation, evaluation(), "quality.student_float16.swd_mean", None,
     "quality.student_float16.swd_mean: missing"),
    (Evaluation, evaluation(), "quality.teacher.swd_16", "swd_coarse",
     "quality.teacher.swd_coarse: String should match pattern"),
    (Evaluation, evaluation(), "fid_unavailable_reason", None, "fid_unavailable_reason: missing"),
    (ConversionMetrics, CONVERSION, "student.float16.bytes", "size",
     "student.float16.bytes: missing; student.float16.size: unknown key"),
    (TfliteCard, card(), "output.layout", None, "output.layout: missing"),
    (TfliteCard, card(), "verified.tolerance_min_psnr_db", "tolerance_max_abs_error",
     "verified: Value error, a float16 model states tolerance_min_psnr_db only"),
    (DatasetMeta, DATASET, "manifest_sha256", "manifest", "manifest_sha256: missing"),
], ids=["renamed-timing", "missing-swd-mean", "bad-swd-level", "missing-reason",
        "renamed-bytes", "missing-layout", "wrong-tolerance", "renamed-manifest"])
def test_a_mismatch_is_one_line_naming_the_file_and_the_field(tmp_path, model, data, dotted, new,
                                                               expected):
    path = tmp_path / "metrics" / "artifact.json"
    write_json(path, renamed(data, dotted, new))
    with pytest.raises(ArtifactError) as error:
        read_artifact(path, model, "evaluate")
    message = str(error.value)
    assert message.startswith(f"{path}: {expected}")
    assert "\n" not in message and "re-run it" in message
    assert isinstance(error.value, PipelineError)


def test_missing_unreadable_and_wrongly_typed_files(tmp_path):
    with pytest.raises(ArtifactError, match=r"^\S+/evaluate.json: not found; run the evaluate "
                                            r"stage$"):
        read_artifact(tmp_path / "evaluate.json", Evaluation, "evaluate")
    (tmp_path / "half.json").write_text('{"complexity": {')
    with pytest.raises(ArtifactError, match=r"half.json: not valid JSON \(EOF while parsing"):
        read_artifact(tmp_path / "half.json", Evaluation, "evaluate")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ArtifactError, match=r"list.json: Input should be an object"):
        read_artifact(tmp_path / "list.json", Evaluation, "evaluate")
    write_json(tmp_path / "typed.json", {**DATASET, "count": "12", "format": 2})
    with pytest.raises(ArtifactError) as error:
        read_artifact(tmp_path / "typed.json", DatasetMeta, "prepare")
    assert ("format: Value error, dataset format 2, this code reads format 1 (got 2); "
            "count: Input should be a valid integer (got '12')") in str(error.value)


def test_the_writer_refuses_nan(tmp_path):
    broken = Evaluation.model_validate(evaluation())
    broken = broken.model_copy(update={"latency": broken.latency.model_copy(
        update={"peak_sgemm_gflops": float("nan")})})
    with pytest.raises(ValueError):
        write_artifact(tmp_path / "nan.json", broken)
    assert not (tmp_path / "nan.json").exists()


def test_interface_card_writes_the_documented_keys(tmp_path, monkeypatch):
    tensors = {"input": {"name": "serving_default_z:0", "index": 0, "shape": [1, 64],
                         "dtype": "float32"},
               "output": {"name": "PartitionedCall:0", "index": 87, "shape": [1, 32, 32, 3],
                          "dtype": "float32"}}
    monkeypatch.setattr(tflite, "tensor_interface", lambda path: tensors)
    monkeypatch.setattr(tflite, "sha256_file", lambda path: "c" * 64 if str(path).endswith(
        ".onnx") else "d" * 64)
    model = SimpleNamespace(input="z", config=SimpleNamespace(resolution=32))
    expected = card("float16")
    verified = Verified.model_validate_json(json.dumps(expected["verified"]))
    provenance = {key: expected["source"][key]
                  for key in ("git_commit", "code_dirty", "params_sha256", "params_sections")}
    written = tflite.interface_card(tmp_path / "student_float16.tflite", "float16", model, "nhwc",
                                    tmp_path / "student_simplified.onnx", provenance, verified)
    write_artifact(tmp_path / "card.json", written)
    write_json(tmp_path / "expected.json", expected)
    assert (tmp_path / "card.json").read_bytes() == (tmp_path / "expected.json").read_bytes()


def bundle_inputs(root, evaluation_data):
    """What the bundle stage reads: the converted student (stand-in model bytes: bundle only
    copies them), the metrics of convert_tflite and evaluate, the dataset, the params."""
    tflite_dir = root / "tflite"
    tflite_dir.mkdir()
    for precision in ("float16", "float32"):
        model_file(tflite_dir, "student", precision).write_bytes(b"TFL3" + precision.encode())
        write_json(card_file(tflite_dir, "student", precision), card(precision))
    write_json(root / "convert_tflite.json", CONVERSION)
    write_json(root / "evaluate.json", evaluation_data)
    (root / "data").mkdir()
    write_json(root / "data" / "dataset.json", DATASET)
    (root / "params.yaml").write_text("bundle:\n  name: b\n  license: test licence\n")
    return {"params_path": root / "params.yaml", "tflite_dir": tflite_dir,
            "evaluation_path": root / "evaluate.json",
            "conversion_path": root / "convert_tflite.json", "dataset_dir": root / "data",
            "out_dir": root / "release" / "b", "zip_path": root / "release" / "b.zip"}


def test_bundle_ships_the_metrics_unchanged(tmp_path):
    paths = bundle_inputs(tmp_path, evaluation(fid=35.25))
    build_bundle(BundleConfig(name="b", license="test licence"), **paths)
    shipped = json.loads((paths["out_dir"] / "metrics.json").read_text())
    assert shipped == {"evaluate": evaluation(fid=35.25), "convert_tflite": CONVERSION["student"]}
    text = (paths["out_dir"] / "MODEL_CARD.md").read_text()
    assert "| teacher (PyTorch) | 9.88 | 35.25 | - | - |" in text
    assert "| `student_float32.tflite` | float32 | `serving_default_z:0` (1, 64) float32" in text
    assert f"- git commit the models were built from: `{'a' * 40}`" in text
    assert "float16 0.812 ms" in text and "12 images at 32x32" in text


def test_bundle_stage_refuses_an_evaluation_missing_a_key(tmp_path):
    paths = bundle_inputs(tmp_path, renamed(evaluation(), "latency.student.litert_float16.mean_ms",
                                            None))
    args = [sys.executable, "-m", "stages.bundle", "--params", paths["params_path"],
            "--tflite", paths["tflite_dir"], "--evaluation", paths["evaluation_path"],
            "--conversion", paths["conversion_path"], "--dataset", paths["dataset_dir"],
            "--out", paths["out_dir"], "--zip", paths["zip_path"]]
    result = subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: bundle: {paths['evaluation_path']}: "
                      "latency.student.litert_float16.mean_ms: missing (written by another "
                      "version of the evaluate stage? re-run it)"]
    assert not (tmp_path / "release").exists()
