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

Checkpoints, resumption, torchrun, dvclive logging and the NaN guard are the teacher's machinery
(``pipeline.training.runtime``, ``checkpoint``, ``monitor``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
import pydantic
import torch

from pipeline.config import StageConfig
from pipeline.data.dataset import FaceDataset
from pipeline.errors import ConfigError
from pipeline.images import make_grid, save_png, to_uint8
from pipeline.io import sha256_file, write_text
from pipeline.metrics.similarity import psnr, ssim_per_image
from pipeline.models.blazestylegan import STUDENT_KIND, BlazeStyleGAN, BlazeStyleGANConfig
from pipeline.models.stylegan2 import Discriminator, Generator, StyleGAN2Config, load_teacher
from pipeline.training import losses
from pipeline.training.adversarial import discriminator_step, r1_step
from pipeline.training.checkpoint import load_training_state, save_checkpoint, save_snapshot
from pipeline.training.monitor import Monitor, check_finite
from pipeline.training.perceptual import perceptual_distance
from pipeline.training.runtime import (broadcast_module, check_replicas_in_sync, ema_beta,
                                       fixed_latents, init_distributed, lazy_adam,
                                       local_batch_size, local_main_first, optimizer_step,
                                       rank_batch_indices, resolve_device_type, select_device,
                                       step_generator, update_ema)

log = logging.getLogger(__name__)

STATE_KIND = "distill-state"
PositiveInt = Annotated[int, pydantic.Field(ge=1)]
NonNegativeFloat = Annotated[float, pydantic.Field(ge=0)]


class DiscriminatorWidths(StageConfig):
    """Channel widths of the distillation discriminator (StyleGAN2's, at the student resolution)."""

    channel_base: PositiveInt   # channels at resolution r: min(channel_base / r, channel_max)
    channel_max: PositiveInt


class DistillConfig(StageConfig):
    """The ``distill`` section of params.yaml."""

    student: BlazeStyleGANConfig
    mapping: Literal["teacher", "distilled"]  # frozen teacher copy, or a trained (smaller) one
    discriminator: DiscriminatorWidths
    perceptual: Literal["vgg19-imagenet", "multiscale-l1-ssim"]  # distance of Eq. 1
    allow_download: bool          # fetch missing VGG19 weights (checked) when online
    seed: int
    batch_size: PositiveInt       # images per step over all processes
    steps: PositiveInt
    g_lr: Annotated[float, pydantic.Field(gt=0)]
    d_lr: Annotated[float, pydantic.Field(gt=0)]
    lambda_perceptual: NonNegativeFloat  # weights of Eq. 4
    lambda_l1: NonNegativeFloat
    lambda_adv: NonNegativeFloat
    lambda_mapping: NonNegativeFloat     # w regression of a distilled mapping (unused otherwise)
    r1_gamma: NonNegativeFloat
    r1_interval: PositiveInt
    style_mixing: Annotated[float, pydantic.Field(ge=0, le=1)]
    ema_kimg: Annotated[float, pydantic.Field(gt=0)]
    xflip: bool
    mixed_precision: bool         # bfloat16 autocast on CUDA (ignored on CPU)
    checkpoint_every: PositiveInt
    log_every: PositiveInt
    eval_every: PositiveInt       # steps between student-vs-teacher PSNR / SSIM
    eval_latents: PositiveInt     # fixed latents of that evaluation
    sample_every: PositiveInt
    sample_grid: PositiveInt      # latents in the teacher | student grid

    RESUMABLE_KEYS: ClassVar[frozenset[str]] = frozenset({
        "steps", "checkpoint_every", "log_every", "eval_every", "sample_every",
        "sample_grid", "mixed_precision", "allow_download"})
    # Not eval_latents: the initial evaluation kept in the state was made on those latents.

    def training_identity(self) -> dict:
        """The part of the config a training state must match to be resumed."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RESUMABLE_KEYS}


def check_compatible(config: DistillConfig, teacher: StyleGAN2Config, dataset_resolution: int) -> None:
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
    ``mapping`` is ``teacher``; the average w only, when it is ``distilled``)."""
    student = BlazeStyleGAN(config.student)
    if config.mapping == "teacher":
        student.mapping.load_state_dict(teacher.mapping.state_dict())
        student.mapping.requires_grad_(False)
    else:
        student.mapping.w_avg.copy_(teacher.mapping.w_avg)
    return student


def mix_styles(w: torch.Tensor, w2: torch.Tensor, num_ws: int, cutoff: int | None) -> torch.Tensor:
    """ws (N, num_ws, w_dim): ``w`` for the layers before index ``cutoff``, ``w2`` from it on."""
    ws = w[:, None].repeat(1, num_ws, 1)
    if cutoff is not None:
        ws[:, cutoff:] = w2[:, None]
    return ws


def sample_styles(teacher: Generator, batch: int, mixing_prob: float, generator: torch.Generator,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int | None]:
    """Latents of one step: z (2N, z_dim), teacher w and mixing w (N, w_dim) each, and the
    resolution (16..R) from which the mixing w takes over (None: no mixing this step)."""
    z = torch.randn(2 * batch, teacher.config.z_dim, generator=generator).to(device)
    w, w2 = teacher.mapping(z).view(2, batch, -1)
    cutoff = None
    if torch.rand((), generator=generator) < mixing_prob:
        cutoff = 2 ** int(torch.randint(4, teacher.config.log2_resolution + 1, (), generator=generator))
    return z, w, w2, cutoff


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
        own = mix_styles(w, w, student.num_ws, None)
        scores["psnr_own_mapping"] = [
            psnr(student.synthesis(chunk)[0].clamp(-1, 1), target.clamp(-1, 1))
            for chunk, target in zip(own.split(16), teacher_images.split(16))]
    metrics = {name: float(torch.cat(values).mean()) for name, values in scores.items()}
    final = student.config.resolution
    metrics.update(psnr=metrics[f"psnr_{final}"], ssim=metrics[f"ssim_{final}"])
    return metrics


@torch.no_grad()
def side_by_side(teacher_images: torch.Tensor, student: BlazeStyleGAN, ws: torch.Tensor) -> np.ndarray:
    """uint8 picture: the teacher's grid | the student's grid, same latents in the same places."""
    student_images = torch.cat([student.synthesis(chunk)[0] for chunk in ws.split(16)])
    left, right = make_grid(to_uint8(teacher_images)), make_grid(to_uint8(student_images))
    gap = np.full((left.shape[0], 6, 3), 255, dtype=np.uint8)
    return np.concatenate([left, gap, right], axis=1)


@torch.no_grad()
def teacher_targets(teacher: Generator, z: torch.Tensor, num_ws: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher images, student ws) for fixed latents ``z``: w = the teacher's mapping, no mixing."""
    w = teacher.mapping(z.to(device))
    images = torch.cat([teacher.synthesis(mix_styles(chunk, chunk, teacher.num_ws, None), "const")
                        for chunk in w.split(16)])
    return images, mix_styles(w, w, num_ws, None)


def distill(config: DistillConfig, teacher_path: str | Path, dataset_dir: str | Path,
            snapshot_path: str | Path, state_path: str | Path, live_dir: str | Path | None,
            samples_path: str | Path | None, device: str = "auto", config_json: str | None = None,
            vgg19_weights: str | Path | None = None) -> dict:
    """Distill a BlazeStyleGAN student from a teacher snapshot; write the student's EMA snapshot.

    Runs alone or as one process of ``torchrun``, like the teacher's training. Resumes from
    ``state_path`` when it was made with the same config, teacher and dataset.

    Returns:
        ``{"perceptual_backbone", "mapping", "steps", "initial": {...}, "final": {...}}``: the EMA
        student's PSNR / SSIM per level against the teacher before training and at the end.
    """
    state_path = Path(state_path)
    config_json = config_json or json.dumps({"distill": config.to_dict()}, indent=2) + "\n"
    dist = init_distributed(resolve_device_type(device))
    device = select_device(device, dist)
    local_batch = local_batch_size(config.batch_size, dist, "distill.batch_size")

    teacher = load_teacher(teacher_path, device)
    dataset = FaceDataset(dataset_dir, xflip=config.xflip, in_memory="auto")
    check_compatible(config, teacher.config, dataset.resolution)
    with local_main_first(dist):  # one download per node, if any
        distance = perceptual_distance(config.perceptual, vgg19_weights,
                                       config.allow_download).to(device)
    identity = {"config": config.training_identity(), "teacher_sha256": sha256_file(teacher_path),
                "dataset_sha256": dataset.manifest_sha256}

    torch.manual_seed(config.seed)  # identical initial weights on every rank
    student = build_student(config, teacher).to(device)
    if config.mapping == "teacher":  # the shared mapping must be the teacher's function exactly
        z = torch.randn(4, config.student.z_dim, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            if not torch.equal(student.mapping(z.to(device)), teacher.mapping(z.to(device))):
                raise ConfigError("distill.student's mapping network does not reproduce the "
                                  "teacher's w from the teacher's weights")
    D = Discriminator(teacher.config.model_copy(update=config.discriminator.to_dict())).to(device)
    student_ema = copy.deepcopy(student).eval().requires_grad_(False)
    trainable = [p for p in student.parameters() if p.requires_grad]
    opt_G = lazy_adam(trainable, config.g_lr, 1, regularized=False)
    opt_D = lazy_adam(D.parameters(), config.d_lr, config.r1_interval, config.r1_gamma > 0)

    z_eval = fixed_latents(config.seed, config.eval_latents, config.student.z_dim, "eval")
    z_own = z_eval if config.mapping == "distilled" else None  # also score the student's own w
    eval_images, eval_ws = teacher_targets(teacher, z_eval, student.num_ws, device)
    z_samples = fixed_latents(config.seed, config.sample_grid, config.student.z_dim, "samples")
    sample_images, sample_ws = teacher_targets(teacher, z_samples, student.num_ws, device)

    start_step, initial = 0, None
    state = load_training_state(state_path, STATE_KIND, identity, config.steps, "distill.steps")
    if state is not None:
        student.load_state_dict(state["student"])
        student_ema.load_state_dict(state["student_ema"])
        D.load_state_dict(state["D"])
        opt_G.load_state_dict(state["opt_G"])
        opt_D.load_state_dict(state["opt_D"])
        start_step, initial = state["step"], state["initial"]
    for module in (student, student_ema, D):
        broadcast_module(module, dist)
    if initial is None:
        initial = student_vs_teacher(student_ema, eval_ws, eval_images, z_own)

    beta = ema_beta(config.batch_size, config.ema_kimg)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if config.mixed_precision and device.type == "cuda" else contextlib.nullcontext())
    monitor = Monitor(live_dir, config.steps, start_step, config.batch_size, dist.is_main,
                      progress_keys=("loss/g", "loss/d", "eval/psnr", "images_per_second"))
    last_good = f"Last good training state: {state_path}" if state_path.exists() else "No training state was saved yet."

    def save_state(step: int) -> None:
        check_replicas_in_sync({"student": student, "student_ema": student_ema, "D": D}, dist)
        if dist.is_main:
            write_text(state_path.with_name("config.json"), config_json)
            save_checkpoint(state_path, {
                "kind": STATE_KIND, "step": step, "identity": identity, "initial": initial,
                "student": student.state_dict(), "student_ema": student_ema.state_dict(),
                "D": D.state_dict(), "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict()})

    evaluation = dict(initial)
    for step in range(start_step, config.steps):
        draws = step_generator(config.seed, step, dist.rank, "draws")
        local_index = rank_batch_indices(config.seed, step, len(dataset), config.batch_size, dist)
        real = torch.stack([dataset[i] for i in local_index]).to(device)
        with torch.no_grad():  # in float32: targets are not rounded to bfloat16
            z, w, w2, cutoff = sample_styles(teacher, local_batch, config.style_mixing, draws, device)
            t_cut, s_cut = ((teacher.config.ws_index(cutoff), config.student.ws_index(cutoff))
                            if cutoff else (None, None))
            target = teacher.synthesis(mix_styles(w, w2, teacher.num_ws, t_cut), "const")
        ws = mix_styles(w, w2, student.num_ws, s_cut)

        # Phase 1: student, Eq. 4 = perceptual + pixel L1 over the pyramid + adversarial (+ mapping).
        D.requires_grad_(False)
        with autocast:
            image, pyramid = student.synthesis(ws)
            fake_logits = D(image).float()
        perceptual, l1 = losses.pyramid_losses([p.float() for p in pyramid], target, distance)
        g_adv = losses.g_nonsaturating_loss(fake_logits)
        g_loss = (config.lambda_perceptual * torch.stack(perceptual).mean()
                  + config.lambda_l1 * torch.stack(l1).mean() + config.lambda_adv * g_adv)
        values = {"loss/g": g_loss.detach(), "loss/g_adv": g_adv.detach()}
        for level, p, d in zip(config.student.levels, perceptual, l1):
            values[f"loss/perceptual_{level}"], values[f"loss/l1_{level}"] = p.detach(), d.detach()
        if config.mapping == "distilled":
            w_student = student.mapping(z[:local_batch])
            mapping_loss = losses.mapping_regression_loss(w_student.float(), w)
            g_loss = g_loss + config.lambda_mapping * mapping_loss
            values["loss/mapping"] = mapping_loss.detach()
        optimizer_step(g_loss, student, opt_G, dist)

        # Phase 2: discriminator, real dataset images against the student's.
        values.update(discriminator_step(D, opt_D, real, image, autocast, dist))

        # Phase 3: lazy R1 on reals.
        if config.r1_gamma > 0 and step % config.r1_interval == 0:
            values["reg/r1"] = r1_step(D, opt_D, real, config.r1_gamma, config.r1_interval, dist)

        update_ema(student_ema, student, beta)
        check_finite(step, values, last_good, dist)
        monitor.accumulate(values)
        monitor.advance()

        done = step + 1
        final = done == config.steps
        if done % config.eval_every == 0 or final:
            evaluation = student_vs_teacher(student_ema, eval_ws, eval_images, z_own)
        if done % config.log_every == 0 or done % config.eval_every == 0 or final:
            monitor.log(done, extra={f"eval/{k}": v for k, v in evaluation.items()}
                        if done % config.eval_every == 0 or final else None)
        if dist.is_main and (done % config.sample_every == 0 or final):
            monitor.image("samples.png", side_by_side(sample_images, student_ema, sample_ws))
        if done % config.checkpoint_every == 0 or final:
            save_state(done)
            last_good = f"Last good training state: {state_path} (step {done})."

    monitor.close()
    if start_step == config.steps:  # nothing left to train: evaluate what the state holds
        evaluation = student_vs_teacher(student_ema, eval_ws, eval_images, z_own)
    if dist.is_main:
        save_snapshot(snapshot_path, STUDENT_KIND, student_ema, config.student.to_dict(),
                      meta={"steps": config.steps, "mapping": config.mapping,
                            "perceptual_backbone": config.perceptual,
                            "teacher_sha256": identity["teacher_sha256"],
                            "dataset_sha256": identity["dataset_sha256"],
                            "train_config": config.to_dict()})
        if samples_path is not None:
            save_png(samples_path, side_by_side(sample_images, student_ema, sample_ws))
    return {"perceptual_backbone": config.perceptual, "mapping": config.mapping,
            "steps": config.steps, "initial": initial, "final": evaluation}
