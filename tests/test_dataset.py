"""FaceDataset: the tensors training will see."""

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import load_config
from pipeline.data.dataset import FaceDataset
from pipeline.data.prepare import PrepareConfig, prepare_dataset
from pipeline.errors import DataError


@pytest.fixture
def dataset_dir(tmp_path, prepare_params):
    config = load_config(prepare_params(), "prepare", PrepareConfig)
    prepare_dataset("synthetic", tmp_path / "data", config, workers=1)
    return tmp_path / "data"


def test_items_are_normalised_chw_tensors(dataset_dir):
    dataset = FaceDataset(dataset_dir)
    assert len(dataset) == 12 and dataset.resolution == 32
    image = dataset[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert -1.0 <= image.min() and image.max() <= 1.0
    png = np.array(Image.open(dataset_dir / "images" / "00000003.png"))
    assert torch.equal(image, torch.from_numpy(png).permute(2, 0, 1).float() / 127.5 - 1)


def test_xflip_doubles_with_mirrored_copies(dataset_dir):
    dataset = FaceDataset(dataset_dir, xflip=True)
    assert len(dataset) == 24
    assert torch.equal(dataset[12 + 5], dataset[5].flip(-1))
    with pytest.raises(IndexError):
        dataset[24]


def test_in_memory_matches_lazy_and_batches(dataset_dir):
    lazy, cached = FaceDataset(dataset_dir), FaceDataset(dataset_dir, in_memory=True)
    assert all(torch.equal(lazy[i], cached[i]) for i in range(len(lazy)))
    batch = next(iter(torch.utils.data.DataLoader(lazy, batch_size=5, shuffle=True)))
    assert batch.shape == (5, 3, 32, 32)


def test_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="not a prepared dataset"):
        FaceDataset(tmp_path)
