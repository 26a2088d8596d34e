"""Training the GAN-inversion encoder: the ``train_encoder`` stage's library.

The generator is the distilled student, frozen (the model that ships): its mapping network gives
the synthetic pairs and its ``w_avg`` the centre of W+; its synthesis network (every block, the last
head: the inference graph) turns the encoder's W+ back into an image. Each step's batch mixes two
sources (``synthetic_fraction``):

1. **synthetic pairs** drawn from the generator itself: random z, style mixing at any style input,
   and a truncation psi drawn per image from [``truncation_min``, 1], so that the true W+ is known
   and the latent loss can be applied;
2. **real images** from the prepared dataset, reconstruction losses only, drawn from the training
   part of a seeded split: the ``holdout_images`` held-out images (and their mirrored copies) are
   never trained on, and are recorded in the snapshot for the evaluation.

Losses (``pipeline.inversion``, weights in params): pixel L2 or L1, the perceptual distance (the
weight-free multi-scale one offline, VGG19 when chosen and available), the latent L2 on synthetic
pairs, and e4e's delta regularizer on W+. The scaffold (resume, torchrun, dvclive, NaN guard,
sample grids) is ``pipeline.training.run``'s.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
import pydantic
import torch

from pipeline.config import NonNegativeFloat, PositiveInt
from pipeline.data.dataset import FaceDataset, holdout_split
from pipeline.errors import ConfigError
from pipeline.images import make_grid, to_pixels
from pipeline.inversion import InversionWeights, PixelLoss, latent_loss, reconstruction_loss
from pipeline.models.blazestylegan import BlazeStyleGAN, load_student
from pipeline.models.encoder import (
    ENCODER_KIND,
    Encoder,
    EncoderConfig,
    generator_record,
    load_imagenet_backbone,
    resolve_imagenet_weights,
)
from pipeline.models.styles import sample_styles
from pipeline.perceptual import perceptual_distance
from pipeline.seeding import fixed_latents
from pipeline.similarity import psnr
from pipeline.training.run import RealImagesConfig, RunPaths, TrainingRun
from pipeline.training.runtime import (
    average_buffers,
    local_main_first,
    module_digest,
    optimizer_step,
)

STATE_KIND = "train-encoder-state"
Fraction = Annotated[float, pydantic.Field(ge=0, le=1)]


class TrainEncoderConfig(RealImagesConfig):
    """The ``train_encoder`` section of params.yaml."""

    SECTION: ClassVar[str] = "train_encoder"

    encoder: EncoderConfig
    backbone_weights: Literal["none", "imagenet"]  # MobileNetV2 from scratch, or ImageNet's
    allow_download: bool            # fetch missing ImageNet / VGG19 weights (checked) when online
    lr: Annotated[float, pydantic.Field(gt=0)]
    lr_schedule: Literal["constant", "cosine"]  # cosine: from lr down to 0 at the last step
    synthetic_fraction: Fraction    # share of each batch drawn from the generator
    truncation_min: Annotated[float, pydantic.Field(gt=0, le=1)]  # psi ~ U[this, 1] per image
    style_mixing: Fraction          # probability per batch of synthetic pairs
    holdout_images: PositiveInt     # real images never trained on (the evaluation's)
    xflip: bool                     # mirrored copies of the training images
    perceptual: Literal["vgg19-imagenet", "multiscale-l1-ssim"]  # as distill.perceptual
    pixel_loss: PixelLoss
    lambda_pixel: NonNegativeFloat
    lambda_perceptual: NonNegativeFloat
    lambda_latent: NonNegativeFloat  # synthetic pairs only
    lambda_delta: NonNegativeFloat   # e4e's regularizer on W+
    eval_every: PositiveInt          # steps between held-out PSNR evaluations
    sample_grid: PositiveInt         # input | reconstruction pairs in the sample grid

    RESUMABLE_KEYS: ClassVar[frozenset[str]] = (RealImagesConfig.RESUMABLE_KEYS
                                                | {"allow_download", "eval_every", "sample_grid"})

    def weights(self) -> InversionWeights:
        return InversionWeights(pixel=self.lambda_pixel, perceptual=self.lambda_perceptual,
                                delta=self.lambda_delta, pixel_loss=self.pixel_loss)


def learning_rate(config: TrainEncoderConfig, step: int) -> float:
    """The learning rate of ``step`` (0-based): constant, or cosine-annealed from ``lr`` to 0
    over ``steps`` (a function of the step alone, so a resumed run follows the same curve)."""
    if config.lr_schedule == "constant":
        return config.lr
    return config.lr * 0.5 * (1 + math.cos(math.pi * step / config.steps))


def check_compatible(config: EncoderConfig, student: BlazeStyleGAN, dataset_resolution: int,
                     student_path: str | Path) -> None:
    """Fail early, naming the key, when the encoder cannot invert this generator."""
    theirs = student.config
    for key, ours, value in (("resolution", config.resolution, theirs.resolution),
                             ("num_ws", config.num_ws, theirs.num_ws),
                             ("w_dim", config.w_dim, theirs.w_dim)):
        if ours != value:
            raise ConfigError(f"train_encoder.encoder.{key} is {ours} but the generator "
                              f"{student_path} has {value}")
    if dataset_resolution != config.resolution:
        raise ConfigError(f"train_encoder.encoder.resolution is {config.resolution} but the "
                          f"dataset is {dataset_resolution}x{dataset_resolution}")


@torch.no_grad()
def synthetic_pairs(student: BlazeStyleGAN, count: int, config: TrainEncoderConfig,
                    generator: torch.Generator,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (count, 3, R, R), their W+ (count, num_ws, w_dim)) drawn from the generator:
    z -> w with style mixing at any style input, truncated towards ``w_avg`` by a psi drawn per
    image (all draws from ``generator``)."""
    num_ws = student.num_ws
    if count == 0:
        shape = student.config.resolution
        return (torch.empty(0, 3, shape, shape, device=device),
                torch.empty(0, num_ws, student.config.w_dim, device=device))
    styles = sample_styles(student.mapping, count, student.config.z_dim, config.style_mixing,
                           range(1, num_ws), generator, device)
    ws = styles.ws(num_ws, styles.cutoff)
    psi = torch.empty(count, 1, 1).uniform_(config.truncation_min, 1.0, generator=generator)
    ws = student.mapping.w_avg.lerp(ws, psi.to(device))
    return student.synthesis.final_image(ws), ws


