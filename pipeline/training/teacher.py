"""StyleGAN2 teacher training: the ``train_teacher`` stage's library.

One step = four phases, as in StyleGAN2: D logistic loss, lazy R1 on reals (every
``r1_interval`` steps), G non-saturating loss, lazy path-length regularization (every
``pl_interval`` steps, when ``pl_weight`` > 0); then the EMA generator update. Adam uses
StyleGAN2's betas (0, 0.99) with the lazy-regularization correction of learning rate and betas.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
import pydantic
import torch

from pipeline.config import StageConfig
from pipeline.data.dataset import FaceDataset
from pipeline.errors import ConfigError
from pipeline.images import make_grid, save_png, to_uint8
from pipeline.io import write_text
from pipeline.models.stylegan2 import TEACHER_KIND, Discriminator, Generator, StyleGAN2Config
from pipeline.training import losses
from pipeline.training.adversarial import discriminator_step, r1_step
from pipeline.training.checkpoint import load_training_state, save_checkpoint, save_snapshot
from pipeline.training.monitor import Monitor, check_finite
from pipeline.training.runtime import (all_reduce_mean, average_buffers, broadcast_module,
                                       check_replicas_in_sync, ema_beta, fixed_latents,
                                       init_distributed, lazy_adam, local_batch_size,
                                       optimizer_step, rank_batch_indices, resolve_device_type,
                                       seed_step, select_device, step_generator, update_ema)

log = logging.getLogger(__name__)

STATE_KIND = "train_teacher-state"
PositiveInt = Annotated[int, pydantic.Field(ge=1)]
NonNegativeFloat = Annotated[float, pydantic.Field(ge=0)]


class TrainTeacherConfig(StageConfig):
    """The ``train_teacher`` section of params.yaml."""

    model: StyleGAN2Config
    seed: int
    batch_size: PositiveInt          # images per step over all processes
    steps: PositiveInt               # training steps (one D and one G update each)
    g_lr: Annotated[float, pydantic.Field(gt=0)]
    d_lr: Annotated[float, pydantic.Field(gt=0)]
    r1_gamma: NonNegativeFloat       # R1 weight; 0 disables R1
    r1_interval: PositiveInt         # lazy R1: every this many steps
    pl_weight: NonNegativeFloat      # path-length weight; 0 disables it (StyleGAN2 uses 2)
    pl_interval: PositiveInt         # lazy path-length: every this many steps
    style_mixing: Annotated[float, pydantic.Field(ge=0, le=1)]  # probability per batch
    ema_kimg: Annotated[float, pydantic.Field(gt=0)]  # EMA half-life in thousands of images
    xflip: bool                      # add mirrored copies of the dataset
    mixed_precision: bool            # bfloat16 autocast on CUDA (ignored on CPU)
    checkpoint_every: PositiveInt    # steps between training-state saves
    log_every: PositiveInt           # steps between logged (averaged) metrics
    sample_every: PositiveInt        # steps between sample grids from fixed latents
    sample_grid: PositiveInt         # images in a sample grid

    # Keys that may change between an interrupted run and its resumption.
    RESUMABLE_KEYS: ClassVar[frozenset[str]] = frozenset({
        "steps", "checkpoint_every", "log_every", "sample_every", "sample_grid", "mixed_precision"})

    def training_identity(self) -> dict:
        """The part of the config a training state must match to be resumed."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RESUMABLE_KEYS}


def sample_ws(G: Generator, batch: int, mixing_prob: float, generator: torch.Generator,
              device: torch.device, update_w_avg: bool = False) -> torch.Tensor:
    """Latents for one batch, with style mixing: ws (batch, num_ws, w_dim).

    With probability ``mixing_prob`` the layers from a random cutoff on take their w from a second
    latent, so the network cannot rely on adjacent styles being correlated.
    """
    z = torch.randn(2 * batch, G.config.z_dim, generator=generator).to(device)
    w = G.mapping(z, update_w_avg=update_w_avg).view(2, batch, -1)
    ws = w[0][:, None].repeat(1, G.num_ws, 1)
    if torch.rand((), generator=generator) < mixing_prob:
        cutoff = int(torch.randint(1, G.num_ws, (), generator=generator))
        ws[:, cutoff:] = w[1][:, None]
    return ws


@torch.no_grad()
def sample_grid(G: Generator, z: torch.Tensor, device: torch.device | str,
                psi: float = 1.0) -> np.ndarray:
    """uint8 grid of G's images for latents ``z`` (constant noise), computed 16 at a time."""
    images = torch.cat([G(chunk.to(device), psi=psi, noise_mode="const") for chunk in z.split(16)])
    return make_grid(to_uint8(images))


def preview_grid(G: Generator, count: int = 16, psi: float = 0.7, seed: int = 0) -> np.ndarray:
    """A grid of ``count`` truncated samples from seeded latents, on the CPU (e.g. after import)."""
    z = torch.randn(count, G.config.z_dim, generator=torch.Generator().manual_seed(seed))
    return sample_grid(G, z, "cpu", psi=psi)


