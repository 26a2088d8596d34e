"""params.yaml sections map to strict, frozen configs; every mistake names the file and the key."""

import subprocess
import sys

import pydantic
import pytest

from conftest import ROOT, TINY_PREPARE
from pipeline.config import load_config, read_yaml
from pipeline.data.prepare import PrepareConfig
from pipeline.errors import ConfigError


def test_loads_typed_frozen_config(prepare_params):
    config = load_config(prepare_params(), "prepare", PrepareConfig)
    assert config.resolution == 32 and config.synthetic_images == 12
    with pytest.raises(pydantic.ValidationError):
        config.resolution = 64  # frozen


def test_repository_params_are_valid():
    load_config(ROOT / "params.yaml", "prepare", PrepareConfig)


@pytest.mark.parametrize("overrides, key, words", [
    ({"resolutoin": 64}, "prepare.resolutoin", "unknown key"),
    ({"resolution": 64.0}, "prepare.resolution", "valid integer"),
    ({"resolution": "64"}, "prepare.resolution", "valid integer"),
    ({"resolution": True}, "prepare.resolution", "valid integer"),
    ({"resolution": 48}, "prepare.resolution", "power of two"),
    ({"resolution": 4}, "prepare.resolution", "greater than or equal to 8"),
    ({"min_images": 0}, "prepare.min_images", "greater than or equal to 1"),
])
def test_bad_values_name_file_and_key(prepare_params, overrides, key, words):
    path = prepare_params(**overrides)
    with pytest.raises(ConfigError) as error:
        load_config(path, "prepare", PrepareConfig)
    message = str(error.value)
    assert str(path) in message and key in message and words in message


def test_missing_key(tmp_path):
    values = dict(TINY_PREPARE)
    del values["seed"]
    from conftest import write_params
    path = write_params(tmp_path / "params.yaml", prepare=values)
    with pytest.raises(ConfigError, match=r"prepare\.seed: missing"):
        load_config(path, "prepare", PrepareConfig)


@pytest.mark.parametrize("text, words", [
    ("other: {a: 1}\n", "no 'prepare' section"),
    ("prepare: 3\n", "must be a mapping"),
    ("- a\n- b\n", "mapping of sections"),
    ("prepare: {seed: [1,\n", "invalid YAML"),
    ("prepare:\n  seed: 1\n  seed: 2\n", "duplicate key 'seed'"),
])
def test_malformed_files(tmp_path, text, words):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words) as error:
        load_config(path, "prepare", PrepareConfig)
    assert str(path) in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        read_yaml(tmp_path / "nope.yaml")


def test_stage_fails_before_any_work_without_traceback(prepare_params, tmp_path):
    params = prepare_params(resolution="big")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "stages.prepare", "--source", "synthetic", "--params", str(params),
         "--out", str(out), "--metrics", str(tmp_path / "m.json"),
         "--preview", str(tmp_path / "p.png")],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert "prepare.resolution" in result.stderr and str(params) in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "m.json").exists()
