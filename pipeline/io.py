"""Atomic file output and hashing.

Every artifact is written under a temporary name next to its final path and renamed into place only
once complete, so an interrupted or failed stage never leaves a half-written artifact behind.
``os.replace`` is atomic on POSIX when source and destination are on the same filesystem, which is
why the temporary always lives in the destination's own directory.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _tmp_sibling(path: Path, directory: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-"
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    fd, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
    os.close(fd)
    return Path(name)


def _sweep_stale(path: Path) -> None:
    """Delete temporaries left next to ``path`` by a writer that was killed (SIGKILL, power loss)."""
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*"):
            if ".tmp-" in stale.name or ".old-" in stale.name:
                _remove(stale)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; move it onto ``path`` only if the block succeeds.

    With ``directory=True`` the temporary is an empty directory and ``path`` (a file or a directory
    from an earlier run) is replaced whole. On any exception the temporary is deleted and ``path``
    is left exactly as it was.
    """
    path = Path(path)
    _sweep_stale(path)
    tmp = _tmp_sibling(path, directory)
    try:
        yield tmp
        if directory:
            os.chmod(tmp, 0o755)  # mkdtemp creates 0700 directories
            # A directory cannot be renamed over a non-empty one: move the old one aside, move the
            # new one in, then delete the old. Readers never see a mixed artifact; for an instant
            # between the two renames there is none, and if the second rename fails the old one
            # is put back.
            old = None
            if path.exists() or path.is_symlink():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                _remove(old)
                os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                if old is not None:
                    os.replace(old, path)
                raise
            if old is not None:
                _remove(old)
        else:
            os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically. NaN and infinities are
    refused (ValueError): they are not JSON, and metrics files must stay readable everywhere."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
