"""Training runtime shared by every trainer: devices, torchrun processes, gradient and buffer
averaging, EMA. Per-step random streams are ``pipeline.seeding``'s."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn

from pipeline.errors import ConfigError, PipelineError
from pipeline.seeding import step_generator


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (a single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def is_main_process() -> bool:
    """True unless this is a torchrun process of rank > 0 (which must not write outputs)."""
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed(device_type: str) -> Distributed:
    """Join the torchrun job described by the environment, if any (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    if not torch_dist.is_initialized():
        # On CUDA, NCCL for tensors on the GPU and gloo for the small CPU ones (the NaN guard's
        # values, weight digests): a NCCL-only group cannot reduce CPU tensors.
        torch_dist.init_process_group("cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo")
    return Distributed(rank=torch_dist.get_rank(), world_size=torch_dist.get_world_size(),
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device_type(requested: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without CUDA is a user error."""
    if requested not in ("auto", "cpu", "cuda"):
        raise PipelineError(f"--device must be auto, cpu or cuda, got {requested!r}")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise PipelineError("--device cuda, but PyTorch sees no CUDA device")
    return requested


def select_device(requested: str, dist: Distributed) -> torch.device:
    """``auto`` picks CUDA when available (one GPU per local rank), else the CPU."""
    if resolve_device_type(requested) == "cuda":
        if dist.local_rank >= torch.cuda.device_count():
            raise PipelineError(f"local rank {dist.local_rank} has no GPU: only "
                                f"{torch.cuda.device_count()} visible; "
                                "start fewer processes per node")
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def local_batch_size(batch_size: int, dist: Distributed, key: str) -> int:
    """This process's share of a global batch, checked: the batch must split evenly across ranks,
    and each share must suit the discriminator's minibatch-stddev groups (below 4, or a
    multiple)."""
    if batch_size % dist.world_size:
        raise ConfigError(f"{key} ({batch_size}) must be a multiple of the number of processes "
                            f"({dist.world_size})")
    local = batch_size // dist.world_size
    if local % min(4, local):
        raise ConfigError(f"{key} per process ({local}) must be below 4 or a multiple of 4 "
                            "(the discriminator's minibatch-stddev groups)")
    return local


def lazy_adam(params, lr: float, interval: int, regularized: bool) -> torch.optim.Adam:
    """Adam with StyleGAN2's betas (0, 0.99). A regularizer applied lazily every ``interval``
    steps adds an optimizer step each time, so lr and betas are corrected by k / (k + 1)."""
    ratio = interval / (interval + 1) if regularized else 1.0
    return torch.optim.Adam(params, lr=lr * ratio, betas=(0.0, 0.99 ** ratio), eps=1e-8)


@contextlib.contextmanager
def local_main_first(dist: Distributed) -> Iterator[None]:
    """Run the body on local rank 0 first, then on the other ranks of the node: for work that
    fills a shared cache (e.g. a weights download) that concurrent processes would race on."""
    if dist.enabled and dist.local_rank != 0:
        torch_dist.barrier()
    yield
    if dist.enabled and dist.local_rank == 0:
        torch_dist.barrier()


def all_reduce_mean(tensor: torch.Tensor, dist: Distributed) -> torch.Tensor:
    """The mean of ``tensor`` over all ranks (a new tensor; unchanged on a single process)."""
    if not dist.enabled:
        return tensor
    tensor = tensor.clone()
    torch_dist.all_reduce(tensor)
    return tensor / dist.world_size


def rank_batch_indices(seed: int, step: int, population: int, batch_size: int,
                       dist: Distributed) -> list[int]:
    """This rank's share of the step's batch of dataset indices (drawn with replacement).

    The whole batch is drawn from one stream shared by every rank and then split, so the images a
    step sees do not depend on the number of processes.
    """
    indices = torch.randint(population, (batch_size,),
                            generator=step_generator(seed, step, 0, "data")).tolist()
    local = batch_size // dist.world_size
    return indices[dist.rank * local:(dist.rank + 1) * local]


def average_gradients(module: nn.Module, dist: Distributed) -> None:
    """All-reduce the gradients of ``module`` across ranks (mean), as one flat buffer.

    Done by hand rather than with DistributedDataParallel because the lazy regularizers take
    gradients of gradients, which DDP's hooks do not support.
    """
    if not dist.enabled:
        return
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    torch_dist.all_reduce(flat)
    flat /= dist.world_size
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
        offset += p.numel()


def optimizer_step(loss: torch.Tensor, module: nn.Module, optimizer: torch.optim.Optimizer,
                   dist: Distributed) -> None:
    """Backpropagate ``loss`` into ``module``, average its gradients across ranks, step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(module, dist)
    optimizer.step()


def average_buffers(module: nn.Module, dist: Distributed) -> None:
    """All-reduce (mean) the floating-point buffers of ``module``, e.g. a running average of w.

    Averaging each rank's update of a running mean gives exactly the update a single process would
    make from the whole batch, so the replicas stay identical.
    """
    if dist.enabled:
        for buffer in module.buffers():
            if buffer.is_floating_point():
                torch_dist.all_reduce(buffer.data)
                buffer.data /= dist.world_size


def broadcast_module(module: nn.Module, dist: Distributed) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if dist.enabled:
        for tensor in [*module.parameters(), *module.buffers()]:
            torch_dist.broadcast(tensor.data, src=0)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model for parameters; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def ema_beta(batch_size: int, half_life_kimg: float) -> float:
    """EMA decay per step for a half-life given in thousands of images (StyleGAN2-ADA's
    ema_kimg)."""
    return 0.5 ** (batch_size / max(half_life_kimg * 1000, 1e-8))


def module_digest(module: nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in order: equal digests mean bit-equal weights."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_replicas_in_sync(modules: dict[str, nn.Module], dist: Distributed) -> None:
    """Compare every rank's weights (by digest) with rank 0's; raise if any replica diverged.

    Cheap (one small all-gather), run at each checkpoint: a silent divergence between processes
    would otherwise only show as a worse model.
    """
    if not dist.enabled:
        return
    digests = {name: module_digest(module) for name, module in modules.items()}
    gathered: list = [None] * dist.world_size
    torch_dist.all_gather_object(gathered, digests)
    diverged = [f"rank {rank}: {name}" for rank, other in enumerate(gathered)
                for name in digests if other[name] != gathered[0][name]]
    if diverged:
        raise RuntimeError("replicas diverged from rank 0: " + ", ".join(diverged))
    if dist.is_main:
        logging.getLogger(__name__).info("replicas in sync across %d processes (%s)",
                                         dist.world_size, ", ".join(modules))
