"""Typed JSON artifacts: the base of their models, one reader and one writer.

A reader validates the whole file against its model before using any of it, so a file written by
another version of its stage (a metric renamed, a block missing) fails at the start of the reading
stage with one line that names the file and the field, not with a ``KeyError`` halfway through.
The writer keeps the bytes of :func:`pipeline.io.write_json` (indented, sorted keys, NaN refused),
so ``dvc metrics diff`` compares files written before and after the models existed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import pydantic

from pipeline.config import describe_errors
from pipeline.errors import DataError
from pipeline.io import write_json

MAX_ERRORS = 6  # field errors named in the message; a renamed metric repeats in every block


class ArtifactError(DataError):
    """An artifact written by an earlier stage is missing, not JSON, or not of its model."""


class Artifact(pydantic.BaseModel):
    """Base of the artifact models: immutable, strict types, no unknown keys (a model that has
    open keys, like the SWD levels, says so with ``extra="allow"`` and types them)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)


ArtifactT = TypeVar("ArtifactT", bound=Artifact)


def omitted(value: Any) -> bool:
    """``Field(exclude_if=omitted)``: a key that is absent from the file rather than null."""
    return value is None


def _field_errors(error: pydantic.ValidationError) -> str:
    # describe_errors names each key "<section>.<field>"; here the file is named instead, so the
    # section is empty and its dot (or, for the file as a whole, its ": ") is dropped.
    lines = [line.removeprefix(".").removeprefix(": ") for line in describe_errors(error, "")]
    more = f"; and {len(lines) - MAX_ERRORS} more" if len(lines) > MAX_ERRORS else ""
    return "; ".join(lines[:MAX_ERRORS]) + more


def read_artifact(path: str | Path, model: type[ArtifactT], stage: str) -> ArtifactT:
    """The artifact at ``path``, validated as ``model``; ``stage`` is the stage that writes it.

    Raises:
        ArtifactError: one line naming ``path`` and what is wrong: not found, not valid JSON, or
            each field that does not match the model (``latency.student.pytorch.mean_ms:
            missing``).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: not found; run the {stage} stage") from None
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return model.model_validate_json(data)
    except pydantic.ValidationError as e:
        invalid = [err for err in e.errors() if err["type"] == "json_invalid"]
        if invalid:
            reason = invalid[0]["ctx"]["error"] if "ctx" in invalid[0] else invalid[0]["msg"]
            raise ArtifactError(f"{path}: not valid JSON ({reason})") from None
        raise ArtifactError(f"{path}: {_field_errors(e)} (written by another version of the "
                            f"{stage} stage? re-run it)") from None


def write_artifact(path: str | Path, artifact: Artifact) -> None:
    """Write ``artifact`` to ``path`` atomically with :func:`pipeline.io.write_json`."""
    # Python mode, not JSON mode: JSON mode would write NaN as null, which write_json refuses.
    write_json(path, artifact.model_dump())
