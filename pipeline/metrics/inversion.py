"""Evaluation of the inversion encoder: the ``evaluate_encoder`` stage's library.

On two sets no encoder training saw, the held-out real images recorded in the encoder's snapshot
and synthetic pairs from fixed latents of a stream no training step draws from, four inversions
are scored the same way (PSNR and SSIM of the generator's reconstruction against the input; on
synthetic pairs also the W+ error against the true latents):

* ``encoder``: the PyTorch encoder;
* ``encoder_float16``: the deployed float16 TFLite encoder on LiteRT (its W+ through the PyTorch
  generator), so the conversion's cost is visible;
* ``mean_face``: ``w_avg`` for every input, the floor any inversion must beat;
* ``optimizer``: Adam on W+ from ``w_avg`` with the losses the encoder was trained with (read from
  its snapshot), the slow reference an encoder approximates.

Seconds per image are measured for the encoder and the optimiser on the same CPU threads, both
batched; LiteRT latency of the TFLite encoders (batch 1, warm-up then timed runs) comes with the
share of the machine's sgemm peak it reaches.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pydantic
import torch

from pipeline.artifacts.encoder import encoder_model_file
from pipeline.config import PositiveInt, StageConfig
from pipeline.data.dataset import heldout_images
from pipeline.images import make_grid, to_pixels
from pipeline.inversion import InversionWeights, latent_loss, optimize_ws
from pipeline.metrics import latency
from pipeline.models.blazestylegan import BlazeStyleGAN
from pipeline.models.complexity import count_flops
from pipeline.models.encoder import Encoder, load_encoder_and_generator
from pipeline.perceptual import perceptual_distance
from pipeline.runtimes import run_tflite
from pipeline.seeding import fixed_latents
from pipeline.similarity import psnr, ssim_per_image

log = logging.getLogger(__name__)


class EvaluateEncoderConfig(StageConfig):
    """The ``evaluate_encoder`` section of params.yaml."""

    synthetic_images: PositiveInt    # held-out synthetic pairs (fixed latents)
    seed: int
    optimizer_steps: PositiveInt     # Adam steps of the optimisation baseline
    optimizer_lr: Annotated[float, pydantic.Field(gt=0)]
    threads: PositiveInt             # CPU threads of every timed run
    warmup: PositiveInt              # LiteRT latency: untimed runs, then timed ones
    runs: PositiveInt
    grid_images: PositiveInt         # held-out rows of input | encoder | optimiser


@torch.no_grad()
def synthetic_pairs(student: BlazeStyleGAN, count: int,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, W+) of the generator from fixed latents no training step draws (psi 1, no
    mixing: the generator's own distribution)."""
    z = fixed_latents(seed, count, student.config.z_dim, "evaluate_encoder")
    ws = student.mapping(z)[:, None].expand(-1, student.num_ws, -1)
    return synthesize(student, ws), ws


@torch.no_grad()
def synthesize(student: BlazeStyleGAN, ws: torch.Tensor) -> torch.Tensor:
    return torch.cat([student.synthesis.final_image(chunk) for chunk in ws.split(32)])


