"""What a consumer (or CI) runs on a release zip: every file is listed in ``SHA256SUMS`` and
matches it, and the float16 model loads in LiteRT and produces finite images of the shape its
interface card declares."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts.base import ArtifactError, read_artifact
from pipeline.artifacts.release import DEPLOYED, GENERATOR, SUMS
from pipeline.artifacts.tflite import TfliteCard, card_file, model_file
from pipeline.errors import PipelineError
from pipeline.io import sha256_file
from pipeline.runtimes import run_tflite


class BundleError(PipelineError):
    """A release bundle is incomplete or does not match its checksums."""


def verify_bundle(zip_path: str | Path) -> dict[str, Any]:
    """Unpack a release zip to a temporary directory, check it against ``SHA256SUMS`` (every
    file listed, every digest equal), then load the float16 model in LiteRT and run it once.
    Raises :class:`BundleError`; returns a summary."""
    zip_path = Path(zip_path)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                archive.extractall(tmp)
        except (OSError, zipfile.BadZipFile) as e:
            raise BundleError(f"{zip_path}: not a readable zip: {e}") from None
        roots = list(Path(tmp).iterdir())
        if len(roots) != 1 or not roots[0].is_dir() or not (roots[0] / SUMS).is_file():
            raise BundleError(f"{zip_path}: expected one folder with a {SUMS} file and nothing "
                              f"else at the top level")
        root = roots[0]
        listed = {}
        for line in (root / SUMS).read_text().splitlines():
            digest, _, name = line.partition("  ")
            listed[name] = digest
        present = {p.name for p in root.iterdir() if p.name != SUMS}
        if present != set(listed):
            raise BundleError(f"{zip_path}: files {sorted(present ^ set(listed))} are in the "
                              f"bundle or in {SUMS} but not both")
        for name, digest in listed.items():
            actual = sha256_file(root / name)
            if actual != digest:
                raise BundleError(f"{zip_path}: {name} has SHA-256 {actual}, {SUMS} says {digest}")
        try:
            card = read_artifact(card_file(root, GENERATOR, DEPLOYED), TfliteCard, "bundle")
        except ArtifactError as e:
            # named inside the zip, not in the temporary directory it was unpacked to
            raise BundleError(f"{zip_path}: {str(e).removeprefix(f'{Path(tmp)}/')}") from None
        model = model_file(root, GENERATOR, DEPLOYED)
        latent = np.random.default_rng(0).standard_normal(card.input.shape).astype(np.float32)
        image = run_tflite(model, latent)
        if image.shape != card.output.shape or not np.isfinite(image).all():
            raise BundleError(f"{zip_path}: {model.name} gave {image.shape} "
                              f"(finite: {bool(np.isfinite(image).all())}), its JSON declares "
                              f"{list(card.output.shape)}")
    return {"files": sorted(listed), "output_shape": list(image.shape),
            "output_range": [float(image.min()), float(image.max())]}
