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
from pipeline.io import atomic_path, sha256_file

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


def resolve_torchvision_weights(path: str | Path | None, url: str, what: str,
                                allow_download: bool, offline_hint: str) -> Path:
    """A torchvision weights file: ``path`` (trusted as given: it may be the user's own), else
    the file of ``url`` in the torch hub cache, else, when ``allow_download``, a download into
    that cache. Files from the cache or a download are checked against the SHA-256 prefix that
    torchvision puts in their names (``<name>-<prefix>.pth``).

    Args:
        what:         the weights, as messages name them (e.g. "VGG19").
        offline_hint: what to do instead without them, appended to the not-found message.
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise WeightsUnavailable(f"{path}: {what} weights file not found")
        return path
    prefix = url.rsplit("-", 1)[1].split(".")[0]

    def check(file: Path) -> None:
        digest = sha256_file(file)
        if not digest.startswith(prefix):
            raise WeightsUnavailable(f"{file}: sha256 {digest[:16]}... is not torchvision's "
                                     f"{what} ({prefix}...); delete it or pass a local path")

    cached = hub_cache_path(url)
    if cached.is_file():
        check(cached)
        return cached
    if not allow_download:
        raise WeightsUnavailable(
            f"{what} ImageNet weights not found: pass a local file in torchvision's format, put "
            f"{cached.name} in {cached.parent}, or allow the download; {offline_hint}")
    return download_to_hub_cache(url, check)