def score(reconstruction: torch.Tensor, target: torch.Tensor, ws: torch.Tensor | None = None,
          ws_true: torch.Tensor | None = None) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of reconstructions (clamped to [-1, 1], as displayed), and the W+
    mean squared error when the true latents are known."""
    reconstruction, target = reconstruction.clamp(-1, 1), target.clamp(-1, 1)
    scores = {"psnr_db": float(psnr(reconstruction, target).mean()),
              "ssim": float(ssim_per_image(reconstruction, target).mean())}
    if ws_true is not None:
        scores["ws_mse"] = float(latent_loss(ws, ws_true))
    return scores


@torch.no_grad()
def encode_tflite(path: Path, images: torch.Tensor, threads: int) -> torch.Tensor:
    """W+ of the TFLite encoder at ``path`` for images (N, 3, R, R), run NHWC on LiteRT."""
    return torch.from_numpy(run_tflite(path, images.permute(0, 2, 3, 1).contiguous().numpy(),
                                       threads))


def inversions(encoder: Encoder, student: BlazeStyleGAN, images: torch.Tensor,
               tflite: Path, weights: InversionWeights, distance: torch.nn.Module,
               config: EvaluateEncoderConfig) -> dict[str, dict[str, Any]]:
    """The four inversions of ``images``: {name: {"ws", "seconds"}}."""
    start = time.perf_counter()
    with torch.no_grad():
        ws = encoder(images)
    encoder_seconds = time.perf_counter() - start
    optimized, optimizer_seconds = optimize_ws(
        student.synthesis.final_image, images, encoder.w_avg, student.num_ws, distance, weights,
        config.optimizer_steps, config.optimizer_lr)
    return {"encoder": {"ws": ws, "seconds": encoder_seconds},
            "encoder_float16": {"ws": encode_tflite(tflite, images, config.threads)},
            "mean_face": {"ws": encoder.w_avg.expand_as(ws)},
            "optimizer": {"ws": optimized, "seconds": optimizer_seconds}}


def score_set(results: dict[str, dict[str, Any]], student: BlazeStyleGAN, images: torch.Tensor,
              ws_true: torch.Tensor | None = None) -> dict[str, Any]:
    """Scores of every inversion of one set, and seconds per image where timed."""
    scores: dict[str, Any] = {"images": len(images)}
    for name, result in results.items():
        scores[name] = score(synthesize(student, result["ws"]), images, result["ws"], ws_true)
        if "seconds" in result:
            scores[name]["seconds_per_image"] = result["seconds"] / len(images)
    return scores


def litert_latency(tflite_dir: Path, encoder: Encoder, config: EvaluateEncoderConfig) -> dict:
    """LiteRT latency (batch 1) of both TFLite encoders, with GFLOPs and the share of the sgemm
    peak measured in the same process."""
    resolution = encoder.config.resolution
    image = torch.zeros(1, 3, resolution, resolution)
    flops = count_flops(lambda: encoder(image))
    peak = latency.sgemm_peak_gflops(config.threads)
    result: dict[str, Any] = {"gflops": flops / 1e9, "sgemm_peak_gflops": peak,
                              "threads": config.threads}
    for precision in ("float32", "float16"):
        timing = latency.litert_timing(encoder_model_file(tflite_dir, precision), config.threads,
                                       config.warmup, config.runs, flops, peak)
        result[f"litert_{precision}"] = timing
    return result


def comparison_grid(student: BlazeStyleGAN, images: torch.Tensor,
                    results: dict[str, dict[str, Any]], rows: int) -> np.ndarray:
    """uint8 picture, one held-out image per row: input | encoder | optimiser."""
    rows = min(rows, len(images))
    columns = [images[:rows]] + [synthesize(student, results[name]["ws"][:rows])
                                 for name in ("encoder", "optimizer")]
    triples = torch.stack(columns, dim=1).flatten(0, 1)
    return make_grid(to_pixels(triples), columns=3)


def evaluate_encoder(config: EvaluateEncoderConfig, *, encoder_path: str | Path,
                     student_path: str | Path, dataset_dir: str | Path, tflite_dir: str | Path,
                     vgg19_weights: str | Path | None = None) -> tuple[dict, np.ndarray]:
    """Score the encoder against its baselines on held-out real images and synthetic pairs.

    Returns:
        (metrics, the held-out picture input | encoder | optimiser).
    """
    torch.set_num_threads(config.threads)
    encoder, student, meta = load_encoder_and_generator(encoder_path, student_path)
    train = meta["train_config"]
    weights = InversionWeights(pixel=train["lambda_pixel"], perceptual=train["lambda_perceptual"],
                               delta=train["lambda_delta"], pixel_loss=train["pixel_loss"])
    distance = perceptual_distance(train["perceptual"], vgg19_weights)
    tflite = encoder_model_file(tflite_dir, "float16")
    real = heldout_images(dataset_dir, meta, torch.device("cpu"))
    synthetic, ws_true = synthetic_pairs(student, config.synthetic_images, config.seed)
    real_results = inversions(encoder, student, real, tflite, weights, distance, config)
    synthetic_results = inversions(encoder, student, synthetic, tflite, weights, distance, config)
    metrics = {"heldout_real": score_set(real_results, student, real),
               "synthetic": score_set(synthetic_results, student, synthetic, ws_true)}
    real_scores = metrics["heldout_real"]
    metrics["summary"] = {
        "psnr_db_vs_mean_face": real_scores["encoder"]["psnr_db"]
        - real_scores["mean_face"]["psnr_db"],
        "psnr_db_vs_optimizer": real_scores["encoder"]["psnr_db"]
        - real_scores["optimizer"]["psnr_db"],
        "speedup_vs_optimizer": real_scores["optimizer"]["seconds_per_image"]
        / real_scores["encoder"]["seconds_per_image"],
        "optimizer_steps": config.optimizer_steps, "perceptual_backbone": train["perceptual"]}
    metrics["latency"] = litert_latency(Path(tflite_dir), encoder, config)
    log.info("held-out real: encoder %.2f dB, optimiser %.2f dB, mean face %.2f dB; encoder "
             "%.0fx faster per image", real_scores["encoder"]["psnr_db"],
             real_scores["optimizer"]["psnr_db"], real_scores["mean_face"]["psnr_db"],
             metrics["summary"]["speedup_vs_optimizer"])
    return metrics, comparison_grid(student, real, real_results, config.grid_images)
