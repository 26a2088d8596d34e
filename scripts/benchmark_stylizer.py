"""Latency of a stylizer at a real size (random weights): LiteRT, and a full MediaPipe call.

Builds the one-graph stylizer (``pipeline.models.stylizer.Stylizer``) of an encoder preset and a
student preset with random weights (BatchNorm statistics randomised too), exports it with the
pipeline's own chain (ONNX, onnxsim, onnx2tf float32 and float16), checks the float32 model
against PyTorch, and times both on LiteRT (XNNPACK, batch 1, warm-up then timed runs, best of
``--rounds``), with GFLOPs (2 x MACs) and the share of the sgemm peak measured in the same
process. With the mediapipe virtualenv and a face photo, it also bundles the float32 model with
the stand-in face models and times a full MediaPipe ``FaceStylizer.stylize`` call (detection,
landmarks, alignment, the model) with ``scripts/mediapipe_client.py``. Prints JSON; asserts
nothing.

    python scripts/benchmark_stylizer.py --encoder encoder-256 --student blaze-256 --threads 2
"""

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
import typer

from pipeline.export.mediapipe import (
    face_models,
    wheel_modules,
    with_stylizer_metadata,
    write_task_bundle,
)
from pipeline.export.onnx_export import export_onnx
from pipeline.export.onnx_simplify import simplify_onnx
from pipeline.export.tflite import onnx_to_tflite
from pipeline.metrics import latency
from pipeline.models.blazestylegan import PRESETS as STUDENTS
from pipeline.models.blazestylegan import BlazeStyleGAN
from pipeline.models.complexity import count_flops
from pipeline.models.encoder import PRESETS as ENCODERS
from pipeline.models.encoder import Encoder
from pipeline.models.stylizer import Stylizer
from pipeline.runtimes import max_abs_error, run_tflite

ROOT = Path(__file__).resolve().parents[1]


def random_stylizer(encoder_preset: str, student_preset: str) -> Stylizer:
    torch.manual_seed(0)
    encoder = Encoder(ENCODERS[encoder_preset]).eval()
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    return Stylizer(encoder, BlazeStyleGAN(STUDENTS[student_preset])).eval()


def mediapipe_call(model: Path, venv: Path, photo: Path, work: Path, repeats: int) -> dict:
    """A full MediaPipe stylize call on ``photo`` with the float32 model in a bundle."""
    faces = face_models(None, wheel_modules(venv))
    bundle = work / "face_stylizer.task"
    write_task_bundle(bundle, face_detector=faces.face_detector,
                      face_landmarks_detector=faces.face_landmarks_detector,
                      face_stylizer=with_stylizer_metadata(model.read_bytes()))
    subprocess.run([str(venv / "bin" / "python"), str(ROOT / "scripts" / "mediapipe_client.py"),
                    str(bundle), str(photo), str(work / "client"), "--repeats", str(repeats)],
                   check=True, capture_output=True, text=True)
    report = json.loads((work / "client" / "report.json").read_text())
    return {key: report[key] for key in ("stylize_median_s", "stylize_first_s", "align_s",
                                         "image_shape", "delegate")}


def main(encoder: str = typer.Option("encoder-256", help=f"one of {', '.join(ENCODERS)}"),
         student: str = typer.Option("blaze-256", help=f"one of {', '.join(STUDENTS)}"),
         threads: int = typer.Option(2), warmup: int = typer.Option(10),
         runs: int = typer.Option(50), rounds: int = typer.Option(3, help="best of"),
         venv: Path = typer.Option(ROOT / ".venv-mediapipe", help="mediapipe virtualenv"),
         photo: Path = typer.Option(ROOT.parent / "shared" / "data" / "faces" / "000508.jpg"),
         repeats: int = typer.Option(20, help="MediaPipe calls timed")) -> None:
    stylizer = random_stylizer(encoder, student)
    r = stylizer.config.resolution
    images = torch.rand(2, 3, r, r)
    flops = count_flops(lambda: stylizer(images[:1]))
    result = {"encoder": encoder, "student": student, "resolution": r, "gflops": flops / 1e9,
              "params_M": sum(p.numel() for p in stylizer.parameters()) / 1e6,
              "threads": threads}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_onnx(stylizer, tmp / "s.onnx", 18, 1, images, 1e-3, input_name="image",
                    output_name="stylized")
        simplify_onnx(tmp / "s.onnx", tmp / "simplified.onnx", images, 1e-4)
        (tmp / "tflite").mkdir()
        paths = onnx_to_tflite(tmp / "simplified.onnx", tmp / "tflite")
        with torch.no_grad():
            expected = stylizer(images).permute(0, 2, 3, 1).numpy()
        peak = max(latency.sgemm_peak_gflops(threads) for _ in range(rounds))
        result["sgemm_peak_gflops"] = peak
        for precision, path in paths.items():
            output = run_tflite(path, np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy()),
                                threads)
            best = latency.litert_timing(path, threads, warmup, runs, flops, peak, rounds)
            result[precision] = {"p50_ms": best["p50_ms"], "mean_ms": best["mean_ms"],
                                 "peak_share": best["peak_share"],
                                 "max_abs_error_vs_pytorch": max_abs_error(output, expected),
                                 "bytes": path.stat().st_size}
        if venv.is_dir() and photo.is_file():
            result["mediapipe_float32"] = mediapipe_call(paths["float32"], venv, photo, tmp,
                                                         repeats)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    typer.run(main)
