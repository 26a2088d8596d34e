"""One scaffold for every trainer: a resumable training run.

What the trainers of this pipeline share lives here, so that each trainer reads as its phases:

* set-up: the torchrun process group (or a single process), the device, this rank's share of the
  batch, bfloat16 autocast on CUDA when asked for;
* resumption: a training state made with the same *identity* (the training config without the
  keys that may change between an interrupted run and its resumption, plus the hashes of the
  inputs) is loaded into the run's modules and optimizers; a state of another identity is set
  aside with a warning, and one already past ``steps`` is an error;
* each step: this rank's share of the batch of real images (decoded ahead by data-loader
  workers, ``pipeline.training.data``) and the step's random stream; the step's values stay on
  the device, summed there, and reach the host only when the averaged metrics are logged (to
  dvclive and the progress bar) or a training state is saved: the NaN guard checks them then,
  before either, so a saved state is always a good one; sample grids; and an atomic
  training-state save (with the resolved ``config.json`` beside it) every ``checkpoint_every``
  steps, each on its own "due every N steps" schedule;
* the end: the inference snapshot of the trained (EMA) model and its sample grid.

A training state is ``{"kind", "step", "identity", <name>: state_dict per module and optimizer,
<extra>...}``, written with :func:`pipeline.snapshot.save_checkpoint`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from pipeline.config import NonNegativeInt, PositiveInt, StageConfig, config_text
from pipeline.data.dataset import FaceDataset
from pipeline.errors import ConfigError
from pipeline.images import save_png
from pipeline.io import write_text
from pipeline.seeding import step_generator
from pipeline.snapshot import CheckpointError, load_checkpoint, save_checkpoint, save_snapshot
from pipeline.training.data import StepBatchSampler, TimedBatches, step_batches
from pipeline.training.monitor import Monitor
from pipeline.training.runtime import (
    broadcast_module,
    check_replicas_in_sync,
    init_distributed,
    local_batch_size,
    resolve_device_type,
    select_device,
)

log = logging.getLogger(__name__)

Stateful = nn.Module | torch.optim.Optimizer


class TrainingConfig(StageConfig):
    """The keys every trainer's section of params.yaml has; each trainer adds its own."""

    SECTION: ClassVar[str]  # the params.yaml section (e.g. "distill"), named in messages

    seed: int
    batch_size: PositiveInt          # images per step over all processes
    steps: PositiveInt               # training steps
    mixed_precision: bool            # bfloat16 autocast on CUDA (ignored on CPU)
    checkpoint_every: PositiveInt    # steps between training-state saves
    log_every: PositiveInt           # steps between logged (averaged) metrics
    sample_every: PositiveInt        # steps between sample grids from fixed latents

    # Keys that may change between an interrupted run and its resumption.
    RESUMABLE_KEYS: ClassVar[frozenset[str]] = frozenset({
        "steps", "checkpoint_every", "log_every", "sample_every", "mixed_precision"})

    def training_identity(self) -> dict:
        """The part of the config a training state must match to be resumed."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RESUMABLE_KEYS}


class RealImagesConfig(TrainingConfig):
    """A trainer that reads dataset images at every step."""

    data_workers: NonNegativeInt     # DataLoader processes decoding images ahead (0: in-process)

    RESUMABLE_KEYS: ClassVar[frozenset[str]] = TrainingConfig.RESUMABLE_KEYS | {"data_workers"}


@dataclass(frozen=True, kw_only=True)
class RunPaths:
    """Where a training run writes (every path comes from dvc.yaml)."""

    snapshot: Path               # the inference snapshot written at the end
    state: Path                  # the training state resumed from and saved to (config.json beside)
    live: Path | None = None     # dvclive directory: metrics, plots, sample grids
    samples: Path | None = None  # PNG of the final samples

    def __post_init__(self):  # accept str paths too
        for name in ("snapshot", "state", "live", "samples"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))


def load_training_state(path: str | Path, kind: str, identity: dict[str, Any], steps: int,
                        steps_key: str) -> dict[str, Any] | None:
    """The training state at ``path`` to resume from, or None to start afresh.

    A state made with another ``identity`` (training config, data, teacher...) is not resumed: a
    warning says so and training starts from scratch. A state already past ``steps`` (the params
    key ``steps_key``) is an error, since training cannot go backwards.
    """
    path = Path(path)
    if not path.is_file():
        return None
    state = load_checkpoint(path)
    if state.get("kind") != kind:
        raise CheckpointError(f"{path}: not a {kind}")
    if state.get("identity") != identity:
        saved = state.get("identity") or {}
        differ = sorted(k for k in {**saved, **identity} if saved.get(k) != identity.get(k))
        log.warning("%s was made with other params, data or inputs (%s differ); starting from "
                    "scratch", path, ", ".join(differ))
        return None
    if state["step"] > steps:
        raise ConfigError(f"{path} is at step {state['step']}, past {steps_key} ({steps}); "
                          "raise it, or delete the state to start afresh")
    log.info("resuming from %s at step %d", path, state["step"])
    return state


class TrainingRun:
    """One run of a trainer, alone or as one process of ``torchrun``: every rank computes its
    share of the batch and gradients are averaged; rank 0 writes every file.

    Use: build the models on :attr:`device`, :meth:`resume`, loop over :meth:`steps` calling
    :meth:`record` then :meth:`report` at the end of each step, then :meth:`finish`.
    """

    def __init__(self, config: TrainingConfig, paths: RunPaths, device: str, kind: str):
        self.config, self.paths, self.kind = config, paths, kind
        self.dist = init_distributed(resolve_device_type(device))
        self.device = select_device(device, self.dist)
        self.local_batch = local_batch_size(config.batch_size, self.dist,
                                            f"{config.SECTION}.batch_size")
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if config.mixed_precision and self.device.type == "cuda"
                         else contextlib.nullcontext())
        self.start_step = 0
        self.identity: dict[str, Any] = {}
        self.last_metrics: dict[str, float] = {}
        self._stateful: Mapping[str, Stateful] = {}
        self._monitor: Monitor | None = None
        self._progress_keys: tuple[str, ...] | None = None
        self._last_good = ""
        self._batches: TimedBatches | None = None  # the run's dataset images, if it reads any

    def resume(self, identity: dict[str, Any], stateful: Mapping[str, Stateful],
               progress_keys: tuple[str, ...] | None = None) -> dict[str, Any] | None:
        """Load the matching training state, if any, into ``stateful`` (modules and optimizers by
        name), then make every rank start from rank 0's weights.

        Args:
            identity:      the hashes of the run's inputs (data, teacher...), beside the config.
            stateful:      what a training state holds, by name.
            progress_keys: the metrics shown on the progress bar (None: all).

        Returns:
            the loaded state (for a trainer's own entries), or None when starting afresh.
        """
        config = self.config
        self.identity = {"config": config.training_identity(), **identity}
        self._stateful = stateful
        state = load_training_state(self.paths.state, self.kind, self.identity, config.steps,
                                    f"{config.SECTION}.steps")
        if state is not None:
            for name, obj in stateful.items():
                obj.load_state_dict(state[name])
            self.start_step = state["step"]
            self.last_metrics = state.get("last_metrics", {})  # what a finished run reports
        for obj in stateful.values():
            if isinstance(obj, nn.Module):
                broadcast_module(obj, self.dist)
        self._progress_keys = progress_keys
        self._last_good = (f"Last good training state: {self.paths.state}"
                           if self.paths.state.exists() else "No training state was saved yet.")
        return state

    def steps(self) -> range:
        """The steps left to train; the logs (and the throughput clock) start here, after the
        trainer's own set-up."""
        config = self.config
        self._monitor = Monitor(self.paths.live, config.steps, self.start_step, config.batch_size,
                                self.dist.is_main, progress_keys=self._progress_keys)
        return range(self.start_step, config.steps)

    def due(self, step: int, every: int) -> bool:
        """Whether work done every ``every`` steps is due at the end of ``step`` (always at the
        end of the last step)."""
        done = step + 1
        return done % every == 0 or done == self.config.steps

    def generator(self, step: int, stream: str) -> torch.Generator:
        """The random stream ``stream`` of ``step`` on this rank (``pipeline.seeding``)."""
        return step_generator(self.config.seed, step, self.dist.rank, stream)

    def real_batches(self, dataset: FaceDataset, pool: Sequence[int] | None = None,
                     count: int | None = None) -> TimedBatches:
        """This rank's share of each remaining step's batch of dataset images, on :attr:`device`,
        one per step in order: ``count`` images over all ranks (default: the batch size) drawn
        from the dataset indices ``pool`` (default: all of them). Call after :meth:`resume`; the
        config's ``data_workers`` decode them ahead."""
        pool = range(len(dataset)) if pool is None else pool
        count = self.config.batch_size if count is None else count
        sampler = StepBatchSampler(self.config.seed, self.start_step, self.config.steps, pool,
                                   count, self.dist)
        self._batches = step_batches(dataset, sampler, self.device, self.config.data_workers)
        return self._batches

    def record(self, step: int, values: dict[str, torch.Tensor | float]) -> None:
        """The end of a step's updates: its values are added, on the device, to the sums of the
        next log (no host synchronisation)."""
        self._monitor.accumulate(values)
        self._monitor.advance()

    def report(self, step: int, state: Callable[[], dict[str, Any]] | None = None,
               samples: Callable[[], np.ndarray] | None = None,
               log_extra: dict[str, float] | None = None) -> None:
        """What is due at the end of ``step``: the averaged metrics (also whenever ``log_extra``,
        e.g. an evaluation made at this step, is given), the sample grid ``samples()`` (rank 0),
        and the training state with the trainer's own entries ``state()``."""
        log_due = self.due(step, self.config.log_every) or log_extra is not None
        save_due = self.due(step, self.config.checkpoint_every)
        if log_due or save_due:  # the NaN guard (agreed across ranks), before a log or a save
            self._monitor.check_finite(step, self._last_good, self.dist)
        if log_due:
            waited = self._batches.wait_seconds if self._batches is not None else None
            self.last_metrics = self._monitor.log(step + 1, extra=log_extra, data_wait=waited)
        if samples is not None and self.dist.is_main and self.due(step, self.config.sample_every):
            self._monitor.image("samples.png", samples())
        if save_due:
            self._save_state(step + 1, state() if state is not None else {})

    def _save_state(self, step: int, extra: dict[str, Any]) -> None:
        modules = {name: obj for name, obj in self._stateful.items() if isinstance(obj, nn.Module)}
        check_replicas_in_sync(modules, self.dist)
        if self.dist.is_main:
            if extra.keys() & {"kind", "step", "identity", "last_metrics", *self._stateful}:
                raise ValueError(f"training-state entries {sorted(extra)} collide with the run's")
            save_checkpoint(self.paths.state, {
                "kind": self.kind, "step": step, "identity": self.identity,
                "last_metrics": self.last_metrics, **extra,
                **{name: obj.state_dict() for name, obj in self._stateful.items()}})
            # After the state: a failed save leaves the config of the state it kept beside it.
            write_text(self.paths.state.with_name("config.json"),
                       config_text(self.config.SECTION, self.config))
        self._last_good = f"Last good training state: {self.paths.state} (step {step})."

    def finish(self, model: nn.Module, kind: str, model_config: dict[str, Any],
               meta: dict[str, Any], samples: Callable[[], np.ndarray] | None = None) -> None:
        """Close the logs; on rank 0 write the inference snapshot of ``model`` (with its config,
        ``meta`` and the training config) and the sample grid ``samples()``."""
        self._monitor.close()
        if self.dist.is_main:
            save_snapshot(self.paths.snapshot, kind, model, model_config,
                          meta={**meta, "train_config": self.config.to_dict()})
            if self.paths.samples is not None and samples is not None:
                save_png(self.paths.samples, samples())
