"""Shared fixtures: params files for tiny runs, and the real face data when it is present."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_FACES = ROOT.parent / "shared" / "data" / "faces"

TINY_PREPARE = {
    "resolution": 32,
    "synthetic_images": 12,
    "seed": 0,
    "min_images": 2,
    "preview_images": 4,
}


def prepared_16(tmp_path_factory) -> Path:
    """A prepared synthetic dataset of TINY_PREPARE's 12 faces at 16x16 (for module fixtures)."""
    from pipeline.data.prepare import PrepareConfig, prepare_dataset

    out = tmp_path_factory.mktemp("data") / "prepared"
    prepare_dataset("synthetic", out, PrepareConfig(**{**TINY_PREPARE, "resolution": 16}),
                    workers=1)
    return out


def write_params(path: Path, **sections: dict) -> Path:
    path.write_text(yaml.safe_dump(sections, sort_keys=False))
    return path


@pytest.fixture
def prepare_params(tmp_path: Path):
    """A function writing a params.yaml whose ``prepare`` section is TINY_PREPARE plus overrides."""

    def make(**overrides) -> Path:
        return write_params(tmp_path / "params.yaml", prepare={**TINY_PREPARE, **overrides})

    return make


@pytest.fixture
def shared_faces() -> Path:
    if not SHARED_FACES.is_dir():
        pytest.skip(f"real face data not present at {SHARED_FACES}")
    return SHARED_FACES
