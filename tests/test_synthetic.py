"""The embedded synthetic faces: deterministic, varied, at any resolution."""

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.data.prepare import PrepareConfig, prepare_dataset
from pipeline.data.synthetic import sample_attributes, synthetic_face
from pipeline.seeding import numpy_rng


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_shape_and_dtype(resolution):
    image = synthetic_face(0, 0, resolution)
    assert image.shape == (resolution, resolution, 3) and image.dtype == np.uint8


def test_same_seed_same_bytes_different_seed_differs():
    a = [synthetic_face(7, i, 32).tobytes() for i in range(4)]
    b = [synthetic_face(7, i, 32).tobytes() for i in range(4)]
    c = [synthetic_face(8, i, 32).tobytes() for i in range(4)]
    assert a == b
    assert all(x != y for x, y in zip(a, c))
    assert len(set(a)) == 4


def test_variety():
    attributes = [sample_attributes(numpy_rng(0, i)) for i in range(200)]
    assert len({a.hair_style for a in attributes}) == 6
    assert any(a.glasses for a in attributes) and any(a.beard for a in attributes)
    skin = np.array([a.skin.mean() for a in attributes])
    assert skin.max() - skin.min() > 100  # light to dark skin tones
    images = np.stack([synthetic_face(0, i, 32) for i in range(32)]).astype(np.float32)
    # Faces differ from each other far more than a few grey levels, everywhere in the picture.
    assert images.std(axis=0).mean() > 25


def test_dataset_is_byte_identical_whatever_the_worker_count(prepare_params, tmp_path):
    config = load_config(prepare_params(), "prepare", PrepareConfig)
    prepare_dataset("synthetic", tmp_path / "one", config, workers=1)
    prepare_dataset("synthetic", tmp_path / "two", config, workers=2)
    for name in ["manifest.csv", "dataset.json"] + [f"images/{i:08d}.png" for i in range(12)]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