def train_teacher(config: TrainTeacherConfig, dataset_dir: str | Path, snapshot_path: str | Path,
                  state_path: str | Path, live_dir: str | Path | None,
                  samples_path: str | Path | None, device: str = "auto",
                  config_json: str | None = None) -> dict:
    """Train (or resume training) the StyleGAN2 teacher; write its EMA generator snapshot.

    Runs alone or as one process of ``torchrun --nproc-per-node N``: every rank computes its share
    of the batch and gradients are averaged; rank 0 writes every file.

    ``config_json`` (the resolved config) is written as ``config.json`` beside the training state.

    Returns:
        The last logged metrics.
    """
    state_path = Path(state_path)
    config_json = config_json or json.dumps({"train_teacher": config.to_dict()}, indent=2) + "\n"
    dist = init_distributed(resolve_device_type(device))
    device = select_device(device, dist)
    local_batch = local_batch_size(config.batch_size, dist, "train_teacher.batch_size")

    dataset = FaceDataset(dataset_dir, xflip=config.xflip, in_memory="auto")
    if dataset.resolution != config.model.resolution:
        raise ConfigError(f"train_teacher.model.resolution is {config.model.resolution} but the "
                          f"dataset {dataset_dir} is {dataset.resolution}x{dataset.resolution}")
    dataset_sha256 = dataset.manifest_sha256

    torch.manual_seed(config.seed)  # identical initial weights on every rank
    G = Generator(config.model).to(device)
    D = Discriminator(config.model).to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)

    opt_G = lazy_adam(G.parameters(), config.g_lr, config.pl_interval, config.pl_weight > 0)
    opt_D = lazy_adam(D.parameters(), config.d_lr, config.r1_interval, config.r1_gamma > 0)

    start_step = 0
    mean_path_length = torch.zeros((), device=device)
    identity = {"config": config.training_identity(), "dataset_sha256": dataset_sha256}
    state = load_training_state(state_path, STATE_KIND, identity, config.steps,
                                "train_teacher.steps")
    if state is not None:
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        G_ema.load_state_dict(state["G_ema"])
        opt_G.load_state_dict(state["opt_G"])
        opt_D.load_state_dict(state["opt_D"])
        mean_path_length = state["mean_path_length"].to(device)
        start_step = state["step"]
    for module in (G, D, G_ema):
        broadcast_module(module, dist)

    beta = ema_beta(config.batch_size, config.ema_kimg)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if config.mixed_precision and device.type == "cuda" else contextlib.nullcontext())
    z_samples = fixed_latents(config.seed, config.sample_grid, config.model.z_dim, "samples")
    monitor = Monitor(live_dir, config.steps, start_step, config.batch_size, dist.is_main)
    last_good = f"Last good training state: {state_path}" if state_path.exists() else "No training state was saved yet."

    def save_state(step: int) -> None:
        check_replicas_in_sync({"G": G, "D": D, "G_ema": G_ema}, dist)
        if dist.is_main:
            write_text(state_path.with_name("config.json"), config_json)
            save_checkpoint(state_path, {
                "kind": STATE_KIND, "step": step, "identity": identity, "G": G.state_dict(), "D": D.state_dict(),
                "G_ema": G_ema.state_dict(), "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(),
                "mean_path_length": mean_path_length.cpu(),
            })

    metrics: dict = {}
    for step in range(start_step, config.steps):
        seed_step(config.seed, step, dist.rank)  # noise inputs inside G
        draws = step_generator(config.seed, step, dist.rank, "draws")
        local_index = rank_batch_indices(config.seed, step, len(dataset), config.batch_size, dist)
        real = torch.stack([dataset[i] for i in local_index]).to(device)
        values = {}

        # Phase 1: discriminator, logistic loss on reals and fakes.
        G.requires_grad_(False)
        with torch.no_grad(), autocast:
            fake = G.synthesis(sample_ws(G, local_batch, config.style_mixing, draws, device))
        values.update(discriminator_step(D, opt_D, real, fake, autocast, dist))

        # Phase 2: lazy R1 on reals.
        if config.r1_gamma > 0 and step % config.r1_interval == 0:
            values["reg/r1"] = r1_step(D, opt_D, real, config.r1_gamma, config.r1_interval, dist)

        # Phase 3: generator, non-saturating loss.
        G.requires_grad_(True)
        D.requires_grad_(False)
        with autocast:
            ws = sample_ws(G, local_batch, config.style_mixing, draws, device, update_w_avg=True)
            g_loss = losses.g_nonsaturating_loss(D(G.synthesis(ws)).float())
        average_buffers(G.mapping, dist)  # the running mean of w, updated from each rank's batch
        optimizer_step(g_loss, G, opt_G, dist)
        values["loss/g"] = g_loss.detach()

        # Phase 4: lazy path-length regularization, on half a batch as in StyleGAN2.
        if config.pl_weight > 0 and step % config.pl_interval == 0:
            pl_batch = max(1, local_batch // 2)
            ws = sample_ws(G, pl_batch, config.style_mixing, draws, device).detach().requires_grad_(True)
            penalty, _, mean_path_length = losses.g_path_length_penalty(
                G.synthesis(ws), ws, mean_path_length)
            mean_path_length = all_reduce_mean(mean_path_length, dist)  # same on every rank
            optimizer_step(penalty * config.pl_weight * config.pl_interval, G, opt_G, dist)
            values["reg/path_length"] = penalty.detach()

        update_ema(G_ema, G, beta)
        check_finite(step, values, last_good, dist)
        monitor.accumulate(values)
        monitor.advance()

        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            metrics = monitor.log(done)
        if dist.is_main and (done % config.sample_every == 0 or done == config.steps):
            monitor.image("samples.png", sample_grid(G_ema, z_samples, device))
        if done % config.checkpoint_every == 0 or done == config.steps:
            save_state(done)
            last_good = f"Last good training state: {state_path} (step {done})."

    monitor.close()
    if dist.is_main:
        save_snapshot(snapshot_path, TEACHER_KIND, G_ema, config.model.to_dict(),
                      meta={"steps": config.steps, "images_seen": config.steps * config.batch_size,
                            "dataset_sha256": dataset_sha256, "train_config": config.to_dict()})
        if samples_path is not None:
            save_png(samples_path, sample_grid(G_ema, z_samples, device))
    return metrics
