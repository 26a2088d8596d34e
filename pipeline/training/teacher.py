"""The StyleGAN2 teacher, the ``teacher`` stage's library: trained here (the ``train_teacher``
section), or imported from a pretrained checkpoint (``teacher.source``).

Training: one step = four phases, as in StyleGAN2: D logistic loss, lazy R1 on reals (every
``r1_interval`` steps), G non-saturating loss, lazy path-length regularization (every
``pl_interval`` steps, when ``pl_weight`` > 0); then the EMA generator update. Adam uses
StyleGAN2's betas (0, 0.99) with the lazy-regularization correction of learning rate and betas.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
import pydantic
import torch
from torch import nn

from pipeline.config import NonNegativeFloat, PositiveInt, StageConfig
from pipeline.data.dataset import FaceDataset
from pipeline.errors import ConfigError
from pipeline.images import make_grid, save_png, to_pixels
from pipeline.io import sha256_file
from pipeline.models.convert import CheckpointImportError, load_nvlabs, load_rosinality
from pipeline.models.stylegan2 import TEACHER_KIND, Discriminator, Generator, StyleGAN2Config
from pipeline.models.styles import sample_styles
from pipeline.seeding import fixed_latents, seed_step
from pipeline.snapshot import save_snapshot
from pipeline.training import losses
from pipeline.training.adversarial import (
    AdversarialConfig,
    discriminator_step,
    r1_step,
)
from pipeline.training.run import RunPaths, TrainingRun
from pipeline.training.runtime import (
    all_reduce_mean,
    average_buffers,
    ema_beta,
    lazy_adam,
    optimizer_step,
    update_ema,
)

log = logging.getLogger(__name__)

STATE_KIND = "train_teacher-state"
# Checkpoint formats by file suffix: rosinality/stylegan2-pytorch saves .pt, NVlabs .pkl.
PRETRAINED_FORMATS = {".pt": "rosinality", ".pth": "rosinality", ".pkl": "nvlabs"}


class TeacherConfig(StageConfig):
    """The ``teacher`` section of params.yaml: where the teacher comes from."""

    SECTION: ClassVar[str] = "teacher"

    source: str  # "train" (the train_teacher section), or a checkpoint under the pretrained folder
    mapping_lr_mul: Annotated[float, pydantic.Field(gt=0)] | None  # rosinality: its --lr_mlp

    @property
    def trains(self) -> bool:
        return self.source == "train"


def pretrained_checkpoint(source: str, folder: str | Path) -> tuple[Path, str]:
    """The checkpoint file ``teacher.source`` names under ``folder`` (the pretrained folder the
    stage depends on, so that DVC tracks it) and its format, checked."""
    folder = Path(folder)
    relative = Path(os.path.normpath(source))  # lexically: a DVC-linked file may be a symlink
    path = folder / relative
    if relative.is_absolute() or relative.parts[:1] == ("..",):
        raise ConfigError(f"teacher.source is {source!r}: name a file under {folder} (the folder "
                          "the teacher stage depends on), or 'train'")
    checkpoint_format = PRETRAINED_FORMATS.get(path.suffix.lower())
    if checkpoint_format is None:
        raise ConfigError(f"teacher.source is {source!r}: expected 'train', a rosinality .pt / "
                          ".pth or an NVlabs .pkl file")
    if not path.is_file():
        raise ConfigError(f"teacher.source is {source!r} but {path} is not a file: put the "
                          f"checkpoint there and track it (dvc add {path})")
    return path, checkpoint_format


def import_teacher(config: TeacherConfig, *, pretrained_dir: str | Path,
                   dataset_dir: str | Path, snapshot: str | Path,
                   samples: str | Path | None = None) -> dict:
    """Convert the pretrained generator ``config.source`` names into a teacher snapshot (the
    same kind ``train_teacher`` writes), refusing one whose resolution is not the dataset's.

    Returns:
        What was imported: file, format, sha256 and the generator's configuration.
    """
    path, checkpoint_format = pretrained_checkpoint(config.source, pretrained_dir)
    try:
        G = (load_rosinality(path, config.mapping_lr_mul) if checkpoint_format == "rosinality"
             else load_nvlabs(path))
    except CheckpointImportError as e:  # named as the params key that chose the file
        raise ConfigError(f"teacher.source {config.source!r}: {e}") from None
    resolution = FaceDataset(dataset_dir).resolution
    if G.config.resolution != resolution:
        raise ConfigError(f"teacher.source {path} is a {G.config.resolution} px generator but the "
                          f"dataset {dataset_dir} is {resolution} px: set prepare.resolution="
                          f"{G.config.resolution} (and the distill.student preset to match)")
    digest = sha256_file(path)
    log.info("imported %s (%s): %s", path, checkpoint_format, G.config.to_dict())
    save_snapshot(snapshot, TEACHER_KIND, G, G.config.to_dict(), meta={
        "imported_from": config.source, "format": checkpoint_format, "source_sha256": digest})
    if samples is not None:
        save_png(samples, preview_grid(G))
    return {"source": config.source, "format": checkpoint_format, "source_sha256": digest,
            "model": G.config.to_dict(),
            "parameters": sum(p.numel() for p in G.parameters())}


class TrainTeacherConfig(AdversarialConfig):
    """The ``train_teacher`` section of params.yaml."""

    SECTION: ClassVar[str] = "train_teacher"

    model: StyleGAN2Config
    pl_weight: NonNegativeFloat      # path-length weight; 0 disables it (StyleGAN2 uses 2)
    pl_interval: PositiveInt         # lazy path-length: every this many steps


def sample_ws(G: Generator, batch: int, mixing_prob: float, generator: torch.Generator,
              device: torch.device, update_w_avg: bool = False) -> torch.Tensor:
    """Latents for one batch, with style mixing at any layer (StyleGAN2's): ws (batch, num_ws,
    w_dim). See :func:`pipeline.models.styles.sample_styles`."""
    styles = sample_styles(G.mapping, batch, G.config.z_dim, mixing_prob, range(1, G.num_ws),
                           generator, device, update_w_avg)
    return styles.ws(G.num_ws, styles.cutoff)


@torch.no_grad()
def sample_grid(G: Generator, z: torch.Tensor, device: torch.device | str,
                psi: float = 1.0) -> np.ndarray:
    """uint8 grid of G's images for latents ``z`` (constant noise), computed 16 at a time."""
    images = torch.cat([G(chunk.to(device), psi=psi, noise_mode="const") for chunk in z.split(16)])
    return make_grid(to_pixels(images))


