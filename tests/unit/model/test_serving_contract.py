"""The serving contract: the champion, loaded with plain MLflow, takes frames as users have them.

One model is trained on the synthetic batches (float, integer, nullable integer and boolean
numeric features, text categories, and a categorical feature carried by integers), registered in a
real SQLite MLflow store and served three ways: ``mlflow.pyfunc.load_model``, ``mlflow models
serve`` on loopback and ``mlflow models predict``, and once in a fresh environment without retrainer.
"""

from __future__ import annotations

import datetime
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest
from mlflow.exceptions import MlflowException

from retrainer.config import ModelConfig, parse_project
from retrainer.data.contract import check_batch, schema_for
from retrainer.data.features import FeatureSpec, feature_matrix
from retrainer.data.synth import demo_config, make_batch
from retrainer.model.registry import Registry
from retrainer.model.registry.serving import encode_frame
from retrainer.model.training import TrainedModel, train
from tests.e2e.conftest import free_port, wait_for

BIN = Path(sys.executable).parent
# Built by `make install` from the locked mlflow, lightgbm, numpy and pandas only.
SERVING_VENV = Path(__file__).resolve().parents[3] / ".venv-serving"
MODEL = "served"
TIERS = ["1", "2", "3"]


@dataclass
class Served:
    registry: Registry
    trained: TrainedModel
    tracking_uri: str
    store: Path

    @property
    def uri(self) -> str:
        return f"models:/{MODEL}@champion"

    def env(self) -> dict[str, str]:
        # MLflow starts its server as `uvicorn` from PATH: the one beside this interpreter.
        path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, "MLFLOW_TRACKING_URI": self.tracking_uri, "PATH": path}


def _config() -> ModelConfig:
    raw = demo_config()
    model = raw["models"]["churn"]  # type: ignore[index]
    model["categorical"]["tier"] = TIERS
    return parse_project(raw, "test").model("churn")


def _batch(rows: int, seed: int) -> pl.DataFrame:
    """A synthetic batch plus ``tier``, a categorical feature whose values are integers."""
    frame = make_batch(rows, seed=seed)
    tier = np.random.default_rng(seed).integers(1, 4, rows)
    return frame.with_columns(tier=pl.Series(tier, dtype=pl.Int64))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("serving")
    store = root / "mlflow.db"
    shutil.copy(mlflow_template, store)
    tracking_uri = f"sqlite:///{store}"
    registry = Registry(tracking_uri, root / "artifacts", root / "locks")
    config = _config()
    frame = _batch(6000, seed=11)
    spec = FeatureSpec.build(config, schema_for(config, frame.columns, None))
    trained = train(frame.head(5000), frame.slice(5000), spec, config.lightgbm)
    run_id = registry.start_run(MODEL, "contract", {}, {})
    version = registry.register(MODEL, run_id, trained, frame.head(5).to_pandas())
    registry.set_alias(MODEL, "champion", version.version)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    yield Served(registry, trained, tracking_uri, store)
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def champion(served: Served) -> mlflow.pyfunc.PyFuncModel:
    return mlflow.pyfunc.load_model(served.uri)


def _raw(rows: int = 300, seed: int = 21) -> pd.DataFrame:
    """A frame as a user has it: ints, a nullable int with gaps, bools, text categories, an extra column."""
    frame = _batch(rows, seed).drop("churned").to_pandas(use_pyarrow_extension_array=False)
    frame["support_calls"] = pd.array(frame["support_calls"].to_numpy(), dtype="Int64")
    frame.loc[::13, "tenure"] = np.nan
    frame.loc[::17, "plan"] = None
    frame.loc[::19, "region"] = "atlantis"  # a level the model never saw
    frame["comment"] = "free text the model does not read"
    return frame


def _retyped(frame: pd.DataFrame, **columns: Callable[[pd.Series], object]) -> pd.DataFrame:
    out = frame.copy()
    for name, convert in columns.items():
        out[name] = convert(out[name])
    return out


def _int_dtype(dtype: str) -> Callable[[pd.Series], object]:
    return lambda s: s.astype(dtype)


VARIANTS: dict[str, dict[str, Callable[[pd.Series], object]]] = {
    "narrow ints": {"age": _int_dtype("int8"), "tier": _int_dtype("int16")},
    "int32": {"age": _int_dtype("int32"), "tier": _int_dtype("int32")},
    "unsigned ints": {"age": _int_dtype("uint8"), "tier": _int_dtype("uint64")},
    "floats": {
        "age": _int_dtype("float64"),
        "tier": _int_dtype("float64"),
        "autopay": _int_dtype("float64"),
        "support_calls": lambda s: s.astype("float64"),
    },
    "float32": {"age": _int_dtype("float32"), "monthly_charges": lambda s: s.astype("float32").astype("float64")},
    "nullable": {
        "age": _int_dtype("Int64"),
        "tenure": lambda s: s.astype("Float64"),
        "support_calls": lambda s: s.astype("Float64"),
        "autopay": _int_dtype("boolean"),
        "tier": _int_dtype("Int32"),
    },
    "objects": {
        "age": lambda s: s.astype(object),
        "support_calls": lambda s: pd.Series([None if pd.isna(v) else int(v) for v in s], dtype=object),
        "autopay": lambda s: s.astype(object),
        "tier": lambda s: s.astype(str),
    },
    "numbers as text": {"age": lambda s: s.astype(str), "tier": lambda s: s.astype(str)},
    "bools as ints": {"autopay": _int_dtype("int64")},
    "categoricals": {
        "plan": lambda s: pd.Categorical(s, categories=["gold", "enterprise", "pro", "basic"]),
        "region": lambda s: pd.Categorical(s),
        "tier": lambda s: pd.Categorical(s),
    },
    "pandas strings": {"plan": lambda s: s.astype("string"), "region": lambda s: s.astype("string")},
}


