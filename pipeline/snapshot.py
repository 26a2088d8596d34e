"""Checkpoints: inference snapshots and training states, written atomically, loaded safely.

The bottom layer of every model file: the model classes (``pipeline.models``) rebuild from a
snapshot through :func:`rebuild_from_snapshot`, the trainers (``pipeline.training.run``) resume
from a training state loaded with :func:`load_checkpoint`.

* An **inference snapshot** holds one model's weights and the config that rebuilds it, so any
  script can load it without ``params.yaml``:
  ``{"format", "kind", "config", "state_dict", "meta"}``.
* A **training state** holds everything needed to resume: models, optimizers, step, the training
  config it was made with. It is written every N steps under a temporary name and renamed, so a run
  killed at any moment (even with SIGKILL) leaves the previous complete state.

Both are plain dicts of tensors and JSON-like values saved with ``torch.save`` and read with
``torch.load(..., weights_only=True)``: no pickled code is ever executed on load. Weights are saved
from unwrapped modules (no ``module.`` or ``_orig_mod.`` prefixes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

import pydantic
import torch
from torch import nn

from pipeline.config import describe_errors
from pipeline.errors import PipelineError
from pipeline.io import atomic_path

FORMAT_VERSION = 1
ModelT = TypeVar("ModelT", bound=nn.Module)


class CheckpointError(PipelineError):
    """A checkpoint is missing, unreadable or of the wrong kind."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """``torch.save`` ``payload`` (plus the format version) to ``path`` atomically."""
    # Through a file object: torch then reports a full disk as the OSError it is (given a path it
    # raises an opaque RuntimeError), and the bytes do not depend on the file's name.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save({"format": FORMAT_VERSION, **payload}, f)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` without executing any pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt file, foreign pickle, truncated write
        raise CheckpointError(f"{path}: not a readable checkpoint "
                              f"({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a checkpoint of format {FORMAT_VERSION}")
    return payload


def save_snapshot(path: str | Path, kind: str, model: torch.nn.Module, config: dict[str, Any],
                  meta: dict[str, Any] | None = None) -> None:
    """Save an inference snapshot of ``model`` (its state dict) with the ``config`` that builds
    it."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(path, {"kind": kind, "config": config, "state_dict": state, "meta": meta or {}})


def load_snapshot(path: str | Path, kind: str) -> dict[str, Any]:
    """Load an inference snapshot and check that it holds a model of ``kind``."""
    payload = load_checkpoint(path)
    if payload.get("kind") != kind:
        raise CheckpointError(f"{path}: holds a {payload.get('kind')!r}, expected a {kind!r}")
    return payload


def rebuild_from_snapshot(path: str | Path, kind: str, build: Callable[[dict], ModelT],
                          device: str | torch.device = "cpu") -> ModelT:
    """Load an inference snapshot of ``kind`` and return ``build(config)`` with its weights, in
    eval mode without gradients. A snapshot made by another version of the model is a clear
    :class:`CheckpointError`, not a traceback."""
    payload = load_snapshot(path, kind)
    try:
        model = build(payload["config"])
        model.load_state_dict(payload["state_dict"])
    except (pydantic.ValidationError, RuntimeError, KeyError, TypeError) as e:
        if isinstance(e, pydantic.ValidationError):  # name every config key that differs
            detail = "; ".join(describe_errors(e, "config"))
        else:
            detail = str(e).splitlines()[0] + "..."
        raise CheckpointError(f"{path}: snapshot does not match this version's {kind} "
                              f"({detail}); re-create it") from None
    return model.to(device).eval().requires_grad_(False)