def heldout_batch(dataset: FaceDataset, indices: list[int], device: torch.device) -> torch.Tensor:
    return torch.stack([dataset[i] for i in indices]).to(device)


class InversionProbe:
    """Fixed images for the curves and the grid: held-out real ones, and synthetic pairs drawn
    from fixed latents (a stream no training step uses)."""

    def __init__(self, config: TrainEncoderConfig, student: BlazeStyleGAN, real: torch.Tensor,
                 device: torch.device):
        self.student = student
        self.real = real
        z = fixed_latents(config.seed, config.sample_grid, student.config.z_dim, "synthetic")
        with torch.no_grad():
            w = student.mapping(z.to(device))
            self.synthetic_ws = w[:, None].expand(-1, student.num_ws, -1)
            self.synthetic = student.synthesis.final_image(self.synthetic_ws)

    @torch.no_grad()
    def reconstruct(self, encoder: Encoder, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.student.synthesis.final_image(encoder(chunk))
                          for chunk in images.split(16)])

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        """Mean PSNR (dB) on the held-out real images and the fixed synthetic pairs, and the W+
        error of the latter."""
        encoder.eval()
        with torch.no_grad():
            real = psnr(self.reconstruct(encoder, self.real).clamp(-1, 1), self.real.clamp(-1, 1))
            synthetic = psnr(self.reconstruct(encoder, self.synthetic).clamp(-1, 1),
                             self.synthetic.clamp(-1, 1))
            ws_error = latent_loss(encoder(self.synthetic), self.synthetic_ws)
        encoder.train()
        return {"psnr_heldout": float(real.mean()), "psnr_synthetic": float(synthetic.mean()),
                "ws_mse_synthetic": float(ws_error)}

    def grid(self, encoder: Encoder, count: int) -> np.ndarray:
        """uint8 picture: pairs (input | reconstruction), held-out real images then synthetic."""
        encoder.eval()
        inputs = torch.cat([self.real[:(count + 1) // 2], self.synthetic[:count // 2]])
        outputs = self.reconstruct(encoder, inputs)
        encoder.train()
        pairs = torch.stack([inputs, outputs], dim=1).flatten(0, 1)  # x0, r0, x1, r1...
        return make_grid(to_pixels(pairs), columns=8)


def encoder_step(config: TrainEncoderConfig, encoder: Encoder, student: BlazeStyleGAN,
                 opt: torch.optim.Optimizer, real: torch.Tensor, synthetic: torch.Tensor,
                 synthetic_ws: torch.Tensor, distance: torch.nn.Module,
                 run: TrainingRun) -> dict[str, torch.Tensor]:
    """One update of the encoder on real images (reconstruction) and synthetic pairs
    (reconstruction and latent); returns the logged values."""
    images = torch.cat([real, synthetic])
    with run.autocast:
        ws = encoder(images)
        reconstruction = student.synthesis.final_image(ws)
    terms = reconstruction_loss(reconstruction.float(), images, ws.float(), distance,
                                config.weights())
    loss = terms["loss"]
    values = {f"loss/{name}": terms[name].detach() for name in ("pixel", "perceptual", "delta")}
    if len(synthetic):
        latent = latent_loss(ws[len(real):].float(), synthetic_ws)
        loss = loss + config.lambda_latent * latent
        values["loss/latent"] = latent.detach()
    values["loss/total"] = loss.detach()
    optimizer_step(loss, encoder, opt, run.dist)
    average_buffers(encoder, run.dist)  # BatchNorm's running statistics, the same on every rank
    return values


def _build_encoder(config: TrainEncoderConfig, mobilenet_weights: str | Path | None,
                   run: TrainingRun) -> Encoder:
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    encoder = Encoder(config.encoder)
    if config.backbone_weights == "imagenet":
        with local_main_first(run.dist):  # one download per node, if any
            weights = resolve_imagenet_weights(mobilenet_weights, config.allow_download)
        load_imagenet_backbone(encoder, weights)
    return encoder


def train_encoder(config: TrainEncoderConfig, *, student_path: str | Path,
                  dataset_dir: str | Path, paths: RunPaths, device: str = "auto",
                  mobilenet_weights: str | Path | None = None,
                  vgg19_weights: str | Path | None = None) -> dict:
    """Train an encoder that inverts the student at ``student_path``; write its snapshot (with
    the generator it inverts and the held-out split in its meta).

    Returns:
        ``{"steps", "holdout_images", "train_images", "initial": {...}, "final": {...}}``: held-out
        PSNR, synthetic PSNR and W+ error before training and at the end.
    """
    run = TrainingRun(config, paths, device, STATE_KIND)
    student = load_student(student_path, run.device)
    dataset = FaceDataset(dataset_dir, xflip=config.xflip, in_memory="auto")
    check_compatible(config.encoder, student, dataset.resolution, student_path)
    train, heldout = holdout_split(dataset, config.holdout_images, config.seed,
                                   "train_encoder.holdout_images")
    with local_main_first(run.dist):
        distance = perceptual_distance(config.perceptual, vgg19_weights,
                                       config.allow_download).to(run.device)
    encoder = _build_encoder(config, mobilenet_weights, run)
    encoder.w_avg.copy_(student.mapping.w_avg)
    encoder = encoder.to(run.device).train()
    opt = torch.optim.Adam(encoder.parameters(), lr=config.lr)
    identity = {"student": {"config": student.config.to_dict(),
                              "weights_sha256": module_digest(student)},
                "dataset_sha256": dataset.manifest_sha256}
    probe = InversionProbe(config, student, heldout_batch(dataset, heldout, run.device),
                           run.device)
    state = run.resume(identity, {"encoder": encoder, "opt": opt},
                       progress_keys=("loss/total", "eval/psnr_heldout", "images_per_second"))
    initial = state["initial"] if state is not None else probe.evaluate(encoder)
    evaluation = dict(initial)
    local_synthetic = round(run.local_batch * config.synthetic_fraction)
    local_real = run.local_batch - local_synthetic

    batches = run.real_batches(dataset, pool=train, count=local_real * run.dist.world_size)

    for step in run.steps():
        for group in opt.param_groups:
            group["lr"] = learning_rate(config, step)
        real = next(batches)
        synthetic, synthetic_ws = synthetic_pairs(student, local_synthetic, config,
                                                  run.generator(step, "draws"), run.device)
        values = encoder_step(config, encoder, student, opt, real, synthetic, synthetic_ws,
                              distance, run)
        run.record(step, values)
        evaluated = run.due(step, config.eval_every)
        if evaluated:
            evaluation = probe.evaluate(encoder)
        run.report(step, state=lambda: {"initial": initial},
                   samples=lambda: probe.grid(encoder, config.sample_grid),
                   log_extra={f"eval/{k}": v for k, v in evaluation.items()} if evaluated else None)

    if run.start_step == config.steps:  # nothing left to train: evaluate what the state holds
        evaluation = probe.evaluate(encoder)
    run.finish(encoder, ENCODER_KIND, config.encoder.to_dict(),
               samples=lambda: probe.grid(encoder, config.sample_grid),
               meta={"steps": config.steps, "backbone_weights": config.backbone_weights,
                     "perceptual_backbone": config.perceptual,
                     "generator": generator_record(student_path, student.num_ws,
                                                   student.config.w_dim),
                     "heldout_files": [dataset.files[i] for i in heldout], **identity})
    return {"steps": config.steps, "holdout_images": len(heldout),
            "train_images": len(dataset.files) - len(heldout), "initial": initial,
            "final": evaluation}