def test_signature_names_every_feature_and_the_metadata_its_kind(served: Served, champion: object) -> None:
    model = mlflow.pyfunc.load_model(served.uri)
    assert model.metadata.get_input_schema().input_names() == served.trained.spec.features
    kinds = model.metadata.metadata["retrainer"]["features"]
    assert kinds["age"] == {"kind": "numeric"}
    assert kinds["tier"] == {"kind": "categorical", "levels": TIERS}


def test_the_same_values_predict_the_same_whatever_dtype_carries_them(
    served: Served, champion: mlflow.pyfunc.PyFuncModel
) -> None:
    raw = _raw()
    expected = champion.predict(raw)
    training_path = served.trained.predict(pl.from_pandas(raw.drop(columns=["comment"])))
    np.testing.assert_allclose(expected, training_path, rtol=0, atol=1e-12)
    for name, columns in VARIANTS.items():
        np.testing.assert_array_equal(champion.predict(_retyped(raw, **columns)), expected, err_msg=name)


@pytest.mark.parametrize("name", [*VARIANTS, "categories as floats with gaps", "categories as numeric text"])
def test_training_and_serving_encode_every_variant_alike(served: Served, name: str) -> None:
    extra = {
        "categories as floats with gaps": {"tier": lambda s: s.astype("float64").where(s.index % 5 != 0, np.nan)},
        "categories as numeric text": {"tier": lambda s: s.astype(str) + ".0"},
    }
    variant = _retyped(_raw(120), **{**VARIANTS, **extra}[name])
    spec = served.trained.spec
    config = _config()
    schema = schema_for(config, [], spec.features)
    stored = check_batch(pl.from_pandas(variant.assign(churned=0)), schema, config, name)
    for training_side in (pl.from_pandas(variant), stored):
        np.testing.assert_array_equal(
            encode_frame(variant, json.loads(spec.to_json())), feature_matrix(training_side, spec), err_msg=name
        )


