"""Where an artifact came from: the git commit the producing run started from, whether the code
had changes not in that commit, and a hash of the params that produced it. Recorded in the interface
JSON of each exported model and in the release's model card."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from pipeline.config import read_yaml
from pipeline.errors import ConfigError

# The params.yaml sections a deployed generator depends on, from the dataset (`faces`, the
# source `prepare` reads) to the converted file. A stage that records params_sha256 lists all of
# them as DVC params, so that the hash it wrote is always the hash of the current values.
MODEL_SECTIONS = ("faces", "prepare", "teacher", "train_teacher", "distill", "strip_heads",
                  "export_onnx", "simplify_onnx", "convert_tflite")
# The sections the exported inversion encoder depends on (its generator's, then its own).
ENCODER_SECTIONS = ("faces", "prepare", "teacher", "train_teacher", "distill", "train_encoder",
                    "export_encoder")


def stylizer_sections(style: str) -> tuple[str, ...]:
    """The sections a style's exported stylizer depends on: the encoder's, then the style's own
    entry of ``styles``, the fine-tune's and the export's."""
    return (*ENCODER_SECTIONS, f"styles.{style}", "stylize", "export_stylizer")

# The code that defines the models: library, stages, pipeline definition, pinned dependencies.
# Params are not in it (params_sha256 pins them exactly, and `dvc exp run -S` changes them by
# design); nor is what DVC rewrites during `dvc repro` (dvc.lock, metrics).
CODE_PATHS = ("pipeline", "stages", "dvc.yaml", "pyproject.toml")


def _git(*args: str, cwd: Path) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip()


def git_state(cwd: str | Path = ".") -> dict[str, Any]:
    """{"git_commit": HEAD's sha, "code_dirty": whether :data:`CODE_PATHS` differ from it,
    untracked files included}; None where git cannot tell (e.g. outside a repository)."""
    cwd = Path(cwd)
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if commit is None:
        return {"git_commit": None, "code_dirty": None}
    changes = _git("--no-optional-locks", "status", "--porcelain", "--", *CODE_PATHS, cwd=cwd)
    return {"git_commit": commit, "code_dirty": None if changes is None else bool(changes)}


def params_sha256(params: str | Path, sections: tuple[str, ...] = MODEL_SECTIONS) -> str:
    """SHA-256 of the named sections of a params file, as canonical JSON (key order, comments and
    formatting do not count; values do)."""
    data, values, missing = read_yaml(params), {}, []
    for section in sections:  # a dotted name (styles.ink) is a mapping inside a section
        value = data
        for part in section.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            missing.append(section)
        values[section] = value
    if missing:
        raise ConfigError(f"{params}: missing section(s) {', '.join(missing)}")
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def provenance(params: str | Path, sections: tuple[str, ...] = MODEL_SECTIONS) -> dict[str, Any]:
    """Git state of the working directory and the params hash, for an artifact's metadata."""
    return {**git_state(), "params_sha256": params_sha256(params, sections),
            "params_sections": list(sections)}
