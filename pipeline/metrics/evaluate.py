"""The ``evaluate`` stage: complexity, latency and quality of the teacher, the student and the
deployed student, on this machine (and optionally a phone).

* Complexity: parameters and GFLOPs (2 x MACs) of the inference graphs, as in BlazeStyleGAN's
  Table 1.
* Latency: LiteRT (XNNPACK) on the float16 and float32 TFLite models, ONNX Runtime on the
  simplified ONNX models, PyTorch eager; the same warm-up and timed runs for each, and the
  machine's sgemm peak measured in the same run, so each model's achieved GFLOP/s is also given as
  a fraction of that peak. With ``evaluate.android.serial`` set, the TFLite models also run on
  that phone with TFLite's benchmark_model.
* Quality, against the cached reference set of real images: sliced Wasserstein distance (always)
  and FID (when the weights are available) of the teacher (PyTorch), the student (PyTorch) and
  the deployed student (float16 TFLite on LiteRT), all on the same latents; PSNR / SSIM of the
  students against the teacher and of the deployed student against its PyTorch model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pydantic
import torch
from torch import nn

from pipeline.artifacts.base import read_artifact
from pipeline.artifacts.evaluation import (
    Complexity,
    DeviceTiming,
    Evaluation,
    Latency,
    ModelQuality,
    ModelSize,
    Quality,
    RuntimeLatencies,
    RuntimeTiming,
    Similarities,
    Similarity,
)
from pipeline.artifacts.tflite import GENERATORS, PRECISIONS, TfliteCard, card_file, model_file
from pipeline.config import PositiveInt, StageConfig
from pipeline.errors import ConfigError
from pipeline.images import make_grid, quantize, to_pixels
from pipeline.metrics import android, fid, latency, swd
from pipeline.metrics.reference import FidConfig, Reference, fid_weights
from pipeline.models.complexity import count_flops, count_parameters
from pipeline.models.inference import check_latents, inference_models, latent_shape
from pipeline.runtimes import run_tflite
from pipeline.similarity import psnr, ssim_per_image

log = logging.getLogger(__name__)

class LatencyConfig(StageConfig):
    """``evaluate.latency``: the timing protocol, the same for every runtime."""

    threads: PositiveInt   # CPU threads of every runtime
    warmup: Annotated[int, pydantic.Field(ge=0)]
    runs: PositiveInt      # timed runs, one image each (the paper: 50)


class AndroidConfig(StageConfig):
    """``evaluate.android``: the optional on-phone benchmark."""

    serial: str | None             # adb serial of the phone; null: no on-device benchmark
    benchmark_model: str | None    # TFLite benchmark_model binary for the phone's ABI
    threads: PositiveInt
    use_gpu: bool                  # the GPU delegate instead of the CPU (XNNPACK)
    adb: str                       # the adb executable


class EvaluateConfig(StageConfig):
    """The ``evaluate`` section of params.yaml."""

    samples: Annotated[int, pydantic.Field(ge=2)]  # images per model (<= reference_stats.images)
    seed: int
    batch_size: PositiveInt
    grid_latents: PositiveInt  # columns of the teacher | student | student float16 grid
    latency: LatencyConfig
    android: AndroidConfig

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        if self.android.serial is not None and self.android.benchmark_model is None:
            raise ValueError("android.serial is set: android.benchmark_model must name the "
                             "benchmark_model binary")
        if self.grid_latents > self.samples:
            raise ValueError(f"grid_latents ({self.grid_latents}) is larger than samples "
                             f"({self.samples})")
        return self


def complexity(models: dict[str, nn.Module], latent: torch.Tensor) -> Complexity:
    """Parameters and GFLOPs of one image of each generator."""
    return Complexity(**{name: ModelSize(params=count_parameters(model),
                                         gflops=count_flops(lambda m=model: m(latent[:1])) / 1e9)
                         for name, model in models.items()})


def measure_latency(models: dict[str, nn.Module], onnx_paths: dict[str, Path], tflite_dir: Path,
                    flops: dict[str, float], config: LatencyConfig) -> Latency:
    """Latency of every model on every runtime, the sgemm peak, and achieved GFLOP/s."""
    threads = torch.get_num_threads()
    try:
        return _measure_latency(models, onnx_paths, tflite_dir, flops, config)
    finally:
        torch.set_num_threads(threads)  # the PyTorch runs set it process-wide


def _measure_latency(models, onnx_paths, tflite_dir, flops, config):
    peak = latency.sgemm_peak_gflops(config.threads)
    results: dict[str, Any] = {"peak_sgemm_gflops": peak, "threads": config.threads}
    for name, model in models.items():
        timings = {}
        runners = {f"litert_{p}": latency.litert_runner(model_file(tflite_dir, name, p),
                                                        config.threads) for p in PRECISIONS}
        runners["onnxruntime"] = latency.onnxruntime_runner(onnx_paths[name], config.threads)
        runners["pytorch"] = latency.pytorch_runner(model, latent_shape(model, 1)[1],
                                                    config.threads)
        for runtime, run in runners.items():
            timing = latency.time_runs(run, config.warmup, config.runs)
            achieved = flops[name] / 1e9 / (timing["mean_ms"] / 1e3)
            timings[runtime] = RuntimeTiming(**timing, achieved_gflops=achieved,
                                             fraction_of_peak=achieved / peak)
            log.info("%s %s: %.3f ms mean (p90 %.3f)", name, runtime, timing["mean_ms"],
                     timing["p90_ms"])
        results[name] = RuntimeLatencies(**timings)
    return Latency(**results)


def android_latency(tflite_dir: Path, config: AndroidConfig,
                    latency_config: LatencyConfig) -> dict[str, DeviceTiming]:
    """benchmark_model on the phone for every TFLite file, keyed by its name."""
    return {model_file("", name, p).stem: DeviceTiming(**android.run_benchmark(
                config.serial, model_file(tflite_dir, name, p), config.benchmark_model,
                config.threads, config.use_gpu, latency_config.warmup, latency_config.runs,
                config.adb))
            for name in GENERATORS for p in PRECISIONS}


def generate(models: dict[str, nn.Module], tflite_dir: Path, latents: torch.Tensor,
             batch_size: int) -> dict[str, torch.Tensor]:
    """Images (N, 3, R, R), quantized to 8 bits as an app displays them, of the teacher, the
    student and the deployed student (float16 TFLite), on the same latents."""
    images = {}
    with torch.no_grad():
        for name in GENERATORS:
            out = torch.cat([models[name](chunk) for chunk in latents.split(batch_size)])
            images[name] = out.permute(0, 3, 1, 2) if models[name].layout == "nhwc" else out
    deployed = torch.from_numpy(run_tflite(model_file(tflite_dir, "student", "float16"),
                                           latents.numpy()))
    card = read_artifact(card_file(tflite_dir, "student", "float16"), TfliteCard, "convert_tflite")
    images["student_float16"] = (deployed.permute(0, 3, 1, 2) if card.output.layout == "NHWC"
                                 else deployed)
    return {name: quantize(image).float() / 127.5 - 1 for name, image in images.items()}


def similarity(images: dict[str, torch.Tensor]) -> Similarities:
    """Mean PSNR and SSIM of the students against the teacher and of the deployed student
    against its PyTorch model."""
    pairs = {"student_vs_teacher": ("student", "teacher"),
             "student_float16_vs_teacher": ("student_float16", "teacher"),
             "student_float16_vs_student": ("student_float16", "student")}
    result = {}
    for key, (a, b) in pairs.items():
        x, y = images[a], images[b]
        result[key] = Similarity(psnr_db=float(psnr(x, y).mean()),
                                 ssim=float(ssim_per_image(x, y).mean()))
    return Similarities(**result)


def quality(images: dict[str, torch.Tensor], reference: Reference, weights: Path | None,
            fid_config: FidConfig, seed: int) -> Quality:
    """SWD (and FID when available) of each image set against the reference set."""
    count = len(next(iter(images.values())))
    real = reference.images[:count].float() / 127.5 - 1  # quantized like the generated ones
    distances = swd.SWD(swd.level_descriptors(real, seed), seed)
    metric = None
    if weights is not None:
        metric = fid.fid_metric(weights)
        fid.restore_real_statistics(metric, reference.fid_stats)
    result = {}
    for name, generated in images.items():
        fid_value = None if metric is None else fid.frechet_distance_to_real(
            metric, generated.split(fid_config.batch_size))
        result[name] = ModelQuality(**distances.distance(swd.level_descriptors(generated, seed)),
                                    fid=fid_value)
    return Quality(**result)


def comparison_grid(images: dict[str, torch.Tensor], columns: int) -> np.ndarray:
    """Rows: teacher, student, student float16 TFLite; columns: the same latents."""
    rows = [to_pixels(images[name][:columns])
            for name in ("teacher", "student", "student_float16")]
    return make_grid(np.concatenate(rows), columns=columns)


def check_inputs(reference: Reference, models: dict[str, nn.Module], tflite_dir: Path,
                 config: EvaluateConfig) -> None:
    """Fail early, naming the setting, on inputs that cannot be evaluated together."""
    if config.samples > reference.summary.images:
        raise ConfigError(f"evaluate.samples ({config.samples}) is larger than the reference set "
                          f"({reference.summary.images} images): lower it or raise "
                          f"reference_stats.images")
    resolution = models["student"].config.resolution
    if reference.summary.resolution != resolution:
        raise ConfigError(f"the reference set is at {reference.summary.resolution} px, the "
                          f"generators at {resolution} px: re-run reference_stats")
    for name in GENERATORS:
        card = read_artifact(card_file(tflite_dir, name, "float16"), TfliteCard, "convert_tflite")
        if card.input.shape[0] != 1:
            raise ConfigError(f"{model_file(tflite_dir, name, 'float16')} has batch "
                              f"{card.input.shape[0]}: latency is measured per image, "
                              f"export with export_onnx.batch_size 1")


def evaluate(config: EvaluateConfig, fid_config: FidConfig, *, student_path: Path,
             teacher_path: Path, onnx_paths: dict[str, Path], tflite_dir: Path,
             reference_dir: Path) -> tuple[Evaluation, np.ndarray]:
    """Every measurement of the stage, and the teacher | student | student float16 grid."""
    reference = Reference(reference_dir)
    models = inference_models(student_path, teacher_path)
    check_inputs(reference, models, tflite_dir, config)
    weights, reason = fid_weights(fid_config)  # first: a bad weights file fails before timing
    if weights is not None and reference.fid_stats is None:
        weights, reason = None, "the reference set has no FID statistics; re-run reference_stats"
    reference.check_weights(weights)
    latents = check_latents(models, config.samples, config.seed, "evaluate")
    size = complexity(models, latents)
    flops = {name: getattr(size, name).gflops * 1e9 for name in models}
    timings = measure_latency(models, onnx_paths, tflite_dir, flops, config.latency)
    phone = (android_latency(tflite_dir, config.android, config.latency)
             if config.android.serial is not None else None)
    images = generate(models, tflite_dir, latents, config.batch_size)
    results = Evaluation(complexity=size, latency=timings, android=phone,
                         similarity=similarity(images),
                         quality=quality(images, reference, weights, fid_config, config.seed),
                         samples=config.samples, fid_unavailable_reason=reason)
    return results, comparison_grid(images, config.grid_latents)