@pytest.mark.parametrize(
    "values",
    [
        pd.Series(pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"])),
        pd.Series(pd.to_timedelta([1, 2, 3], unit="D")),
        pd.Series([1 + 2j, 3, 4], dtype=complex),
        pd.Series([datetime.date(2026, 1, 1), 41, None], dtype=object),
    ],
)
def test_times_and_complex_numbers_in_a_numeric_column_are_refused(
    champion: mlflow.pyfunc.PyFuncModel, values: pd.Series
) -> None:
    raw = _raw(3)
    raw["age"] = values
    with pytest.raises(MlflowException, match=r"column 'age': .* not numbers \(rule not_castable\)"):
        champion.predict(raw)


def test_missing_values_are_missing_whatever_carries_them(champion: mlflow.pyfunc.PyFuncModel) -> None:
    raw = _raw(40)
    gaps = raw.index % 3 == 0
    with_nan = raw.assign(support_calls=raw["support_calls"].astype("float64").where(~gaps, np.nan))
    with_na = raw.assign(support_calls=raw["support_calls"].where(~gaps, pd.NA))
    objects = [None if g or pd.isna(v) else int(v) for g, v in zip(gaps, raw["support_calls"], strict=True)]
    with_none = raw.assign(support_calls=pd.Series(objects, dtype=object))
    expected = champion.predict(with_nan)
    np.testing.assert_array_equal(champion.predict(with_na), expected)
    np.testing.assert_array_equal(champion.predict(with_none), expected)


def test_retrainer_scores_a_version_exactly_as_mlflow_serves_it(
    served: Served, champion: mlflow.pyfunc.PyFuncModel
) -> None:
    raw = _retyped(_raw(), **VARIANTS["nullable"])
    np.testing.assert_array_equal(served.registry.predict(MODEL, "1", raw), champion.predict(raw))


def test_a_missing_feature_column_is_refused_by_name(champion: mlflow.pyfunc.PyFuncModel) -> None:
    with pytest.raises(MlflowException, match="'age'"):
        champion.predict(_raw(10).drop(columns=["age"]))
    with pytest.raises(MlflowException, match=r"missing feature column\(s\) \['age'\] \(rule missing_column\)"):
        champion.unwrap_python_model().predict(None, _raw(10).drop(columns=["age"]))


@pytest.mark.parametrize(
    ("column", "values", "shown"),
    [
        ("age", ["forty", 41, "n/a"], "'forty', 'n/a'"),
        ("tenure", [12.5, "12,5", None], "'12,5'"),
        ("support_calls", [[1, 2], 3, None], "'[1, 2]'"),
        ("age", [{"years": 4}, 3, 2], "\"{'years': 4}\""),
    ],
)
def test_a_numeric_column_holding_non_numbers_is_refused_never_guessed(
    champion: mlflow.pyfunc.PyFuncModel, column: str, values: list[object], shown: str
) -> None:
    raw = _raw(3)
    raw[column] = pd.Series(values, dtype=object)
    bad = sum(1 for v in values if v is not None and not isinstance(v, int | float))
    with pytest.raises(MlflowException) as caught:
        champion.predict(raw)
    message = caught.value.message
    assert f"column '{column}': {bad} value(s) are not numbers (rule not_castable), e.g. {shown}" in message


def _records_body(frame: pd.DataFrame) -> dict[str, object]:
    return {"dataframe_records": json.loads(frame.to_json(orient="records"))}


def _split_body(frame: pd.DataFrame) -> dict[str, object]:
    return {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}


@pytest.fixture(scope="module")
def model_server(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow models serve`` for the champion on a free loopback port."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("model-server") / "serve.log"
    command = [str(BIN / "mlflow"), "models", "serve", "-m", served.uri, "--env-manager", "local"]
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=served.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(server, f"{url}/ping"), 120, "model server")
        yield url
    except AssertionError:
        raise AssertionError(log_path.read_text()) from None
    finally:
        server.terminate()
        server.wait(30)


def _answers(server: subprocess.Popen[bytes], url: str) -> bool:
    if server.poll() is not None:
        raise AssertionError(f"model server exited with {server.returncode}")
    return httpx.get(url).status_code == 200


@pytest.mark.e2e
@pytest.mark.parametrize("body", [_records_body, _split_body])
def test_mlflow_models_serve_answers_json_with_ints_floats_nulls_and_strings(
    model_server: str, champion: mlflow.pyfunc.PyFuncModel, body: Callable[[pd.DataFrame], dict[str, object]]
) -> None:
    raw = _raw(50)
    answer = httpx.post(f"{model_server}/invocations", json=body(raw), timeout=60)
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"], champion.predict(raw), rtol=0, atol=1e-12)


@pytest.mark.e2e
def test_mlflow_models_serve_refuses_text_in_a_numeric_column_naming_it(model_server: str) -> None:
    raw = _raw(5).astype({"age": object})
    raw.loc[2, "age"] = "forty"
    answer = httpx.post(f"{model_server}/invocations", json=_records_body(raw), timeout=60)
    assert answer.status_code == 400
    assert "column 'age': 1 value(s) are not numbers (rule not_castable), e.g. 'forty'" in answer.json()["message"]


@pytest.mark.e2e
def test_mlflow_models_predict_reads_a_csv(served: Served, champion: mlflow.pyfunc.PyFuncModel, tmp_path: Path) -> None:
    raw = _raw(60)
    source, output = tmp_path / "input.csv", tmp_path / "predictions.json"
    raw.to_csv(source, index=False)
    command = [str(BIN / "mlflow"), "models", "predict", "-m", served.uri, "-i", str(source), "-t", "csv"]
    subprocess.run([*command, "-o", str(output), "--env-manager", "local"], env=served.env(), check=True, timeout=300)
    predicted = json.loads(output.read_text())["predictions"]
    np.testing.assert_allclose(predicted, champion.predict(pd.read_csv(source)), rtol=0, atol=1e-12)


_FRESH_PREDICT = """
import importlib.metadata, importlib.util, json, pickle, sys
import mlflow.pyfunc
assert importlib.util.find_spec("retrainer") is None, "retrainer is importable"
for line in open(sys.argv[1] + "/requirements.txt").read().split():
    name, _, wanted = line.partition("==")
    assert importlib.metadata.version(name) == wanted, (line, importlib.metadata.version(name))
frame = pickle.load(open(sys.argv[2], "rb"))
print(json.dumps(mlflow.pyfunc.load_model(sys.argv[1]).predict(frame).tolist()))
"""


@pytest.mark.e2e
def test_the_champion_loads_and_predicts_where_retrainer_is_not_installed(
    served: Served, champion: mlflow.pyfunc.PyFuncModel, tmp_path: Path
) -> None:
    python = SERVING_VENV / "bin" / "python"
    assert python.exists(), f"{SERVING_VENV} is missing: `make install` builds it"
    local = Path(mlflow.artifacts.download_artifacts(served.uri, dst_path=str(tmp_path / "model")))
    raw = _retyped(_raw(80), **VARIANTS["nullable"])
    frame_file, script = tmp_path / "frame.pkl", tmp_path / "predict.py"
    frame_file.write_bytes(pickle.dumps(raw))
    script.write_text(_FRESH_PREDICT)
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(python), "-I", str(script), str(local), str(frame_file)],
        cwd=tmp_path,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(json.loads(done.stdout.splitlines()[-1]), champion.predict(raw))
