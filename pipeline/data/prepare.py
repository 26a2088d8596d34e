"""The ``prepare`` stage's library: build the dataset artifact from synthetic or real faces.

Artifact layout (a directory, written under a temporary name and renamed into place when complete)::

    dataset.json      format version, resolution, image count, source, manifest hash
    manifest.csv      one row per image: file, sha256, source, source_sha256, source_bytes,
                      source_width, source_height, source_mode, cropped
    skipped.csv       one row per rejected source file: source, reason, detail
    config.json       the resolved ``prepare`` config
    images/00000000.png ...   RGB, resolution x resolution
"""

from __future__ import annotations

import collections
import csv
import functools
import io
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import pydantic

from pipeline.artifacts.base import write_artifact
from pipeline.config import PowerOfTwo, StageConfig, config_text
from pipeline.data.ingest import SKIP_REASONS, LoadedImage, SourceFile, list_source, load_face
from pipeline.data.layout import FORMAT_VERSION, MANIFEST_FIELDS, META_FILE, DatasetMeta
from pipeline.data.styles import PROCEDURAL_STYLES, procedural_style
from pipeline.data.synthetic import synthetic_face
from pipeline.errors import DataError
from pipeline.images import encode_png, make_grid
from pipeline.io import atomic_path, sha256_bytes, sha256_file, write_text

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
PROCEDURAL = "procedural:"  # + a style of pipeline.data.styles: procedural style exemplars


class PrepareConfig(StageConfig):
    """The ``prepare`` section of params.yaml."""

    resolution: Annotated[PowerOfTwo, pydantic.Field(ge=8, le=1024)]  # output size, pixels
    synthetic_images: Annotated[int, pydantic.Field(ge=1)]  # images drawn for a generated source
    seed: Annotated[int, pydantic.Field(ge=0)]              # seed of the generated images
    min_images: Annotated[int, pydantic.Field(ge=1)]        # fail when fewer usable remain
    preview_images: Annotated[int, pydantic.Field(ge=1)]    # faces in the preview grid


@dataclass
class PrepareReport:
    """What ``prepare_dataset`` did: counts for the metrics file and a preview grid."""

    source: str
    resolution: int
    candidates: int = 0
    images: int = 0
    cropped: int = 0
    skipped: collections.Counter = field(default_factory=collections.Counter)
    skipped_files: list[tuple[str, str, str]] = field(default_factory=list)
    preview: np.ndarray | None = None

    def metrics(self) -> dict:
        return {
            "candidates": self.candidates,
            "images": self.images,
            "cropped": self.cropped,
            "skipped": sum(self.skipped.values()),
            "skipped_by_reason": {reason: self.skipped[reason] for reason in SKIP_REASONS},
            "resolution": self.resolution,
        }

    def summary(self) -> str:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.skipped.items()))
        skipped = f"; skipped {sum(self.skipped.values())} ({reasons})" if self.skipped else ""
        return (f"{self.images} usable images of {self.candidates} from {self.source} "
                f"at {self.resolution}x{self.resolution}{skipped}")


def _synthetic_item(index: int, seed: int, resolution: int) -> LoadedImage:
    image = synthetic_face(seed, index, resolution)
    digest = sha256_bytes(image.tobytes())
    return LoadedImage(name=f"{SYNTHETIC}:{seed}:{index}", source_sha256=digest,
                       source_bytes=image.nbytes, source_width=resolution,
                       source_height=resolution, source_mode="RGB", image=image)


def _procedural_item(index: int, style: str, seed: int, resolution: int) -> LoadedImage:
    image = procedural_style(style, seed, index, resolution)
    return LoadedImage(name=f"{PROCEDURAL}{style}:{seed}:{index}",
                       source_sha256=sha256_bytes(image.tobytes()), source_bytes=image.nbytes,
                       source_width=resolution, source_height=resolution, source_mode="RGB",
                       image=image)


def procedural_source(source: str) -> str | None:
    """The style of a ``procedural:<style>`` source (None for any other source)."""
    if not source.startswith(PROCEDURAL):
        return None
    style = source[len(PROCEDURAL):]
    if style not in PROCEDURAL_STYLES:
        raise DataError(f"unknown procedural source {source!r}; choose one of "
                        f"{[PROCEDURAL + s for s in PROCEDURAL_STYLES]}, or a folder / .zip")
    return style


