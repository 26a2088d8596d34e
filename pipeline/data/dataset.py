"""A ``torch.utils.data.Dataset`` over the artifact written by the ``prepare`` stage."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.artifacts.base import read_artifact
from pipeline.data.layout import MANIFEST_FIELDS, META_FILE, DatasetMeta
from pipeline.errors import DataError
from pipeline.io import os_reason
from pipeline.seeding import numpy_rng


class FaceDataset(torch.utils.data.Dataset):
    """Images of a prepared dataset as float tensors (3, R, R) in [-1, 1].

    With ``xflip`` the dataset is twice as long: index ``i + len(images)`` is image ``i`` mirrored.
    Doubling (as StyleGAN2-ADA's ``--mirror`` does) rather than flipping at random keeps every
    epoch, and so every resumed run, the same for a given sampler seed.

    Args:
        root:      the directory written by ``prepare``.
        xflip:     add horizontally mirrored copies.
        in_memory: decode every image once at construction and keep them (uint8) in memory;
                   ``"auto"``: only when they take at most ``AUTO_MEMORY_BYTES``.
    """

    AUTO_MEMORY_BYTES = 2 * 1024 ** 3

    def __init__(self, root: str | Path, xflip: bool = False, in_memory: bool | str = False):
        self.root = Path(root)
        meta_path = self.root / META_FILE
        if not meta_path.is_file():
            raise DataError(f"{self.root}: not a prepared dataset (no {META_FILE}); "
                            "run the prepare stage first")
        meta = read_artifact(meta_path, DatasetMeta, "prepare")
        self.resolution: int = meta.resolution
        self.manifest_sha256: str = meta.manifest_sha256  # identifies the data a run saw
        manifest = self.root / "manifest.csv"
        try:
            with open(manifest, newline="") as f:
                reader = csv.DictReader(f)
                if tuple(reader.fieldnames or ()) != MANIFEST_FIELDS:
                    raise DataError(f"{manifest}: unexpected columns {reader.fieldnames}")
                self.files = [row["file"] for row in reader]
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"{manifest}: unreadable ({_reason(e)}); re-run the prepare stage"
                            ) from None
        if len(self.files) != meta.count:
            raise DataError(f"{self.root}: manifest lists {len(self.files)} images, "
                            f"{META_FILE} says {meta.count}")
        self.xflip = xflip
        if in_memory == "auto":
            in_memory = len(self.files) * self.resolution ** 2 * 3 <= self.AUTO_MEMORY_BYTES
        self._cache = (np.stack([self._read(i) for i in range(len(self.files))]) if in_memory
                       else None)

    def _read(self, index: int) -> np.ndarray:
        path = self.root / self.files[index]
        try:
            with Image.open(path) as image:
                array = np.array(image.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError) as e:  # missing, truncated or not an image
            raise DataError(f"{path}: unreadable image ({_reason(e)}); re-run the prepare "
                            "stage") from None
        if array.shape != (self.resolution, self.resolution, 3):
            raise DataError(f"{path}: expected {self.resolution}x{self.resolution} RGB, "
                            f"got shape {array.shape}")
        return array

    def __len__(self) -> int:
        return len(self.files) * (2 if self.xflip else 1)

    def pixels(self, index: int) -> torch.Tensor:
        """Image ``index`` as stored: uint8 (3, R, R), mirrored for the second half of an
        ``xflip`` dataset. What data-loader workers decode and send (a quarter of float32's
        bytes); :func:`to_unit_range` makes the training input of it, on the device."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        image_index, flip = index % len(self.files), index >= len(self.files)
        array = self._cache[image_index] if self._cache is not None else self._read(image_index)
        if flip:
            array = array[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_unit_range(self.pixels(index))


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1] (0 -> -1, 255 -> 1), wherever they are."""
    return pixels.to(torch.float32) / 127.5 - 1.0


def _reason(error: Exception) -> str:
    """Why a read failed, without the path (the message names it already)."""
    return os_reason(error) if isinstance(error, OSError) else f"{type(error).__name__}: {error}"


def holdout_split(dataset: FaceDataset, holdout: int, seed: int,
                  key: str) -> tuple[list[int], list[int]]:
    """A seeded split of the dataset's images into (training indices, held-out indices).

    Held-out images (``holdout`` of them, sorted) are never trained on, nor are their mirrored
    copies: the training indices cover the flipped half of an ``xflip`` dataset for the training
    images only. ``key`` is the params key of ``holdout``, named when it leaves no training image.
    """
    count = len(dataset.files)
    if holdout >= count:
        raise DataError(f"{key} is {holdout} but {dataset.root} has {count} images: at least one "
                        "must remain for training")
    order = numpy_rng(seed, 0).permutation(count)
    heldout = sorted(int(i) for i in order[:holdout])
    train = sorted(int(i) for i in order[holdout:])
    if dataset.xflip:
        train += [i + count for i in train]
    return train, heldout


def heldout_images(dataset_dir: str | Path, meta: dict[str, Any],
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """The held-out real images recorded in an encoder's snapshot meta, from the dataset it was
    trained on (refused if the dataset changed since)."""
    dataset = FaceDataset(dataset_dir)
    if dataset.manifest_sha256 != meta["dataset_sha256"]:
        raise DataError(f"{dataset_dir}: not the dataset the encoder was trained on (manifest "
                        f"sha256 {dataset.manifest_sha256[:12]}..., the encoder's "
                        f"{meta['dataset_sha256'][:12]}...); re-train the encoder")
    index = {name: i for i, name in enumerate(dataset.files)}
    missing = [name for name in meta["heldout_files"] if name not in index]
    if missing:
        raise DataError(f"{dataset_dir}: held-out image {missing[0]} is missing")
    return torch.stack([dataset[index[name]] for name in meta["heldout_files"]]).to(device)
