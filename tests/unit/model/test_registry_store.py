"""Opening a fresh SQLite MLflow store from several processes at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

OPEN_AND_USE = """
import sys
from pathlib import Path
from retrainer.model.registry import Registry

home = Path(sys.argv[1])
registry = Registry(f"sqlite:///{home / 'mlflow.db'}", home / "mlartifacts", home / "locks")
print(registry.experiment_id(f"model{sys.argv[2]}"))
"""


def test_processes_opening_a_fresh_store_at_once_all_succeed(tmp_path: Path) -> None:
    # Without the store lock, concurrent first opens race on MLflow's migrations
    # ("table _alembic_tmp_... already exists") and some processes fail.
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AND_USE, str(tmp_path), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in processes]
    assert [code for code, _ in results] == [0, 0, 0, 0], [err[-2000:] for _, err in results]
