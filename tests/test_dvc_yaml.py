"""dvc.yaml stays true to the code: each stage lists exactly the pipeline/ modules its command
imports (transitively) and exactly the params it reads."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from pipeline.data.prepare import PrepareConfig
from pipeline.data.styles import StyleConfig
from pipeline.export.bundle import BundleConfig
from pipeline.export.encoder import ExportEncoderConfig
from pipeline.export.onnx_export import ExportOnnxConfig
from pipeline.export.onnx_simplify import SimplifyOnnxConfig
from pipeline.export.strip_heads import StripHeadsConfig
from pipeline.export.stylizer import ExportStylizerConfig, FaceModelsConfig
from pipeline.export.tflite import ConvertTfliteConfig
from pipeline.metrics.evaluate import EvaluateConfig
from pipeline.metrics.inversion import EvaluateEncoderConfig
from pipeline.metrics.reference import FidConfig, ReferenceStatsConfig
from pipeline.metrics.stylizer import EvaluateStylizersConfig
from pipeline.profiling.speed_data import MeasureLatencyConfig
from pipeline.profiling.speed_model import FitSpeedModelConfig
from pipeline.provenance import ENCODER_SECTIONS, MODEL_SECTIONS, stylizer_sections
from pipeline.search.architecture import SearchSection
from pipeline.training.distill import DistillConfig
from pipeline.training.encoder import TrainEncoderConfig
from pipeline.training.stylize import StylizeConfig
from pipeline.training.teacher import TeacherConfig, TrainTeacherConfig

CONFIGS = {"prepare": PrepareConfig, "teacher": TeacherConfig,
           "train_teacher": TrainTeacherConfig, "distill": DistillConfig,
           "strip_heads": StripHeadsConfig,
           "export_onnx": ExportOnnxConfig, "simplify_onnx": SimplifyOnnxConfig,
           "convert_tflite": ConvertTfliteConfig, "reference_stats": ReferenceStatsConfig,
           "evaluate": EvaluateConfig, "bundle": BundleConfig,
           "train_encoder": TrainEncoderConfig, "export_encoder": ExportEncoderConfig,
           "evaluate_encoder": EvaluateEncoderConfig, "stylize": StylizeConfig,
           "face_models": FaceModelsConfig, "export_stylizer": ExportStylizerConfig,
           "evaluate_stylizers": EvaluateStylizersConfig,
           "measure_latency": MeasureLatencyConfig, "fit_speed_model": FitSpeedModelConfig,
           "search_architecture": SearchSection}
# Sections read by several stages, besides their own.
SHARED = {"teacher": ["train_teacher"], "reference_stats": ["fid"], "evaluate": ["fid"],
          "evaluate_stylizers": ["styles"], "search_architecture": ["distill"]}
# The per-style stages (`foreach` over the styles section): what each reads, for style ${key}.
PER_STYLE = {"prepare_styles": ["styles.${key}", "prepare.resolution"]}
# Stages that record a hash of every section their artifact depends on (pipeline.provenance)
# list all of those sections, so that the hash they wrote stays current.
PROVENANCE_STAGES = {"convert_tflite": MODEL_SECTIONS, "export_encoder": ENCODER_SECTIONS,
                     "export_stylizer": stylizer_sections("${key}")}
# A `foreach` stage is checked through its template (`do`).
STAGES = {name: stage.get("do", stage)
          for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()}


def module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def project_imports(module: str) -> set[str]:
    """Files of the project's own modules imported by ``module``, transitively (package
    ``__init__`` files, which hold only docstrings, excluded)."""
    seen, todo = set(), [module]
    while todo:
        path = module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            todo += [n for n in names if n.split(".")[0] in ("pipeline", "stages")]
    return {p.relative_to(ROOT).as_posix() for p in seen if p.name != "__init__.py"}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_lists_exactly_the_modules_it_imports(name):
    stage = STAGES[name]
    module = re.search(r"-m (stages\.\w+)", stage["cmd"]).group(1)
    listed = {d for d in stage["deps"] if d.startswith(("pipeline/", "stages/"))}
    assert listed == project_imports(module)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_lists_exactly_the_params_it_reads(name):
    params = STAGES[name]["params"]
    if name in PROVENANCE_STAGES:
        assert params == list(PROVENANCE_STAGES[name])
        return
    if name in PER_STYLE:
        assert params == PER_STYLE[name]
        return
    fields = set(CONFIGS[name].model_fields)
    assert (params == [name, *SHARED.get(name, [])]
            or set(params) == {f"{name}.{field}" for field in fields})


def test_params_yaml_loads_and_its_models_are_the_documented_presets():
    from pipeline.config import load_config
    from pipeline.models.blazestylegan import PRESETS as BLAZE_PRESETS
    from pipeline.models.stylegan2 import PRESETS

    configs = {name: load_config(ROOT / "params.yaml", name, cls)
               for name, cls in {**CONFIGS, "fid": FidConfig}.items()}
    styles = yaml.safe_load((ROOT / "params.yaml").read_text())["styles"]
    assert len(styles) >= 2  # the embedded default: two procedural styles at least
    for style in styles:
        assert load_config(ROOT / "params.yaml", f"styles.{style}", StyleConfig).images >= 1
    assert configs["train_teacher"].model == PRESETS["tiny-32"]
    assert configs["distill"].student == BLAZE_PRESETS["blaze-tiny-32"]
    assert configs["prepare"].resolution == configs["distill"].student.resolution == 32
