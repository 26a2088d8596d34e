"""Pretrained weights that the pipeline never fetches behind the user's back.

Each user (the VGG19 perceptual loss, the FID InceptionV3) resolves its file the same way: a
local path named by the user, else the file in the torch hub cache (where torchvision and
torchmetrics would put it), else, only when downloads are allowed, a download into that cache
that lands there only once complete and checked. The checks themselves (digest, format) belong
to each user.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.errors import PipelineError
from pipeline.io import atomic_path

log = logging.getLogger(__name__)


class WeightsUnavailable(PipelineError):
    """Pretrained weights are not available here (and were not allowed to be downloaded)."""


def hub_cache_path(url: str) -> Path:
    """Where torch hub keeps the file of ``url``: ``$TORCH_HOME/hub/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]


def download_to_hub_cache(url: str, check: Callable[[Path], object],
                          hash_prefix: str | None = None) -> Path:
    """Download ``url`` into the torch hub cache; the file lands there only if the download
    completes (with the SHA-256 ``hash_prefix``, if given) and ``check(file)`` passes."""
    cached = hub_cache_path(url)
    log.info("downloading %s to %s", url, cached)
    with atomic_path(cached) as tmp:
        torch.hub.download_url_to_file(url, str(tmp), hash_prefix=hash_prefix, progress=False)
        check(tmp)
    return cached
