"""Few-shot style fine-tuning of the student: the ``stylize`` stage's library.

From one or a few style images, fine-tune a copy of the distilled student so that any face,
inverted by the encoder, comes out in that style (JoJoGAN's recipe, as MediaPipe's Model Maker
runs it; ``pipeline.stylization`` has the latents and losses). Frozen: the encoder, the mapping
network (it draws the random latents), the discriminator. Trained: the synthesis network (the
blocks and heads; only the last head ships). Unlike MediaPipe's trainer, every style image given
is used: each step's batch cycles through all of them.

Each step, for a batch of style images ``x_s`` with codes ``w_s = E(x_s)`` (computed once):

1. latents: ``w_s``, mixed at the swap layers with mapped random z (``alpha``);
2. the generated image ``G(latents)`` against ``x_s``: pixel L1, content and Gram style on the
   feature network, feature matching on the frozen discriminator; weights in params.

The scaffold (resume, torchrun, dvclive, NaN guard, sample grids) is ``pipeline.training.run``'s.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
import pydantic
import torch

from pipeline.config import NonNegativeFloat, PositiveInt
from pipeline.data.dataset import FaceDataset, heldout_images
from pipeline.errors import ConfigError, DataError
from pipeline.images import make_grid, to_pixels
from pipeline.models.blazestylegan import BlazeStyleGAN
from pipeline.models.encoder import Encoder, load_encoder_and_generator
from pipeline.models.stylegan2 import load_discriminator
from pipeline.models.stylizer import (
    STYLIZED_KIND,
    DiscriminatorFeatures,
    FeatureNetworkName,
    feature_network,
    stylized_record,
)
from pipeline.seeding import fixed_latents
from pipeline.stylization import (
    content_loss,
    feature_matching_loss,
    gram_loss,
    pixel_l1,
    stylization_latents,
)
from pipeline.training.run import RunPaths, TrainingConfig, TrainingRun
from pipeline.training.runtime import local_main_first, module_digest, optimizer_step

STATE_KIND = "stylize-state"
Fraction = Annotated[float, pydantic.Field(ge=0, le=1)]


class StylizeConfig(TrainingConfig):
    """The ``stylize`` section of params.yaml (shared by every style)."""

    SECTION: ClassVar[str] = "stylize"

    swap_layers: list[int]            # style inputs mixed with random w (the style-strength knob)
    alpha: Fraction                   # weight of the style's own code at the swap layers
    lr: Annotated[float, pydantic.Field(gt=0)]
    betas: Annotated[list[Fraction], pydantic.Field(min_length=2, max_length=2)]  # Adam's
    feature_network: FeatureNetworkName  # content and style terms: discriminator or VGG19
    allow_download: bool              # fetch missing VGG19 weights (checked) when online
    lambda_pixel: NonNegativeFloat    # MediaPipe's weights: 0.5, 4, 1, 0.2
    lambda_content: NonNegativeFloat
    lambda_style: NonNegativeFloat
    lambda_feature_matching: NonNegativeFloat
    probe_faces: PositiveInt          # held-out faces in the sample grid

    RESUMABLE_KEYS: ClassVar[frozenset[str]] = (TrainingConfig.RESUMABLE_KEYS
                                                | {"allow_download", "probe_faces"})


def check_swap_layers(config: StylizeConfig, num_ws: int) -> None:
    """Fail, naming the key, unless the swap layers are distinct style inputs of the generator."""
    layers = config.swap_layers
    if any(not 0 <= k < num_ws for k in layers) or len(set(layers)) != len(layers):
        raise ConfigError(f"stylize.swap_layers {layers}: distinct style inputs of the generator "
                          f"(0..{num_ws - 1}) expected")


def style_indices(step: int, batch_size: int, count: int, rank: int, local: int) -> list[int]:
    """The style images of ``step``'s batch on this rank: the batches of all steps cycle through
    every style image in turn (so each is used equally), this rank's share of it."""
    first = step * batch_size + rank * local
    return [(first + i) % count for i in range(local)]


