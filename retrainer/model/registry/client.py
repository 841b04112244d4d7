"""The model registry: MLflow tracking and registry behind a small interface.

With the rest of its subpackage, the only code that imports MLflow (lazily, on first use; an
import-linter contract holds it). Champion and challenger are registry aliases; decisions are
version tags. Moving ``@champion`` is a compare-and-set under the model's promotion lock (held by
the metadata store, see ``retrainer.model.history``), so two promotions racing on one model cannot
both win. Every alias move is mirrored in the metadata store (:mod:`.mirror`) for ``status``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from retrainer.errors import RegistryError, TransientRegistryError
from retrainer.fsutil import file_lock
from retrainer.model.registry.mirror import AliasMirror, MirrorReader
from retrainer.model.registry.store_reader import DEFAULT_WORKSPACE, KNOWN_STORE_REVISIONS, StoreReader, sqlite_path
from retrainer.model.registry.versions import RegistryReader, VersionInfo

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from retrainer.model.training import TrainedModel

Purpose = Literal["training", "monitoring"]
CHAMPION = "champion"
CHALLENGER = "challenger"
_SERVING_CODE = Path(__file__).with_name("serving.py")
_TAG_LIMIT = 5000
# At most 3 tries a request (about 3 s when refused, 3 x 20 s when it hangs); see _bound_http_retries.
_HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
# The MLmodel metadata section that marks a model retrainer registered (and lists its features' kinds).
_METADATA_KEY = "retrainer"


def pip_requirements() -> list[str]:
    """Pinned requirements of the serving model, taken from the running environment."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "lightgbm", "numpy", "pandas")]


