"""BlazeStyleGAN distillation: the ``distill`` stage's library.

The teacher is a frozen StyleGAN2 EMA generator. Teacher and student synthesize from the same w
(by default through the teacher's own mapping network, which the student keeps frozen), with the
same style mixing, and the teacher uses its constant noise so its target is a function of w alone
(the student's noise inputs are constants of a smaller size: they cannot share the teacher's).

One step = three phases, then the EMA update:

1. student: the weighted sum of the paper's Eq. 4: at every pyramid level the perceptual distance
   and the pixel L1 between the level's image and the teacher image resized to it (Eq. 1), plus the
   non-saturating adversarial loss; with a distilled mapping network, also its regression to the
   teacher's w;
2. discriminator: logistic loss on REAL dataset images against the student's images (not the
   teacher's: a discriminator that sees real faces pulls the student away from the teacher's
   artifacts, as in the paper);
3. lazy R1 on the real images.

Checkpoints, resumption, torchrun, dvclive logging and the NaN guard are the scaffold every trainer
shares (``pipeline.training.run``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
import pydantic
import torch
from torch import nn

from pipeline.config import NonNegativeFloat, PositiveInt, StageConfig
from pipeline.data.dataset import FaceDataset
from pipeline.errors import ConfigError
from pipeline.images import make_grid, to_pixels
from pipeline.io import sha256_file
from pipeline.models.blazestylegan import STUDENT_KIND, BlazeStyleGAN, BlazeStyleGANConfig
from pipeline.models.stylegan2 import (
    DISCRIMINATOR_KIND,
    Discriminator,
    Generator,
    StyleGAN2Config,
    load_teacher,
)
from pipeline.models.styles import StyleSample, broadcast_ws, sample_styles
from pipeline.perceptual import perceptual_distance
from pipeline.seeding import fixed_latents
from pipeline.similarity import psnr, ssim_per_image
from pipeline.snapshot import save_snapshot
from pipeline.training import losses
from pipeline.training.adversarial import (
    AdversarialConfig,
    discriminator_step,
    r1_step,
)
from pipeline.training.run import RunPaths, TrainingRun
from pipeline.training.runtime import (
    ema_beta,
    lazy_adam,
    local_main_first,
    module_digest,
    optimizer_step,
    update_ema,
)

STATE_KIND = "distill-state"


class DiscriminatorWidths(StageConfig):
    """Channel widths of the distillation discriminator (StyleGAN2's, at the student resolution)."""

    channel_base: PositiveInt   # channels at resolution r: min(channel_base / r, channel_max)
    channel_max: PositiveInt


class DistillConfig(AdversarialConfig):
    """The ``distill`` section of params.yaml."""

    SECTION: ClassVar[str] = "distill"

    student: BlazeStyleGANConfig
    mapping: Literal["teacher", "distilled"]  # frozen teacher copy, or a trained (smaller) one
    discriminator: DiscriminatorWidths
    perceptual: Literal["vgg19-imagenet", "multiscale-l1-ssim"]  # distance of Eq. 1
    allow_download: bool          # fetch missing VGG19 weights (checked) when online
    lambda_perceptual: NonNegativeFloat  # weights of Eq. 4
    lambda_l1: NonNegativeFloat
    lambda_adv: NonNegativeFloat
    lambda_mapping: NonNegativeFloat     # w regression of a distilled mapping (unused otherwise)
    final_level_weight: Annotated[float, pydantic.Field(gt=0)]  # the last level's, in Eq. 4's means
    g_betas: Annotated[list[Annotated[float, pydantic.Field(ge=0, lt=1)]],
                       pydantic.Field(min_length=2, max_length=2)]  # the student's Adam betas
    eval_every: PositiveInt       # steps between student-vs-teacher PSNR / SSIM
    eval_latents: PositiveInt     # fixed latents of that evaluation

    @pydantic.field_validator("student")
    @classmethod
    def _every_student_key_set(cls, student: BlazeStyleGANConfig) -> BlazeStyleGANConfig:
        # The config's one default (``head``) lets snapshots from before the field load; params
        # still set every key, as everywhere else.
        missing = set(BlazeStyleGANConfig.model_fields) - student.model_fields_set
        if missing:
            raise ValueError(f"{', '.join(sorted(missing))}: missing (every key must be set in "
                             f"params.yaml)")
        return student

    RESUMABLE_KEYS: ClassVar[frozenset[str]] = (AdversarialConfig.RESUMABLE_KEYS
                                                | {"eval_every", "allow_download"})
    # Not eval_latents: the initial evaluation kept in the state was made on those latents.


def check_compatible(config: DistillConfig, teacher: StyleGAN2Config,
                     dataset_resolution: int) -> None:
    """Fail early, naming the key, when the student cannot be distilled from this teacher."""
    student = config.student
    pairs = [("resolution", student.resolution, teacher.resolution),
             ("z_dim", student.z_dim, teacher.z_dim), ("w_dim", student.w_dim, teacher.w_dim)]
    if config.mapping == "teacher":  # the same weights mean the same function only with these
        pairs += [("mapping_layers", student.mapping_layers, teacher.mapping_layers),
                  ("mapping_lr_mul", student.mapping_lr_mul, teacher.mapping_lr_mul)]
    for key, ours, theirs in pairs:
        if ours != theirs:
            raise ConfigError(f"distill.student.{key} is {ours} but the teacher's is {theirs}"
                              + (" (distill.mapping: teacher shares its mapping network)"
                                 if key.startswith("mapping") else ""))
    if dataset_resolution != student.resolution:
        raise ConfigError(f"distill.student.resolution is {student.resolution} but the dataset is "
                          f"{dataset_resolution}x{dataset_resolution}")


def build_student(config: DistillConfig, teacher: Generator) -> BlazeStyleGAN:
    """A fresh student whose mapping network starts as the teacher's (shared, frozen, when
    ``mapping`` is ``teacher``, and checked to be the same function; the average w only, when it
    is ``distilled``)."""
    student = BlazeStyleGAN(config.student)
    if config.mapping == "distilled":
        student.mapping.w_avg.copy_(teacher.mapping.w_avg)
        return student
    student.mapping.load_state_dict(teacher.mapping.state_dict())
    student.mapping.requires_grad_(False)
    device = teacher.mapping.w_avg.device
    z = torch.randn(4, config.student.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        if not torch.equal(copy.deepcopy(student.mapping).to(device)(z), teacher.mapping(z)):
            raise ConfigError("distill.student's mapping network does not reproduce the "
                              "teacher's w from the teacher's weights")
    return student


def mixed_ws(styles: StyleSample, config: StyleGAN2Config | BlazeStyleGANConfig) -> torch.Tensor:
    """ws of a step for the teacher or the student: the mixing w takes over from the drawn
    resolution on (``styles.cutoff`` is its log2, see :func:`sample_step_styles`)."""
    cutoff = None if styles.cutoff is None else config.ws_index(2 ** styles.cutoff)
    return styles.ws(config.num_ws, cutoff)


def sample_step_styles(teacher: Generator, batch: int, mixing_prob: float,
                       generator: torch.Generator, device: torch.device) -> StyleSample:
    """Latents of one step through the teacher's mapping: z (2N, z_dim), w and the mixing w2
    (N, w_dim each), and the log2 of the resolution (16..R) from which w2 takes over."""
    return sample_styles(teacher.mapping, batch, teacher.config.z_dim, mixing_prob,
                         range(4, teacher.config.log2_resolution + 1), generator, device)


@torch.no_grad()
def student_vs_teacher(student: BlazeStyleGAN, ws: torch.Tensor, teacher_images: torch.Tensor,
                       z: torch.Tensor | None = None) -> dict[str, float]:
    """PSNR (dB) and SSIM of every pyramid level of ``student`` against the teacher's images
    resized to that level, on fixed latents, images clamped to [-1, 1] as they are displayed:
    ``psnr_8`` ... ``psnr_R``, ``ssim_8`` ... ``ssim_R``, ``psnr`` and ``ssim`` (the final image,
    which is level R).

    With ``z`` (a distilled mapping network), also the final image made from the student's own
    w, ``psnr_own_mapping``, and the mean squared error of that w, ``w_mse``.
    """
    scores: dict[str, list[torch.Tensor]] = {}
    for ws_chunk, target in zip(ws.split(16), teacher_images.split(16)):
        _, pyramid = student.synthesis(ws_chunk)
        for image in pyramid:
            r = image.shape[-1]
            image, reference = image.clamp(-1, 1), losses.resize_to(target.clamp(-1, 1), r)
            scores.setdefault(f"psnr_{r}", []).append(psnr(image, reference))
            scores.setdefault(f"ssim_{r}", []).append(ssim_per_image(image, reference))
    if z is not None:
        w = student.mapping(z.to(ws.device))
        scores["w_mse"] = [(w - ws[:, 0]).pow(2).mean(1)]
        own = broadcast_ws(w, student.num_ws)
        scores["psnr_own_mapping"] = [
            psnr(student.synthesis(chunk)[0].clamp(-1, 1), target.clamp(-1, 1))
            for chunk, target in zip(own.split(16), teacher_images.split(16))]
    metrics = {name: float(torch.cat(values).mean()) for name, values in scores.items()}
    final = student.config.resolution
    metrics.update(psnr=metrics[f"psnr_{final}"], ssim=metrics[f"ssim_{final}"])
    return metrics


@torch.no_grad()
def side_by_side(teacher_images: torch.Tensor, student: BlazeStyleGAN,
                 ws: torch.Tensor) -> np.ndarray:
    """uint8 picture: the teacher's grid | the student's grid, same latents in the same places."""
    student_images = torch.cat([student.synthesis(chunk)[0] for chunk in ws.split(16)])
    left, right = make_grid(to_pixels(teacher_images)), make_grid(to_pixels(student_images))
    gap = np.full((left.shape[0], 6, 3), 255, dtype=np.uint8)
    return np.concatenate([left, gap, right], axis=1)


@torch.no_grad()
def teacher_targets(teacher: Generator, z: torch.Tensor, num_ws: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher images, student ws) for fixed latents ``z``: w = the teacher's mapping, no
    mixing."""
    w = teacher.mapping(z.to(device))
    images = torch.cat([teacher.synthesis(broadcast_ws(chunk, teacher.num_ws), "const")
                        for chunk in w.split(16)])
    return images, broadcast_ws(w, num_ws)


class TeacherProbe:
    """Fixed latents with the teacher's images on them: the student-vs-teacher evaluation
    (:func:`student_vs_teacher`) and the teacher | student sample grid of a run."""

    def __init__(self, config: DistillConfig, teacher: Generator, device: torch.device):
        num_ws = config.student.num_ws
        z_eval = fixed_latents(config.seed, config.eval_latents, config.student.z_dim, "eval")
        self.z_own = z_eval if config.mapping == "distilled" else None  # score the student's w
        self.eval_images, self.eval_ws = teacher_targets(teacher, z_eval, num_ws, device)
        z_samples = fixed_latents(config.seed, config.sample_grid, config.student.z_dim, "samples")
        self.sample_images, self.sample_ws = teacher_targets(teacher, z_samples, num_ws, device)

    def evaluate(self, student: BlazeStyleGAN) -> dict[str, float]:
        return student_vs_teacher(student, self.eval_ws, self.eval_images, self.z_own)

    def grid(self, student: BlazeStyleGAN) -> np.ndarray:
        return side_by_side(self.sample_images, student, self.sample_ws)


def student_loss(config: DistillConfig, student: BlazeStyleGAN, D: nn.Module,
                 styles: StyleSample, target: torch.Tensor, distance: nn.Module,
                 run: TrainingRun) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The student's loss of one step, the weighted sum of Eq. 4: perceptual distance and pixel
    L1 over the pyramid, the adversarial loss (and the w regression of a distilled mapping).
    ``student`` is anything with a BlazeStyleGAN's ``synthesis`` and ``mapping`` (the latency
    search's masked supernet too).

    Returns:
        (the loss, the student's final images, the logged values).
    """
    D.requires_grad_(False)
    with run.autocast:
        image, pyramid = student.synthesis(mixed_ws(styles, config.student))
        fake_logits = D(image).float()
    perceptual, l1 = losses.pyramid_losses([p.float() for p in pyramid], target, distance)
    g_adv = losses.g_nonsaturating_loss(fake_logits)
    g_loss = (config.lambda_perceptual * losses.level_mean(perceptual, config.final_level_weight)
              + config.lambda_l1 * losses.level_mean(l1, config.final_level_weight)
              + config.lambda_adv * g_adv)
    values = {"loss/g": g_loss.detach(), "loss/g_adv": g_adv.detach()}
    for level, p, d in zip(config.student.levels, perceptual, l1):
        values[f"loss/perceptual_{level}"], values[f"loss/l1_{level}"] = p.detach(), d.detach()
    if config.mapping == "distilled":
        w_student = student.mapping(styles.z[:run.local_batch])
        mapping_loss = losses.mapping_regression_loss(w_student.float(), styles.w)
        g_loss = g_loss + config.lambda_mapping * mapping_loss
        values["loss/mapping"] = mapping_loss.detach()
    return g_loss, image, values


def distill_step(config: DistillConfig, teacher: Generator, student: nn.Module, ema: nn.Module,
                 D: nn.Module, opt_D: torch.optim.Optimizer, real: torch.Tensor,
                 distance: nn.Module, run: TrainingRun, step: int, beta: float,
                 update: Callable[[torch.Tensor, int], dict]) -> dict:
    """One step of the distillation, shared by the distill stage and the latency search.

    Phase 1: the teacher's images of fresh styles, then the student's loss (Eq. 4,
    :func:`student_loss`), which ``update(loss, step)`` applies: it steps the student's
    optimiser (the search adds its latency term and steps its masks) and returns what it logs.
    Phase 2: the discriminator, real dataset images against the student's. Phase 3: lazy R1 on
    reals. Then the EMA of the student.

    Returns:
        the step's logged values.
    """
    with torch.no_grad():  # in float32: targets are not rounded to bfloat16
        styles = sample_step_styles(teacher, run.local_batch, config.style_mixing,
                                    run.generator(step, "draws"), run.device)
        target = teacher.synthesis(mixed_ws(styles, teacher.config), "const")
    g_loss, image, values = student_loss(config, student, D, styles, target, distance, run)
    values.update(update(g_loss, step))
    values.update(discriminator_step(D, opt_D, real, image, run.autocast, run.dist))
    if config.r1_gamma > 0 and step % config.r1_interval == 0:
        values["reg/r1"] = r1_step(D, opt_D, real, config.r1_gamma, config.r1_interval, run.dist)
    update_ema(ema, student, beta)
    return values


def distill(config: DistillConfig, *, teacher_path: str | Path, dataset_dir: str | Path,
            paths: RunPaths, device: str = "auto", vgg19_weights: str | Path | None = None,
            discriminator_path: str | Path | None = None) -> dict:
    """Distill a BlazeStyleGAN student from a teacher snapshot; write the student's EMA snapshot
    (and, to ``discriminator_path`` when given, the discriminator's: the stylizer's frozen
    feature network).

    Runs alone or as one process of ``torchrun``, like the teacher's training. Resumes from
    ``paths.state`` when it was made with the same config, teacher and dataset.

    Returns:
        ``{"perceptual_backbone", "mapping", "steps", "initial": {...}, "final": {...},
        "training": {...}}``: the EMA student's PSNR / SSIM per level against the teacher before
        training and at the end, and the last logged training values (losses, images/s).
    """
    run = TrainingRun(config, paths, device, STATE_KIND)
    teacher = load_teacher(teacher_path, run.device)
    dataset = FaceDataset(dataset_dir, xflip=config.xflip, in_memory="auto")
    check_compatible(config, teacher.config, dataset.resolution)
    with local_main_first(run.dist):  # one download per node, if any
        distance = perceptual_distance(config.perceptual, vgg19_weights,
                                       config.allow_download).to(run.device)
    # The teacher is identified by what it computes (its config and weights), not by its file's
    # bytes, which also hold metadata: a re-saved teacher does not make a state unresumable.
    identity = {"teacher": {"config": teacher.config.to_dict(),
                            "weights_sha256": module_digest(teacher)},
                "dataset_sha256": dataset.manifest_sha256}
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    student = build_student(config, teacher).to(run.device)
    D = Discriminator(teacher.config.model_copy(update=config.discriminator.to_dict()))
    D = D.to(run.device)
    student_ema = copy.deepcopy(student).eval().requires_grad_(False)
    opt_G = torch.optim.Adam([p for p in student.parameters() if p.requires_grad],
                             lr=config.g_lr, betas=tuple(config.g_betas), eps=1e-8)
    opt_D = lazy_adam(D.parameters(), config.d_lr, config.r1_interval, config.r1_gamma > 0)
    probe = TeacherProbe(config, teacher, run.device)
    state = run.resume(identity, {"student": student, "student_ema": student_ema, "D": D,
                                  "opt_G": opt_G, "opt_D": opt_D},
                       progress_keys=("loss/g", "loss/d", "eval/psnr", "images_per_second"))
    initial = state["initial"] if state is not None else probe.evaluate(student_ema)
    evaluation, beta = dict(initial), ema_beta(config.batch_size, config.ema_kimg)
    batches = run.real_batches(dataset)

    def update(g_loss: torch.Tensor, step: int) -> dict:
        optimizer_step(g_loss, student, opt_G, run.dist)
        return {}

    for step in run.steps():
        values = distill_step(config, teacher, student, student_ema, D, opt_D, next(batches),
                              distance, run, step, beta, update)
        run.record(step, values)
        evaluated = run.due(step, config.eval_every)
        if evaluated:
            evaluation = probe.evaluate(student_ema)
        run.report(step, state=lambda: {"initial": initial},
                   samples=lambda: probe.grid(student_ema),
                   log_extra={f"eval/{k}": v for k, v in evaluation.items()} if evaluated else None)

    if run.start_step == config.steps:  # nothing left to train: evaluate what the state holds
        evaluation = probe.evaluate(student_ema)
    run.finish(student_ema, STUDENT_KIND, config.student.to_dict(),
               samples=lambda: probe.grid(student_ema),
               meta={"steps": config.steps, "mapping": config.mapping,
                     "perceptual_backbone": config.perceptual,
                     "teacher_sha256": sha256_file(teacher_path), **identity})
    if discriminator_path is not None and run.dist.is_main:
        save_snapshot(discriminator_path, DISCRIMINATOR_KIND, D, D.config.to_dict(),
                      meta={"steps": config.steps, "student_sha256": sha256_file(paths.snapshot),
                            **identity})
    return {"perceptual_backbone": config.perceptual, "mapping": config.mapping,
            "steps": config.steps, "initial": initial, "final": evaluation,
            "training": run.last_metrics}
