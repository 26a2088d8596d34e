"""Where an artifact came from: the git commit of the code, whether that code had local changes,
and a hash of the params that produced it. Recorded in the interface JSON of each exported model
and in the release's model card."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from pipeline.config import read_yaml
from pipeline.errors import ConfigError

# The params.yaml sections a deployed generator depends on, from the dataset to the converted
# file. A stage that records params_sha256 lists all of them as DVC params, so that the hash it
# wrote is always the hash of the current values.
MODEL_SECTIONS = ("prepare", "train_teacher", "distill", "strip_heads", "export_onnx",
                  "simplify_onnx", "convert_tflite")

# What defines the models besides data: code, pipeline definition, params, pinned dependencies.
# Changes elsewhere (e.g. DVC rewriting dvc.lock or the metrics during `dvc repro`) are not local
# changes to the source.
SOURCE_PATHS = ("pipeline", "stages", "dvc.yaml", "params.yaml", "pyproject.toml")


def _git(*args: str, cwd: Path) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip()


def git_state(cwd: str | Path = ".") -> dict[str, Any]:
    """{"git_commit": HEAD's sha, "git_dirty": whether :data:`SOURCE_PATHS` differ from it};
    both None outside a git repository."""
    cwd = Path(cwd)
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    changes = _git("status", "--porcelain", "--untracked-files=no", "--", *SOURCE_PATHS, cwd=cwd)
    return {"git_commit": commit, "git_dirty": bool(changes)}


def params_sha256(params: str | Path, sections: tuple[str, ...] = MODEL_SECTIONS) -> str:
    """SHA-256 of the named sections of a params file, as canonical JSON (key order, comments and
    formatting do not count; values do)."""
    data = read_yaml(params)
    missing = [s for s in sections if s not in data]
    if missing:
        raise ConfigError(f"{params}: missing section(s) {', '.join(missing)}")
    canonical = json.dumps({s: data[s] for s in sections}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def provenance(params: str | Path, sections: tuple[str, ...] = MODEL_SECTIONS) -> dict[str, Any]:
    """Git state of the working directory and the params hash, for an artifact's metadata."""
    return {**git_state(), "params_sha256": params_sha256(params, sections),
            "params_sections": list(sections)}
