"""Atomic file output and hashing.

Every artifact is written under a temporary name next to its final path and renamed into place only
once complete, so an interrupted or failed stage never leaves a half-written artifact behind.
``os.replace`` is atomic on POSIX when source and destination are on the same filesystem, which is
why the temporary always lives in the destination's own directory.

A write that fails for a reason of the system's (a full disk, no permission, a parent that is a
file) is a :class:`~pipeline.errors.FileError` naming the artifact's final path (never the
temporary) and the reason, e.g. ``models/teacher.pt: No space left on device``.
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

from pipeline.errors import FileError


def _tmp_sibling(path: Path, directory: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-"
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    fd, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
    os.close(fd)
    return Path(name)


def _sweep_stale(path: Path) -> None:
    """Delete temporaries left next to ``path`` by a writer that was killed (SIGKILL, power
    loss)."""
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*"):
            if ".tmp-" in stale.name or ".old-" in stale.name:
                _remove(stale)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def os_reason(error: OSError) -> str:
    """The system's reason for an OS error, e.g. ``No space left on device``."""
    return error.strerror or str(error) or type(error).__name__


def describe_os_error(error: OSError, path: str | Path | None = None,
                      tmp: Path | None = None) -> str:
    """One line for an OS error: the file it concerns and the system's reason.

    ``path`` names the file when the error does not (a failed ``write()`` carries no file name);
    a file inside the temporary ``tmp`` of :func:`atomic_path` is named by its final place.
    """
    reason = os_reason(error)
    name = error.filename
    if name is not None and tmp is not None and path is not None:
        inside = Path(name)
        if inside == tmp or tmp in inside.parents:
            name = Path(path) / inside.relative_to(tmp) if inside != tmp else path
    if name is None:
        name = path
    return f"{name}: {reason}" if name is not None else reason


@contextlib.contextmanager
def atomic_path(path: str | Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; move it onto ``path`` only if the block succeeds.

    With ``directory=True`` the temporary is an empty directory and ``path`` (a file or a directory
    from an earlier run) is replaced whole. On any exception the temporary is deleted and ``path``
    is left exactly as it was; an ``OSError`` (full disk, permissions...) becomes a
    :class:`~pipeline.errors.FileError` naming ``path``.
    """
    path = Path(path)
    try:
        _sweep_stale(path)
        tmp = _tmp_sibling(path, directory)
    except OSError as e:
        raise FileError(f"cannot create {path}: {os_reason(e)}") from None
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
    except BaseException as e:
        with contextlib.suppress(OSError):
            _remove(tmp)
        if isinstance(e, OSError):
            raise FileError(describe_os_error(e, path, tmp)) from None
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
