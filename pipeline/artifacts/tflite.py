"""The ``convert_tflite`` output directory: ``{name}_{precision}.tflite`` with an interface card
``{name}_{precision}.json`` beside each, for the student and the teacher."""

from __future__ import annotations

from pathlib import Path

GENERATORS = ("student", "teacher")
PRECISIONS = ("float32", "float16")


def model_file(directory: str | Path, name: str, precision: str) -> Path:
    """The TFLite model of generator ``name`` at ``precision`` in ``directory``."""
    return Path(directory) / f"{name}_{precision}.tflite"


def card_file(directory: str | Path, name: str, precision: str) -> Path:
    """The interface card (JSON) beside :func:`model_file`."""
    return model_file(directory, name, precision).with_suffix(".json")
