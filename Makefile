# retrainer: `make demo` runs the whole story, `make test` runs the tests.
# Both build .venv from requirements.lock when it is missing or older than the lock. Its packages are
# compiled to bytecode at install: where PYTHONDONTWRITEBYTECODE is set, every process would otherwise
# compile Prefect and MLflow from source again (seconds per command).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed
SERVING_VENV := .venv-serving
SERVING_STAMP := $(SERVING_VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: install demo test test-ui test-scale lint typecheck docs check lock bench bench-smoke bench-drift bench-decisions bench-traffic bench-scale scale-engines clean

install: $(STAMP) $(SERVING_STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python --require-hashes --compile-bytecode requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

# A bare environment holding only what a served champion requires (mlflow, lightgbm, numpy, pandas at
# the locked versions), without retrainer: the serving-contract test loads the champion there.
$(SERVING_STAMP): requirements.lock $(STAMP)
	$(BIN)/uv venv --quiet --allow-existing --python $(BIN)/python $(SERVING_VENV)
	$(BIN)/uv pip install --quiet --python $(SERVING_VENV)/bin/python -c requirements.lock mlflow lightgbm numpy pandas
	touch $@

lock:
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements.lock

demo: install
	$(BIN)/retrainer demo $(if $(DEMO_DIR),--workdir $(DEMO_DIR)) $(if $(KEEP),--keep)

# Test files run on TEST_WORKERS processes (pytest-xdist), each file whole on one worker so that its
# servers and fixtures are shared; the slowest tests are listed at the end.
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15

# The decision record in the Prefect UI, in headless Chromium from Debian's package (installed if missing).
test-ui: install
	command -v chromium >/dev/null || (timeout 300 apt-get update -q && timeout 600 apt-get install -y -q chromium) \
		|| echo "!! Debian's chromium could not be installed: the UI test will be skipped"
	$(BIN)/python -m pytest -m ui

# The scaled layout on this machine (tests/scale): PostgreSQL 15, Redis, SeaweedFS S3, two Prefect API replicas
# + one services process, MLflow on PostgreSQL/S3, process workers. Debian's postgresql and redis-server are
# installed if missing; the tests fail (not skip) without them.
test-scale: install scale-engines
	RETRAINER_SCALE_REQUIRED=1 $(BIN)/python -m pytest -m scale tests/scale -p no:randomly

scale-engines:
	test -x /usr/lib/postgresql/15/bin/initdb && command -v redis-server >/dev/null \
		|| (timeout 300 apt-get update -q && timeout 600 apt-get install -y -q postgresql redis-server)

# Every measure of bench/bench.py at 100k and 1M rows (about an hour here); writes bench/RESULTS.md.
bench: install
	$(BIN)/python bench/bench.py $(if $(SIZES),--sizes $(SIZES))

# The same scripts at a small size, so that they keep working (CI runs this); writes bench/out/smoke/.
bench-smoke: install
	$(BIN)/python bench/bench.py --sizes 20000 --runs 1 --skip-tests --out bench/out/smoke/RESULTS.md
	$(BIN)/python bench/decisions.py --scenarios abrupt --paths scheduled --batches 8 --rows 1000 \
		--out bench/out/smoke/DECISIONS.md
	$(BIN)/python bench/traffic.py --rows 20000 --inference-rows 60000 --labels 20000 --out bench/out/smoke/TRAFFIC.md

# Monitor drift check vs Evidently's DataDriftPreset on the full frames, 6 shift scenarios (~25 min at 1M rows);
# writes bench/out/drift/RESULTS.md.
bench-drift: ROWS ?= 1000000
bench-drift: install
	$(BIN)/python bench/drift.py --rows $(ROWS)

# Seeded labelled streams (6 scenarios) replayed through the product, scheduled and event-driven, against
# never/newest/window baselines, each scored on the next batch (~40 min here); writes bench/DECISIONS.md
# and bench/DECISIONS.json. DECISIONS_ARGS passes options, e.g. "--scenarios abrupt --batches 8 --rows 1500".
DECISIONS_ARGS ?=
bench-decisions: install
	$(BIN)/python bench/decisions.py $(DECISIONS_ARGS)

# The scaled layout on this machine: the 3-model event-driven story with 1 worker vs 2, and one retrain at
# 100k rows on the embedded default vs the scaled layout (~15 min here); writes bench/RESULTS-scale.md.
bench-scale: install scale-engines
	$(BIN)/python bench/scale.py $(if $(ROWS),--rows $(ROWS))

# Unlabelled traffic at scale: a 1M-row inference batch observed and checked for drift, then 1M late
# labels joined to 10M stored inference rows, each step in a fresh process (~10 min here);
# writes bench/RESULTS-traffic.md.
bench-traffic: install
	$(BIN)/python bench/traffic.py

# Style, then the architecture: import-linter's contracts in pyproject.toml (layers, a Prefect-free
# core, one owner per outside library).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo

# The reference in docs/ as a site (site/); --strict fails on a broken link or a documented subpackage that moved.
docs: install
	$(BIN)/mkdocs build --strict --site-dir site

typecheck: install
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) $(SERVING_VENV) site .pytest_cache .mypy_cache .ruff_cache