def _ordered_map(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """``map`` over a process pool, in order (the output must not depend on the worker count)."""
    items = list(items)
    if workers <= 1 or len(items) < 2:
        yield from map(fn, items)
        return
    # fork is cheap and inherits imports; everything passed is plain data, so spawn would work too.
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with context.Pool(workers) as pool:
        yield from pool.imap(fn, items, chunksize=max(1, min(64, len(items) // (8 * workers))))


def _iter_images(source: str, config: PrepareConfig, workers: int,
                 report: PrepareReport) -> Iterator[LoadedImage]:
    if source == SYNTHETIC:
        report.candidates = config.synthetic_images
        fn = functools.partial(_synthetic_item, seed=config.seed, resolution=config.resolution)
        return _ordered_map(fn, range(config.synthetic_images), workers)
    style = procedural_source(source)
    if style is not None:
        report.candidates = config.synthetic_images
        fn = functools.partial(_procedural_item, style=style, seed=config.seed,
                               resolution=config.resolution)
        return _ordered_map(fn, range(config.synthetic_images), workers)
    files: list[SourceFile] = list_source(source)
    report.candidates = len(files)
    fn = functools.partial(load_face, resolution=config.resolution)
    return _ordered_map(fn, files, workers)


def _csv_text(header: Iterable[str], rows: Iterable[Iterable]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def prepare_dataset(source: str, out: str | Path, config: PrepareConfig,
                    workers: int = 0) -> PrepareReport:
    """Build the dataset artifact at ``out`` from ``source`` and return a report.

    Args:
        source:      ``"synthetic"`` for the procedural faces, ``"procedural:<style>"`` for
                     procedural style exemplars (``pipeline.data.styles``), or a folder / .zip
                     of face (or style) images.
        out:         the dataset directory to write; replaced whole, only on success.
        config:      the ``prepare`` config (written resolved beside the data, ``config.json``).
        workers:     processes for decoding and resizing; 0 means one per CPU core.

    Raises:
        DataError: the source is missing or empty, or fewer than ``config.min_images`` remain.
    """
    workers = workers or os.cpu_count() or 1
    report = PrepareReport(source=str(source), resolution=config.resolution)
    seen: dict[str, str] = {}  # source sha256 -> first file with those bytes
    manifest_rows, preview = [], []
    with atomic_path(out, directory=True) as tmp:
        (tmp / "images").mkdir()
        for item in _iter_images(source, config, workers, report):
            reason, detail = item.skip_reason, item.detail
            if not reason and item.source_sha256 in seen:
                reason, detail = "duplicate", f"same bytes as {seen[item.source_sha256]}"
            if reason:
                report.skipped[reason] += 1
                report.skipped_files.append((item.name, reason, detail))
                log.warning("skipped %s: %s%s", item.name, reason, f" ({detail})" if detail else "")
                continue
            seen[item.source_sha256] = item.name
            png = encode_png(item.image)
            file = f"images/{report.images:08d}.png"
            (tmp / file).write_bytes(png)
            manifest_rows.append((file, sha256_bytes(png), item.name, item.source_sha256,
                                  item.source_bytes, item.source_width, item.source_height,
                                  item.source_mode, int(item.cropped)))
            report.images += 1
            report.cropped += item.cropped
            if len(preview) < config.preview_images:
                preview.append(item.image)

        if report.images < config.min_images:
            examples = "".join(f"\n  - {name}: {reason}{f' ({detail})' if detail else ''}"
                               for name, reason, detail in report.skipped_files[:10])
            raise DataError(f"{source}: only {report.images} usable images, prepare.min_images is "
                            f"{config.min_images} ({report.summary()}){examples}")

        write_text(tmp / "manifest.csv", _csv_text(MANIFEST_FIELDS, manifest_rows))
        write_text(tmp / "skipped.csv", _csv_text(("source", "reason", "detail"),
                                                  report.skipped_files))
        write_text(tmp / "config.json", config_text("prepare", config))
        write_artifact(tmp / META_FILE, DatasetMeta(
            format=FORMAT_VERSION,
            resolution=config.resolution,
            count=report.images,
            source=(source if source == SYNTHETIC or source.startswith(PROCEDURAL)
                    else Path(source).name),
            manifest_sha256=sha256_file(tmp / "manifest.csv"),
        ))
    report.preview = make_grid(np.stack(preview))
    log.info("prepared %s", report.summary())
    return report
