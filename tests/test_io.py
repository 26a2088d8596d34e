"""Atomic writes: an artifact is either the old complete one or the new complete one."""

import pytest

from pipeline.io import atomic_path, sha256_bytes, sha256_file, write_json


def test_file_replaced_only_on_success(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind
    with atomic_path(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new"


def test_directory_replaced_whole(tmp_path):
    out = tmp_path / "sub" / "artifact"
    with atomic_path(out, directory=True) as tmp:
        (tmp / "x").write_text("1")
        (tmp / "y").write_text("2")
    assert out.stat().st_mode & 0o777 == 0o755  # readable by others, like any directory
    with pytest.raises(KeyError):
        with atomic_path(out, directory=True) as tmp:
            (tmp / "z").write_text("3")
            raise KeyError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["x", "y"]
    with atomic_path(out, directory=True) as tmp:
        (tmp / "z").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["z"]  # old files do not linger
    assert sorted(p.name for p in out.parent.iterdir()) == ["artifact"]


def test_json_and_hashes(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    data = (tmp_path / "m.json").read_bytes()
    assert data.startswith(b'{\n  "a"')  # sorted keys: stable diffs in git
    assert sha256_file(tmp_path / "m.json") == sha256_bytes(data)


def test_temporaries_of_a_killed_writer_are_swept(tmp_path):
    out = tmp_path / "artifact"
    (tmp_path / ".artifact.tmp-abc123").mkdir()   # left by a writer killed mid-way
    (tmp_path / ".artifact.old-999").mkdir()
    (tmp_path / ".other.tmp-x").mkdir()           # someone else's: left alone
    with atomic_path(out, directory=True) as tmp:
        (tmp / "x").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-x", "artifact"]


def test_write_json_refuses_non_finite_numbers_and_leaves_nothing(tmp_path):
    import pytest

    from pipeline.io import write_json

    with pytest.raises(ValueError):
        write_json(tmp_path / "m.json", {"psnr": float("inf")})
    assert list(tmp_path.iterdir()) == []
