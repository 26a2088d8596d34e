"""The shape of the library (README "Development"): layers that import one way only, every module
in a layer, and functions short enough to read, except those the README names."""

import ast
import subprocess
import sys
import tomllib

from conftest import ROOT

CONTRACT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
# Functions allowed over MAX_LINES, with the reason the README gives.
LONG_FUNCTIONS = {
    # One face drawn top to bottom (background, hair, face, features, lighting): splitting it
    # would scatter one picture's painting order over many functions.
    ("pipeline/data/synthetic.py", "render_face"),
}
MAX_LINES = 80


def test_layers_import_one_way_only():
    """import-linter's layers contract (pyproject.toml): a failure names the offending import."""
    result = subprocess.run([sys.executable, "-c",
                             "from importlinter.cli import lint_imports_command;"
                             " lint_imports_command()", "--no-logo"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_every_library_module_is_in_a_layer():
    layered = {name.strip() for layer in CONTRACT["contracts"][0]["layers"]
               for name in layer.replace("|", ":").split(":")}
    modules = {f"pipeline.{p.stem if p.is_file() else p.name}"
               for p in (ROOT / "pipeline").iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert modules - layered == set(), "add these to a layer in pyproject.toml"


def test_no_function_is_longer_than_the_readme_allows():
    long = set()
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > MAX_LINES:
                    long.add((path.relative_to(ROOT).as_posix(), node.name))
    assert long == LONG_FUNCTIONS