class StylizeLosses(torch.nn.Module):
    """Every term of the fine-tune's loss, weighted as in params."""

    def __init__(self, config: StylizeConfig, features: torch.nn.Module,
                 discriminator: DiscriminatorFeatures):
        super().__init__()
        self.config, self.features, self.discriminator = config, features, discriminator

    def forward(self, image: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        ours, theirs = self.features(image), self.features(target)
        terms = {"pixel": pixel_l1(image, target),
                 "content": content_loss(ours, theirs),
                 "style": gram_loss(ours, theirs),
                 "feature_matching": feature_matching_loss(self.discriminator(image),
                                                           self.discriminator(target))}
        terms["total"] = (c.lambda_pixel * terms["pixel"] + c.lambda_content * terms["content"]
                          + c.lambda_style * terms["style"]
                          + c.lambda_feature_matching * terms["feature_matching"])
        return terms


class StylizeProbe:
    """Fixed images for the sample grid: the style images, and held-out faces through the
    base student and through the one being fine-tuned."""

    def __init__(self, encoder: Encoder, base: BlazeStyleGAN, style_images: torch.Tensor,
                 faces: torch.Tensor):
        with torch.no_grad():
            self.ws = encoder(faces)
            self.rows = [style_images, faces, base.synthesis.final_image(self.ws)]

    @torch.no_grad()
    def grid(self, student: BlazeStyleGAN) -> np.ndarray:
        """uint8 picture, one row each: style images, held-out faces, their reconstruction by
        the base student, the same codes through the stylized one."""
        columns = len(self.ws)
        rows = [*self.rows, student.synthesis.final_image(self.ws)]
        padded = [torch.cat([r[:columns], r.new_full((max(columns - len(r), 0), *r.shape[1:]),
                                                     -1.0)]) for r in rows]
        return make_grid(to_pixels(torch.cat(padded).clamp(-1, 1)), columns=columns)


def build_losses(config: StylizeConfig, discriminator_path: str | Path,
                 vgg19_weights: str | Path | None, run: TrainingRun) -> StylizeLosses:
    """The loss terms with their frozen networks, on the run's device."""
    discriminator = DiscriminatorFeatures(load_discriminator(discriminator_path))
    if config.feature_network == "discriminator":  # the same frozen network: loaded once
        features = discriminator
    else:
        with local_main_first(run.dist):
            features = feature_network(config.feature_network, discriminator_path,
                                       vgg19_weights, config.allow_download)
    return StylizeLosses(config, features, discriminator).to(run.device)


def load_style_images(styles_dir: str | Path, resolution: int) -> tuple[torch.Tensor, str]:
    """Every image of a prepared style dataset, (S, 3, R, R) in [-1, 1], and its manifest hash."""
    styles = FaceDataset(styles_dir)
    if styles.resolution != resolution:
        raise DataError(f"{styles_dir}: style images are {styles.resolution}x"
                        f"{styles.resolution}, the generator makes {resolution}x{resolution}")
    return torch.stack([styles[i] for i in range(len(styles))]), styles.manifest_sha256


def stylize(config: StylizeConfig, *, style: str, styles_dir: str | Path,
            encoder_path: str | Path, student_path: str | Path,
            discriminator_path: str | Path, dataset_dir: str | Path, paths: RunPaths,
            device: str = "auto", vgg19_weights: str | Path | None = None) -> dict:
    """Fine-tune a copy of the student at ``student_path`` to the style images in
    ``styles_dir``; write it as a stylized-generator snapshot (style, base student, encoder in
    its meta).

    Returns:
        ``{"style", "style_images", "steps", "initial": {...}, "final": {...}}``: the loss terms
        before and after fine-tuning on fixed draws (every style image, its code mixed with a
        fixed random w at the swap layers: the objective itself).
    """
    run = TrainingRun(config, paths, device, STATE_KIND)
    encoder, base, encoder_meta = load_encoder_and_generator(encoder_path, student_path)
    check_swap_layers(config, base.num_ws)
    style_images, styles_sha = load_style_images(styles_dir, base.config.resolution)
    encoder, base = encoder.to(run.device), base.to(run.device)
    style_images = style_images.to(run.device)
    with torch.no_grad():
        w_style = encoder(style_images)                        # (S, num_ws, w_dim)
    losses = build_losses(config, discriminator_path, vgg19_weights, run)

    student = copy.deepcopy(base).train()
    student.mapping.requires_grad_(False)
    student.synthesis.requires_grad_(True)
    opt = torch.optim.Adam(student.synthesis.parameters(), lr=config.lr, betas=tuple(config.betas))
    identity = {"student": module_digest(base), "encoder": module_digest(encoder),
                "discriminator": module_digest(losses.discriminator),
                "feature_network": module_digest(losses.features), "styles_sha256": styles_sha}
    faces = heldout_images(dataset_dir, encoder_meta, run.device)[:config.probe_faces]
    probe = StylizeProbe(encoder, base, style_images, faces)
    state = run.resume(identity, {"student": student, "opt": opt},
                       progress_keys=("loss/total", "loss/style", "images_per_second"))

    # The objective on fixed draws: every style image, its code mixed with a fixed random w.
    z = fixed_latents(config.seed, len(style_images), base.config.z_dim, "stylize")
    with torch.no_grad():
        probe_latents = stylization_latents(w_style, base.mapping(z.to(run.device)),
                                            config.swap_layers, config.alpha)

    def style_batch_loss(model: BlazeStyleGAN) -> dict[str, float]:
        with torch.no_grad():
            terms = losses(model.synthesis.final_image(probe_latents), style_images)
        return {name: float(value) for name, value in terms.items()}

    initial = state["initial"] if state is not None else style_batch_loss(student)
    for step in run.steps():
        index = style_indices(step, config.batch_size, len(style_images), run.dist.rank,
                              run.local_batch)
        z = torch.randn(run.local_batch, base.config.z_dim, generator=run.generator(step, "z"))
        with torch.no_grad():
            w_random = base.mapping(z.to(run.device))
        latents = stylization_latents(w_style[index], w_random, config.swap_layers, config.alpha)
        with run.autocast:
            image = student.synthesis.final_image(latents)
        terms = losses(image.float(), style_images[index])
        optimizer_step(terms["total"], student.synthesis, opt, run.dist)
        run.record(step, {f"loss/{name}": value.detach() for name, value in terms.items()})
        run.report(step, state=lambda: {"initial": initial}, samples=lambda: probe.grid(student))

    final = style_batch_loss(student)
    run.finish(student.eval(), STYLIZED_KIND, student.config.to_dict(),
               samples=lambda: probe.grid(student),
               meta={"style": style, "style_images": len(style_images),
                     "styles_sha256": styles_sha, "swap_layers": list(config.swap_layers),
                     "alpha": config.alpha, "feature_network": config.feature_network,
                     "student": stylized_record(student_path),
                     "encoder": stylized_record(encoder_path),
                     "discriminator": stylized_record(discriminator_path)})
    return {"style": style, "style_images": len(style_images), "steps": config.steps,
            "initial": initial, "final": final}