class Registry:
    """MLflow tracking + registry for retrainer's models.

    Args:
        tracking_uri: MLflow tracking and registry URI.
        artifact_root: Artifact location of the experiments retrainer creates in a local (SQLite)
            store. Against a tracking server none is set: models, references and reports go
            through the server's artifact store, so any machine loads them.
        lock_dir: Where processes of this host serialise the creation of a local store.
        mirror: Where alias moves are mirrored for ``status`` (none: not mirrored).
    """

    def __init__(
        self, tracking_uri: str, artifact_root: Path, lock_dir: Path, mirror: AliasMirror | None = None
    ) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.lock_dir = lock_dir
        self.mirror = mirror

    @cached_property
    def client(self) -> MlflowClient:
        """The MLflow client, created on first use (a fresh SQLite store is created under a lock)."""
        from mlflow import MlflowClient

        _bound_http_retries()
        if sqlite_path(self.tracking_uri) is None:
            return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        # Processes that open a fresh SQLite store at once race on its migrations and break it (e.g.
        # the monitors a first ingest starts under `retrainer serve`): one at a time opens both stores.
        with file_lock(self.lock_dir / "mlflow-store.lock"), self._errors("opening the store"):
            client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            client.search_experiments(max_results=1)
            client.search_registered_models(max_results=1)
        return client

    def reader(self) -> RegistryReader:
        """A read-only view for quick lookups that answers exactly as this registry would.

        On a SQLite store whose schema revision is known (and in MLflow's default workspace) the view
        reads the file directly: importing MLflow and opening its store costs seconds, a query
        milliseconds. Against a tracking server the alias mirror answers (:mod:`.mirror`), and this
        registry only for a model whose aliases were never mirrored. Anything else (another schema,
        a store not created yet) is answered by this registry itself.
        """
        path = sqlite_path(self.tracking_uri)
        other_workspace = os.environ.get("MLFLOW_WORKSPACE", DEFAULT_WORKSPACE) != DEFAULT_WORKSPACE
        if path is None and self.mirror is not None and not other_workspace:
            return MirrorReader(self.mirror, lambda: self)
        if path is None or not path.is_file() or other_workspace:
            return self
        reader = StoreReader(path)
        return reader if reader.revision() in KNOWN_STORE_REVISIONS else self

    def experiment_id(self, model: str, purpose: Purpose = "training") -> str:
        """Return the id of the model's experiment for ``purpose``, creating it on first use.

        Training runs (one per challenger) go to ``retrainer-<model>``; drift checks to
        ``retrainer-<model>-monitoring``.
        """
        from mlflow.exceptions import MlflowException

        name = f"retrainer-{model}" if purpose == "training" else f"retrainer-{model}-{purpose}"
        with self._errors(f"experiment {name}"):
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return str(found.experiment_id)
            try:
                return str(self.client.create_experiment(name, artifact_location=self._location(model, purpose)))
            except MlflowException as exc:  # another worker created it first
                if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise
                created = self.client.get_experiment_by_name(name)
                if created is None:
                    raise
                return str(created.experiment_id)

    def _location(self, model: str, purpose: Purpose) -> str | None:
        """A local store's artifact folder; none for a server, whose own artifact store serves every machine."""
        if sqlite_path(self.tracking_uri) is None:
            return None
        folder = self.artifact_root / model
        return (folder if purpose == "training" else folder / purpose).as_uri()

    def start_run(
        self,
        model: str,
        run_name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        purpose: Purpose = "training",
    ) -> str:
        """Open a tracking run with ``params`` and ``tags`` in the ``purpose`` experiment; return its id."""
        with self._errors(f"run for {model}"):
            run = self.client.create_run(self.experiment_id(model, purpose), run_name=run_name, tags=_clip(tags))
            run_id = str(run.info.run_id)
            for key, value in params.items():
                self.client.log_param(run_id, key, value)
            return run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        """Log finite metric values on a run."""
        with self._errors(f"metrics of run {run_id}"):
            for key, value in metrics.items():
                if np.isfinite(value):
                    self.client.log_metric(run_id, key, float(value))

    def log_dict(self, run_id: str, payload: Mapping[str, Any], name: str) -> None:
        """Store ``payload`` as a JSON artifact of the run."""
        with self._errors(f"artifact {name}"):
            self.client.log_dict(run_id, dict(payload), name)

    def log_text(self, run_id: str, text: str, name: str) -> str:
        """Store ``text`` as the artifact ``name`` of the run; return the artifact's URI."""
        with self._errors(f"artifact {name}"):
            self.client.log_text(run_id, text, name)
            return f"{self.client.get_run(run_id).info.artifact_uri}/{name}"

    def log_file(self, run_id: str, local: Path, folder: str) -> None:
        """Copy the file ``local`` into the run's artifact ``folder``."""
        with self._errors(f"artifact {folder}/{local.name}"):
            self.client.log_artifact(run_id, str(local), folder)

    def has_artifact(self, run_id: str, name: str) -> bool:
        """True when the run stores an artifact file at ``name``."""
        folder = name.rsplit("/", 1)[0] if "/" in name else None
        with self._errors(f"artifacts of run {run_id}"):
            return any(item.path == name for item in self.client.list_artifacts(run_id, folder))

    def download(self, run_id: str, name: str, destination: Path) -> Path:
        """Fetch the run's artifact ``name`` into ``destination``; return the local path.

        Raises:
            RegistryError: the artifact does not exist.
        """
        with self._errors(f"artifact {name} of run {run_id}"):
            local = Path(self.client.download_artifacts(run_id, name, str(destination)))
        if not local.exists():
            raise RegistryError(f"artifact {name} of run {run_id} does not exist")
        return local

    def set_run_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Tag a run."""
        with self._errors(f"tags of run {run_id}"):
            for key, value in _clip(tags).items():
                self.client.set_tag(run_id, key, value)

    def end_run(self, run_id: str) -> None:
        """Close a run as finished."""
        with self._errors(f"run {run_id}"):
            self.client.set_terminated(run_id, "FINISHED")

    def register(self, model: str, run_id: str, trained: TrainedModel, example: pd.DataFrame) -> VersionInfo:
        """Save ``trained`` as a pyfunc model on the run and register it as a new version.

        ``example`` holds a few raw rows; its feature columns are stored as the input example.

        The saved model serves raw columns without retrainer installed; see ``retrainer.model.registry.serving``.
        """
        import mlflow

        with tempfile.TemporaryDirectory() as scratch, self._errors(f"registering {model}"):
            booster, spec, local = Path(scratch, "booster.txt"), Path(scratch, "spec.json"), Path(scratch, "model")
            trained.save(booster)
            spec.write_text(trained.spec.to_json(), encoding="utf-8")
            mlflow.pyfunc.save_model(
                path=str(local),
                python_model=str(_SERVING_CODE),
                artifacts={"booster": str(booster), "spec": str(spec)},
                signature=_signature(trained),
                input_example=example[trained.spec.features].head(5),
                pip_requirements=pip_requirements(),
                metadata={_METADATA_KEY: {"features": feature_kinds(trained)}},
            )
            self.client.log_artifacts(run_id, str(local), "model")
            self._ensure_registered(model)
            source = f"{self.client.get_run(run_id).info.artifact_uri}/model"
            created = self.client.create_model_version(model, source=source, run_id=run_id)
            return _info(created)

    def _ensure_registered(self, model: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(model)
        except MlflowException:
            try:
                self.client.create_registered_model(model, description=f"Managed by retrainer ({model}).")
            except MlflowException as exc:  # another worker registered it first
                if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise

    def run_details(self, run_id: str) -> tuple[dict[str, str], dict[str, float]]:
        """Tags and latest metric values of a tracking run."""
        with self._errors(f"run {run_id}"):
            run = self.client.get_run(run_id)
            return dict(run.data.tags), dict(run.data.metrics)

    def version(self, model: str, version: str) -> VersionInfo:
        """Return one version.

        Raises:
            RegistryError: the version does not exist.
        """
        with self._errors(f"{model} version {version}"):
            return _info(self.client.get_model_version(model, version))

    def alias(self, model: str, alias: str) -> VersionInfo | None:
        """Return the version ``alias`` points to, or ``None`` when unset or the model is unknown."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_model_version_by_alias(model, alias)
        except MlflowException as exc:
            if _is_not_found(exc):
                return None
            raise _translate(exc, f"alias {model}@{alias}", self.tracking_uri) from exc
        return _info(found)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` unconditionally, and mirror it."""
        with self._errors(f"alias {model}@{alias}"):
            self.client.set_registered_model_alias(model, alias, version)
        self.mirror_alias(model, alias)

    def mirror_alias(self, model: str, alias: str) -> None:
        """Mirror where ``alias`` points now, with its run's tags and metrics (nothing without a mirror)."""
        if self.mirror is None:
            return
        found = self.alias(model, alias)
        details = self.run_details(found.run_id) if found is not None and found.run_id else ({}, {})
        self.mirror.record(model, alias, found, details)

    def tag_version(self, model: str, version: str, tags: Mapping[str, str]) -> None:
        """Set tags on a model version."""
        with self._errors(f"tags of {model} version {version}"):
            for key, value in _clip(tags).items():
                self.client.set_model_version_tag(model, version, key, value)

    def load(self, model: str, version: str) -> Any:
        """Load a version as a plain MLflow pyfunc model."""
        import mlflow.pyfunc

        with self._errors(f"loading {model} version {version}"):
            # Resolved through our client: ``models:/`` URIs would use the process-global tracking URI.
            source = self.client.get_model_version_download_uri(model, version)
            return mlflow.pyfunc.load_model(source)

    def predict(self, model: str, version: str, frame: pd.DataFrame) -> np.ndarray:
        """Predict ``frame`` with a registered version: the stored model's own code on its own artifacts.

        A version retrainer registered is called past MLflow's input check, which visits every cell
        of an ``Any``-typed column in Python (about 12 s for 1M rows x 20 features here) and hands
        the values on unchanged; the stored model checks them itself. Other versions go through
        MLflow's ``predict``.

        Raises:
            RegistryError: the version cannot be loaded, or refuses ``frame`` (e.g. a feature it
                needs is missing), naming the version and the model's reason. A refusal is final:
                predicting is not a store call, so it is never a transient error.
        """
        from mlflow.exceptions import MlflowException

        loaded = self.load(model, version)
        try:
            if _METADATA_KEY in (loaded.metadata.metadata or {}):
                output = loaded.unwrap_python_model().predict(None, frame)
            else:
                output = loaded.predict(frame)
        except MlflowException as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RegistryError(f"predicting with {model} version {version}: {first_line}") from exc
        return np.asarray(output, dtype=np.float64)

    def feature_names(self, model: str, version: str) -> list[str] | None:
        """The features a version registered by retrainer reads (None for other versions).

        Read from the version's MLmodel file alone: neither the booster nor the serving code is loaded.
        """
        from mlflow.artifacts import download_artifacts
        from mlflow.models import Model

        with tempfile.TemporaryDirectory() as scratch, self._errors(f"reading {model} version {version}"):
            source = self.client.get_model_version_download_uri(model, version)
            local = download_artifacts(
                artifact_uri=f"{source}/MLmodel", dst_path=scratch, tracking_uri=self.tracking_uri
            )
            metadata = Model.load(local).metadata or {}
        kinds = metadata.get(_METADATA_KEY, {}).get("features")
        return list(kinds) if isinstance(kinds, dict) else None

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as exc:
            raise _translate(exc, what, self.tracking_uri) from exc
        except Exception as exc:
            # Opening a SQLite store runs SQLAlchemy outside MLflow's own error translation.
            if type(exc).__name__ != "OperationalError":
                raise
            raise _translate(exc, what, self.tracking_uri) from exc


def _info(found: Any) -> VersionInfo:
    return VersionInfo(str(found.name), str(found.version), found.run_id, dict(found.tags))


def _signature(trained: TrainedModel) -> Any:
    """Inputs by name, typed ``Any``; outputs as float64.

    MLflow's own check refuses int64 or bool for ``double``, floats for ``long`` and numbers or
    pandas categoricals for ``string``, so any declared type would refuse frames the serving
    contract takes. The served model checks every feature itself (``retrainer.model.registry.serving``) and names
    the column it refuses; each feature's kind is in the model's metadata (:func:`feature_kinds`).
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec
    from mlflow.types.schema import AnyType

    spec = trained.spec
    inputs = Schema([ColSpec(AnyType(), name, required=True) for name in spec.features])  # type: ignore[no-untyped-call]
    width = len(spec.classes) if spec.task == "multiclass" else 1
    shape = (-1, width) if width > 1 else (-1,)
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(np.dtype(np.float64), shape)]))


def feature_kinds(trained: TrainedModel) -> dict[str, dict[str, Any]]:
    """Each feature's kind (and a categorical's levels), stored in the MLmodel file's metadata."""
    spec = trained.spec
    return {
        name: {"kind": "categorical", "levels": spec.categorical[name]}
        if name in spec.categorical
        else {"kind": "numeric"}
        for name in spec.features
    }


def _clip(tags: Mapping[str, str]) -> dict[str, str]:
    return {key: str(value)[:_TAG_LIMIT] for key, value in tags.items()}


def _is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"}


def _bound_http_retries() -> None:
    """Bound MLflow's own HTTP retries, unless the operator set them.

    MLflow retries a refused or failing request 7 times with exponential backoff (about 4 minutes a
    call), and our tasks retry on top of that: a tracking server that is down held a run for ~16
    minutes. Retrying is the tasks' job, within their time budget (``tasks._common``).
    """
    for name, value in _HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)


def _translate(exc: Exception, what: str, tracking_uri: str) -> RegistryError:
    """A domain error for an MLflow failure; a transient one names the store it could not use."""
    code = str(getattr(exc, "error_code", ""))
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "database is locked" in first_line:
        return TransientRegistryError(
            f"{what}: the MLflow store {_store_name(tracking_uri)} is locked by another process"
        )
    if code in {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "INTERNAL_ERROR"}:
        return TransientRegistryError(f"{what}: MLflow at {_store_name(tracking_uri)} is unreachable: {first_line}")
    return RegistryError(f"{what}: {first_line}")


def _store_name(tracking_uri: str) -> str:
    path = sqlite_path(tracking_uri)
    return str(path) if path is not None else tracking_uri


def decision_json(payload: object) -> str:
    """Compact JSON for a version tag."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str)
