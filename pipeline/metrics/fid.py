"""Fréchet Inception Distance, the standard definition, through torchmetrics.

torchmetrics' ``FrechetInceptionDistance`` with ``feature=2048``: torch-fidelity's port of the
TensorFlow FID InceptionV3 (pool3, 2048-d) with its standard weights, images given as uint8 and
resized by the library as its reference does. The weights are never fetched behind the user's
back; they are resolved, in order, from:

1. a local file named in params (``fid.weights``),
2. the torch hub cache (``$TORCH_HOME/hub/checkpoints/``, where torchmetrics would put them),
3. a download into that cache, only with ``fid.allow_download: true``.

Each file is checked against the SHA-256 prefix in its published name (torch hub's convention;
torch-fidelity publishes no full digest) or a full SHA-256 given in params, and must hold tensors
only (it is opened with ``weights_only=True`` first, because torch-fidelity itself loads it with
``weights_only=False``). Without weights, FID is recorded as unavailable with the reason: a
number from other weights would not be FID.

The real images' statistics (the sums torchmetrics accumulates) are computed once and cached as
an artifact; a metric restored from them scores any number of generators.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.images import quantize
from pipeline.io import sha256_file
from pipeline.pretrained import WeightsUnavailable, download_to_hub_cache, hub_cache_path

log = logging.getLogger(__name__)

INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[1]
INCEPTION_SHA256_PREFIX = "6726825d"
FEATURES = 2048
_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")


def check_weights(path: Path, sha256: str | None) -> Path:
    """Verify a weights file's digest (full ``sha256`` if given, else the published prefix) and
    that it holds tensors only. Raises PipelineError naming the file."""
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256.lower():
        raise PipelineError(f"{path}: SHA-256 {digest} does not match fid.weights_sha256 {sha256}")
    if sha256 is None and not digest.startswith(INCEPTION_SHA256_PREFIX):
        raise PipelineError(f"{path}: SHA-256 {digest} does not start with "
                            f"{INCEPTION_SHA256_PREFIX}, the prefix of the FID InceptionV3 weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means: not a plain tensor file
        raise PipelineError(f"{path}: not a plain state dict of tensors ({e})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PipelineError(f"{path}: not a plain state dict of tensors")
    return path


def resolve_weights(local: str | Path | None, allow_download: bool,
                    sha256: str | None = None) -> Path:
    """The checked path of the FID InceptionV3 weights, or :class:`WeightsUnavailable` with the
    reason. A local file named in params that is missing is an error (a typo), not a fallback."""
    if local is not None:
        local = Path(local)
        if not local.is_file():
            raise PipelineError(f"{local}: FID weights file (fid.weights) not found")
        return check_weights(local, sha256)
    cached = hub_cache_path(INCEPTION_URL)
    if cached.is_file():
        return check_weights(cached, sha256)
    if not allow_download:
        raise WeightsUnavailable(f"FID InceptionV3 weights not found (fid.weights is null, "
                                 f"nothing at {cached}) and fid.allow_download is false")
    try:
        return download_to_hub_cache(INCEPTION_URL, lambda tmp: check_weights(tmp, sha256),
                                     hash_prefix=None if sha256 else INCEPTION_SHA256_PREFIX)
    except (OSError, RuntimeError) as e:  # no network, or a digest mismatch
        raise WeightsUnavailable(f"FID InceptionV3 weights could not be downloaded from "
                                 f"{INCEPTION_URL}: {e}") from None


def fid_metric(weights: Path | None = None, feature: nn.Module | None = None):
    """A torchmetrics FrechetInceptionDistance on the standard InceptionV3 with ``weights``
    (checked by :func:`resolve_weights`), or on another ``feature`` module (tests)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if feature is not None:
        return FrechetInceptionDistance(feature=feature, reset_real_features=False)
    # antialias=False: torch-fidelity's resize, which replicates TensorFlow 1.x's bilinear resize
    # of the reference implementation (torchmetrics' default, antialias=True, differs from it).
    return FrechetInceptionDistance(feature=FEATURES, reset_real_features=False, antialias=False,
                                    feature_extractor_weights_path=str(weights))


def real_statistics(metric) -> dict[str, np.ndarray]:
    """The real images' accumulated statistics of ``metric``, as arrays to save."""
    return {name: getattr(metric, name).cpu().numpy() for name in _STATES}


def restore_real_statistics(metric, stats: dict[str, np.ndarray]) -> None:
    """Put cached real statistics (from :func:`real_statistics`) into a fresh metric."""
    for name in _STATES:
        current = getattr(metric, name)
        value = torch.as_tensor(stats[name]).to(current.dtype)
        if value.shape != current.shape:
            raise PipelineError(f"cached FID statistics '{name}' have shape {tuple(value.shape)}, "
                                f"expected {tuple(current.shape)}: recompute them")
        setattr(metric, name, value)


def frechet_distance_to_real(metric, fake_batches) -> float:
    """FID of the images in ``fake_batches`` (an iterable of (N, 3, H, W) in [-1, 1]) against
    the real statistics already in ``metric``."""
    metric.reset()  # fake statistics only: reset_real_features=False keeps the real ones
    for batch in fake_batches:
        metric.update(quantize(batch) if batch.dtype != torch.uint8 else batch, real=False)
    return float(metric.compute())
