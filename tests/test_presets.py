"""scripts/preset.py: the real jobs' `dvc exp run -S` overrides give params every stage accepts."""

import shutil
import subprocess
import sys

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from conftest import ROOT
from pipeline.config import load_config
from test_dvc_yaml import CONFIGS


@pytest.mark.parametrize("job, extra", [("distill-ffhq-256", ["--teacher-file", "ffhq-256.pt"]),
                                        ("train-ffhq-256", [])])
def test_a_job_preset_applied_by_dvc_gives_valid_params(tmp_path, job, extra):
    printed = subprocess.run([sys.executable, "scripts/preset.py", job, *extra, "--data",
                              "data/raw/ffhq-256.zip"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split("\n")
    overrides = [line.removeprefix("-S ") for line in printed if line]
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    apply_overrides(str(params), overrides)  # what `dvc exp run -S` does to params.yaml
    configs = {name: load_config(params, name, cls) for name, cls in CONFIGS.items()}
    student, encoder = configs["distill"].student, configs["train_encoder"].encoder
    assert configs["prepare"].resolution == student.resolution == encoder.resolution == 256
    assert (encoder.num_ws, encoder.w_dim) == (student.num_ws, student.w_dim)
    assert configs["distill"].batch_size == 32 and configs["distill"].g_betas == [0.9, 0.999]
    assert configs["distill"].perceptual == "vgg19-imagenet"
    values = yaml.safe_load(params.read_text())
    assert values["faces"] == "data/raw/ffhq-256.zip"
    source = values["teacher"]["source"]
    if job == "train-ffhq-256":
        assert source == "train" and configs["train_teacher"].model.resolution == 256
    else:
        assert source == "ffhq-256.pt"


def test_an_import_job_without_its_checkpoint_is_refused():
    result = subprocess.run([sys.executable, "scripts/preset.py", "distill-ffhq-256", "--data",
                             "data/raw/ffhq.zip"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "--teacher-file" in result.stderr