def preview_grid(G: Generator, count: int = 16, psi: float = 0.7, seed: int = 0) -> np.ndarray:
    """A grid of ``count`` truncated samples from seeded latents, on the CPU (e.g. after import)."""
    z = torch.randn(count, G.config.z_dim, generator=torch.Generator().manual_seed(seed))
    return sample_grid(G, z, "cpu", psi=psi)


def generator_step(G: Generator, D: nn.Module, opt_G: torch.optim.Optimizer, run: TrainingRun,
                   draws: torch.Generator) -> torch.Tensor:
    """One update of G (mapping included) with the non-saturating loss on fresh latents, which
    also update the running mean of w; returns the loss."""
    G.requires_grad_(True)
    D.requires_grad_(False)
    with run.autocast:
        ws = sample_ws(G, run.local_batch, run.config.style_mixing, draws, run.device,
                       update_w_avg=True)
        g_loss = losses.g_nonsaturating_loss(D(G.synthesis(ws)).float())
    average_buffers(G.mapping, run.dist)  # the running mean of w, updated from each rank's batch
    optimizer_step(g_loss, G, opt_G, run.dist)
    return g_loss.detach()


def path_length_step(G: Generator, opt_G: torch.optim.Optimizer, run: TrainingRun,
                     draws: torch.Generator,
                     mean_path_length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One lazy path-length update of G on half a batch, as in StyleGAN2; returns (penalty,
    updated running mean of the path lengths)."""
    config = run.config
    ws = sample_ws(G, max(1, run.local_batch // 2), config.style_mixing, draws, run.device)
    ws = ws.detach().requires_grad_(True)
    penalty, _, mean_path_length = losses.g_path_length_penalty(G.synthesis(ws), ws,
                                                                mean_path_length)
    mean_path_length = all_reduce_mean(mean_path_length, run.dist)  # the same on every rank
    optimizer_step(penalty * config.pl_weight * config.pl_interval, G, opt_G, run.dist)
    return penalty.detach(), mean_path_length


def train_teacher(config: TrainTeacherConfig, *, dataset_dir: str | Path, paths: RunPaths,
                  device: str = "auto") -> dict:
    """Train (or resume training) the StyleGAN2 teacher; write its EMA generator snapshot.

    Runs alone or as one process of ``torchrun --nproc-per-node N`` (``pipeline.training.run``).

    Returns:
        The last logged metrics.
    """
    run = TrainingRun(config, paths, device, STATE_KIND)
    dataset = FaceDataset(dataset_dir, xflip=config.xflip, in_memory="auto")
    if dataset.resolution != config.model.resolution:
        raise ConfigError(f"train_teacher.model.resolution is {config.model.resolution} but the "
                          f"dataset {dataset_dir} is {dataset.resolution}x{dataset.resolution}")
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    G = Generator(config.model).to(run.device)
    D = Discriminator(config.model).to(run.device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_G = lazy_adam(G.parameters(), config.g_lr, config.pl_interval, config.pl_weight > 0)
    opt_D = lazy_adam(D.parameters(), config.d_lr, config.r1_interval, config.r1_gamma > 0)
    state = run.resume({"dataset_sha256": dataset.manifest_sha256},
                       {"G": G, "D": D, "G_ema": G_ema, "opt_G": opt_G, "opt_D": opt_D})
    mean_path_length = (state["mean_path_length"] if state else torch.zeros(())).to(run.device)
    beta = ema_beta(config.batch_size, config.ema_kimg)
    z_samples = fixed_latents(config.seed, config.sample_grid, config.model.z_dim, "samples")

    def samples() -> np.ndarray:
        return sample_grid(G_ema, z_samples, run.device)

    batches = run.real_batches(dataset)

    for step in run.steps():
        seed_step(config.seed, step, run.dist.rank)  # noise inputs inside G
        draws = run.generator(step, "draws")
        real = next(batches)

        # Phase 1: discriminator, logistic loss on reals and fakes.
        G.requires_grad_(False)
        with torch.no_grad(), run.autocast:
            fake = G.synthesis(sample_ws(G, run.local_batch, config.style_mixing, draws,
                                         run.device))
        values = discriminator_step(D, opt_D, real, fake, run.autocast, run.dist)
        # Phase 2: lazy R1 on reals.
        if config.r1_gamma > 0 and step % config.r1_interval == 0:
            values["reg/r1"] = r1_step(D, opt_D, real, config.r1_gamma, config.r1_interval,
                                       run.dist)
        # Phase 3: generator, non-saturating loss.
        values["loss/g"] = generator_step(G, D, opt_G, run, draws)
        # Phase 4: lazy path-length regularization.
        if config.pl_weight > 0 and step % config.pl_interval == 0:
            values["reg/path_length"], mean_path_length = path_length_step(
                G, opt_G, run, draws, mean_path_length)

        update_ema(G_ema, G, beta)
        run.record(step, values)
        run.report(step, state=lambda: {"mean_path_length": mean_path_length.cpu()},
                   samples=samples)

    run.finish(G_ema, TEACHER_KIND, config.model.to_dict(), samples=samples, meta={
        "steps": config.steps, "images_seen": config.steps * config.batch_size,
        "dataset_sha256": dataset.manifest_sha256})
    return run.last_metrics


def trained_summary(config: TrainTeacherConfig, metrics: dict[str, float]) -> dict:
    """What ``metrics/teacher.json`` records of a teacher trained here (``metrics``: the last
    logged values), alike in shape to :func:`import_teacher`'s record."""
    return {"source": "train", "model": config.model.to_dict(),
            "parameters": sum(p.numel() for p in Generator(config.model).parameters()),
            "steps": config.steps, "images_seen": config.steps * config.batch_size,
            "final": metrics}
