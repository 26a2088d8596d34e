"""Ingestion of the real aligned faces in ../shared/data/faces (skipped when absent)."""

import numpy as np

from pipeline.config import load_config
from pipeline.data.dataset import FaceDataset
from pipeline.data.prepare import PrepareConfig, prepare_dataset


def test_real_faces_are_ingested(shared_faces, tmp_path, prepare_params):
    config = load_config(prepare_params(resolution=64, min_images=50), "prepare", PrepareConfig)
    report = prepare_dataset(str(shared_faces), tmp_path / "faces", config)
    count = sum(1 for p in shared_faces.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    assert report.images == count and not report.skipped
    dataset = FaceDataset(tmp_path / "faces", xflip=True)
    assert len(dataset) == 2 * count
    # Real photos: varied, not blank, and the face is in the middle (brighter centre column is not
    # guaranteed, but a centre crop of an aligned face always has structure).
    images = np.stack([dataset[i].numpy() for i in range(0, count, 10)])
    assert images.std() > 0.3
    assert images[:, :, 16:48, 16:48].std(axis=(2, 3)).mean() > 0.1
