"""The release bundle (the ``bundle`` stage): one folder, as a directory and as a zip, holding the
deployed student's TFLite models with their interface cards, ``MODEL_CARD.md``, ``params.yaml``,
``metrics.json`` and ``SHA256SUMS`` (one ``<sha256>  <file>`` line per other file)."""

from __future__ import annotations

from pathlib import Path

from pipeline.artifacts.base import Artifact
from pipeline.artifacts.evaluation import Evaluation
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


class ReleaseMetrics(Artifact):
    """``metrics.json``: the evaluation and the released generator's conversion checks."""

    evaluate: Evaluation
    convert_tflite: GeneratorConversion
