"""The real images' side of the distribution metrics, computed once per dataset and cached as
an artifact (the ``reference_stats`` stage): a fixed random subset of the dataset (uint8, for the
sliced Wasserstein distance) and, when the FID weights are available, the real images' FID
statistics. ``evaluate`` scores every generator against it.

The artifact (a directory):

    reference.json   count, dataset manifest sha256, seed, resolution, FID status (and weights)
    images.npz       images: uint8 (N, 3, R, R)
    fid.npz          torchmetrics' accumulated real statistics (only when FID is available)
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import torch

from pipeline.artifacts.base import Artifact, read_artifact, write_artifact
from pipeline.config import PositiveInt, StageConfig
from pipeline.data.dataset import FaceDataset
from pipeline.errors import DataError, PipelineError
from pipeline.images import quantize
from pipeline.io import atomic_path, sha256_file
from pipeline.metrics import fid

log = logging.getLogger(__name__)

SUMMARY_FILE = "reference.json"


class FidConfig(StageConfig):
    """The ``fid`` section of params.yaml, shared by ``reference_stats`` and ``evaluate``."""

    weights: str | None            # local InceptionV3 FID weights file; null: the torch hub cache
    weights_sha256: str | None     # full SHA-256 to require; null: the published prefix
    allow_download: bool           # download into the torch hub cache when missing
    batch_size: PositiveInt        # images per InceptionV3 forward pass


class ReferenceSummary(Artifact):
    """``reference.json``: what the reference set holds and how it was drawn."""

    images: int                       # real images in images.npz
    dataset_sha256: str               # manifest hash of the dataset they were drawn from
    seed: int
    resolution: int
    fid_available: bool               # whether fid.npz exists
    fid_unavailable_reason: str | None
    fid_weights_sha256: str | None    # the InceptionV3 weights the FID statistics need


class ReferenceStatsConfig(StageConfig):
    """The ``reference_stats`` section of params.yaml."""

    images: PositiveInt   # real images in the reference set (all of them if the dataset is smaller)
    seed: int             # which subset


def fid_weights(config: FidConfig) -> tuple[Path | None, str | None]:
    """(checked weights path, None) or (None, the reason FID is unavailable)."""
    try:
        weights = fid.resolve_weights(config.weights, config.allow_download,
                                      config.weights_sha256)
        return weights, None
    except fid.WeightsUnavailable as e:
        log.warning("FID unavailable: %s", e)
        return None, str(e)


def build_reference(dataset_dir: str | Path, out: str | Path, config: ReferenceStatsConfig,
                    fid_config: FidConfig) -> ReferenceSummary:
    """Write the reference artifact directory ``out`` (replaced whole) and return its summary."""
    dataset = FaceDataset(dataset_dir, in_memory=False)
    count = min(config.images, len(dataset))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(config.seed))
    images = torch.stack([dataset[int(i)] for i in order[:count]])
    uint8 = quantize(images)
    weights, reason = fid_weights(fid_config)
    summary = ReferenceSummary(
        images=count, dataset_sha256=dataset.manifest_sha256, seed=config.seed,
        resolution=dataset.resolution, fid_available=weights is not None,
        fid_unavailable_reason=reason,
        fid_weights_sha256=None if weights is None else sha256_file(weights))
    with atomic_path(out, directory=True) as tmp:
        np.savez(tmp / "images.npz", images=uint8.numpy())
        if weights is not None:
            metric = fid.fid_metric(weights)
            for batch in uint8.split(fid_config.batch_size):
                metric.update(batch, real=True)
            np.savez(tmp / "fid.npz", **fid.real_statistics(metric))
        write_artifact(tmp / SUMMARY_FILE, summary)
    log.info("reference set: %d real images; FID %s", count,
             "statistics cached" if weights is not None else f"unavailable ({reason})")
    return summary


class Reference:
    """A reference artifact, read back; a missing or corrupt file of it is a :class:`DataError`
    naming the file."""

    def __init__(self, root: str | Path):
        root = Path(root)
        meta = root / SUMMARY_FILE
        if not meta.is_file():
            raise DataError(f"{root}: not a reference set (no {SUMMARY_FILE}); run the "
                            "reference_stats stage first")
        self.summary = read_artifact(meta, ReferenceSummary, "reference_stats")
        images = _load_npz(root / "images.npz")
        if "images" not in images:
            raise DataError(f"{root / 'images.npz'}: holds no images; re-run reference_stats")
        self.images = torch.from_numpy(images["images"])
        self.fid_stats: dict[str, np.ndarray] | None = None
        if self.summary.fid_available:
            self.fid_stats = _load_npz(root / "fid.npz")

    def check_weights(self, weights: Path | None) -> None:
        """FID needs the same extractor for real and generated images."""
        if weights is not None and self.fid_stats is not None:
            digest = sha256_file(weights)
            if digest != self.summary.fid_weights_sha256:
                raise PipelineError(f"FID weights {weights} (SHA-256 {digest}) are not the ones "
                                    f"the reference statistics were computed with; re-run "
                                    f"reference_stats")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file; a missing or corrupt one is a :class:`DataError`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {e}); re-run reference_stats"
                        ) from None
