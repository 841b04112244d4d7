"""Architecture rules: a Prefect-free core, one module per outside library, nothing done at import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "retrainer"
# serving.py is the model code MLflow stores with each version: it must stand alone, so it imports
# MLflow and LightGBM itself instead of going through retrainer.
OWNERS = {
    "mlflow": {"registry.py", "serving.py"},
    "lightgbm": {"training.py", "serving.py"},
    "evidently": {"drift.py"},
    "fastapi": {"webhook.py"},
    "uvicorn": {"webhook.py"},
    "httpx": {"sender.py"},
}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


# The command-line entry points run flows; everything else in the package is the Prefect-free core.
ENTRY_POINTS = {"cli.py", "demo.py"}


def test_core_never_imports_prefect() -> None:
    core = [p for p in CORE.glob("*.py") if p.name not in ENTRY_POINTS]
    offenders = [p.name for p in core if {"prefect", "flows", "tasks"} & _imported_roots(p)]
    assert offenders == []


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_each_outside_library_is_imported_by_its_own_module_only(library: str) -> None:
    importers = {p.name for p in CORE.glob("*.py") if library in _imported_roots(p)}
    assert importers <= OWNERS[library]


def _run_python(code: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_help_imports_no_heavy_library(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from retrainer.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ['prefect', 'mlflow', 'lightgbm', 'evidently', 'polars', 'pandas', 'sklearn', 'numpy',"
        " 'fastapi', 'uvicorn', 'httpx']\n"
        "print('loaded:' + ','.join(m for m in heavy if m in sys.modules))"
    )
    assert _run_python(code, tmp_path).splitlines()[-1] == "loaded:"


def test_importing_every_module_creates_nothing(tmp_path: Path) -> None:
    modules = sorted(p.stem for p in CORE.glob("*.py") if p.stem not in {"__init__", "serving"})
    imports = "".join(f"import retrainer.{name}\n" for name in modules)
    imports += "import flows.ingest, flows.monitor, flows.retrain, flows.rollback, deployments.serve\n"
    _run_python(imports, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
