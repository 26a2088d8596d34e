"""The release bundle (the ``bundle`` stage): one folder, as a directory and as a zip, holding the
deployed student's TFLite models with their interface cards, each style's float16 stylizer with
its card and its MediaPipe ``face_stylizer_<style>.task``, ``MODEL_CARD.md``, ``params.yaml``,
``metrics.json`` and ``SHA256SUMS`` (one ``<sha256>  <file>`` line per other file)."""

from __future__ import annotations

from pathlib import Path

import pydantic

from pipeline.artifacts.base import Artifact, omitted
from pipeline.artifacts.evaluation import Evaluation
from pipeline.artifacts.stylizer import StylizerExport, StylizersEvaluation
from pipeline.artifacts.tflite import GeneratorConversion, card_file, model_file

GENERATOR = "student"                # the generator released
RELEASED_PRECISIONS = ("float16", "float32")  # its files in the bundle, the deployed one first
DEPLOYED = RELEASED_PRECISIONS[0]             # the precision a consumer runs
SUMS = "SHA256SUMS"
METRICS = "metrics.json"


def model_files(directory: str | Path) -> list[Path]:
    """The TFLite models and their interface cards of the bundle, as named in ``directory``."""
    return [path for precision in RELEASED_PRECISIONS
            for path in (model_file(directory, GENERATOR, precision),
                         card_file(directory, GENERATOR, precision))]


def stylizer_files(style: str) -> dict[str, str]:
    """A style's released files: {name in the export_stylizer directory: name in the bundle}."""
    return {f"stylizer_{DEPLOYED}.tflite": f"stylizer_{style}_{DEPLOYED}.tflite",
            f"stylizer_{DEPLOYED}.json": f"stylizer_{style}_{DEPLOYED}.json",
            "face_stylizer.task": f"face_stylizer_{style}.task"}


class ReleaseMetrics(Artifact):
    """``metrics.json``: the evaluation and the released generator's conversion checks; the
    stylizers' evaluation and export checks (per style) when the release has stylizers."""

    evaluate: Evaluation
    convert_tflite: GeneratorConversion
    evaluate_stylizers: StylizersEvaluation | None = pydantic.Field(default=None,
                                                                    exclude_if=omitted)
    export_stylizer: dict[str, StylizerExport] | None = pydantic.Field(default=None,
                                                                       exclude_if=omitted)
