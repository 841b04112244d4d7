"""Architecture rules: the import-linter contracts hold, ``--help`` stays light, nothing happens at import.

The contracts themselves (layers, a Prefect-free core, one owner per outside library) live in
``pyproject.toml`` under ``[tool.importlinter]``; ``make lint`` runs them too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The model code MLflow stores with each version: it runs MLflow's set_model() on import by design.
STORED_CODE = "retrainer.model.registry.serving"


def _modules(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name != STORED_CODE:
            found.append(name)
    return found


def _run_python(code: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_the_import_contracts_hold() -> None:
    done = subprocess.run(
        [str(BIN / "lint-imports"), "--no-logo", "--no-cache"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_every_core_module_is_held_to_the_prefect_free_contract() -> None:
    # A new module must join the forbidden contract's list (the exhaustive layers contract names it too).
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    [prefect_free] = [c for c in contracts["contracts"] if c.get("forbidden_modules") == ["prefect"]]
    children = {p.stem for p in (ROOT / "retrainer").iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    core = {f"retrainer.{name}" for name in children - {"__init__", "app"}}
    assert set(prefect_free["source_modules"]) == core


def test_help_imports_no_heavy_library(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from retrainer.app.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ['prefect', 'mlflow', 'lightgbm', 'evidently', 'polars', 'pandas', 'sklearn', 'numpy',"
        " 'fastapi', 'uvicorn', 'httpx', 'pydantic', 'sqlalchemy', 'boto3', 'botocore', 'psycopg']\n"
        "print('loaded:' + ','.join(m for m in heavy if m in sys.modules))"
    )
    assert _run_python(code, tmp_path).splitlines()[-1] == "loaded:"


def test_importing_every_module_creates_nothing(tmp_path: Path) -> None:
    modules = [m for package in ("retrainer", "tasks", "flows", "deployments") for m in _modules(package)]
    assert len(modules) > 40
    _run_python("".join(f"import {name}\n" for name in modules), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
