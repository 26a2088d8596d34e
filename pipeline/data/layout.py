"""The on-disk layout of a prepared dataset, shared by its writer and its readers."""

from __future__ import annotations

import pydantic

from pipeline.artifacts.base import Artifact

FORMAT_VERSION = 1
META_FILE = "dataset.json"
MANIFEST_FIELDS = ("file", "sha256", "source", "source_sha256", "source_bytes", "source_width",
                   "source_height", "source_mode", "cropped")


class DatasetMeta(Artifact):
    """``dataset.json``: what the prepared images are and where they came from."""

    format: int
    resolution: int
    count: int                # images listed in manifest.csv
    source: str               # "synthetic", or the name of the source folder or zip
    manifest_sha256: str      # identifies the data a run saw

    @pydantic.field_validator("format")
    @classmethod
    def _this_format(cls, value: int) -> int:
        if value != FORMAT_VERSION:  # named first: a newer format may differ in every key
            raise ValueError(f"dataset format {value}, this code reads format {FORMAT_VERSION}")
        return value
