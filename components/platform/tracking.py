"""MLflow tracking with explicit run ids.

Prefect runs tasks in worker threads and MLflow's fluent "active run" is thread-local, so every
call here names its run id instead of relying on ``mlflow.start_run`` context. One parent run
per pipeline, a nested run per round and per task, linked through ``mlflow.parentRunId``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import (
    DatasetInput,
    InputTag,
    LoggedModel,
    LoggedModelOutput,
    LoggedModelStatus,
    Metric,
    Param,
    RunTag,
)
from mlflow.exceptions import MlflowException
from mlflow.utils.time import get_current_time_millis

from alignflow.components.platform.redaction import redact_mapping, redact_value

MAX_PARAM_LENGTH = 6000


def resolve_tracking_uri(configured: str | None, state_dir: Path) -> str:
    """Config wins; then MLFLOW_TRACKING_URI (set by `alignflow up`); else a local sqlite file."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(Path(state_dir) / 'mlflow.db').resolve()}"


class Tracker:
    """A thin, explicit-run-id facade over MlflowClient: the only way the platform writes to MLflow, so
    every param, tag, version tag and description passes through redaction first. The client itself
    is private; reads go through it too, so a new call site cannot bypass the facade by habit."""

    def __init__(self, tracking_uri: str, experiment: str):
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        found = self._client.get_experiment_by_name(experiment)
        # MLflow 3's UI opens an experiment of unknown kind on its GenAI trace overview; these are
        # training runs, so say so and the runs table is what a user sees first
        self.experiment_id = found.experiment_id if found else self._client.create_experiment(
            experiment, artifact_location=_local_artifact_root(tracking_uri, experiment),
            tags={"mlflow.experimentKind": "custom_model_development"})

    def start_run(self, name: str, parent_run_id: str | None = None, tags: Mapping[str, Any] | None = None) -> str:
        all_tags = {"mlflow.runName": name, **redact_mapping(tags or {})}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        return self._client.create_run(self.experiment_id, tags=all_tags, run_name=name).info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._client.set_terminated(run_id, status=status)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(k, v[:MAX_PARAM_LENGTH]) for k, v in redact_mapping(params).items()]
        for start in range(0, len(items), 100):
            self._client.log_batch(run_id, params=items[start:start + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        now = get_current_time_millis()
        items = [Metric(_metric_key(k), float(v), now, step) for k, v in metrics.items()
                 if v is not None and not math.isnan(float(v))]
        for start in range(0, len(items), 500):
            self._client.log_batch(run_id, metrics=items[start:start + 500])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self._client.log_batch(run_id, tags=[RunTag(k, v) for k, v in redact_mapping(tags).items()])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._client.log_artifact(run_id, str(path), artifact_path)

    def log_artifacts(self, run_id: str, directory: Path, artifact_path: str | None = None) -> None:
        self._client.log_artifacts(run_id, str(directory), artifact_path)

    def log_dataset(self, run_id: str, path: Path, name: str, digest: str, context: str,
                    extra_tags: Mapping[str, str] | None = None) -> None:
        """Record a dataset input whose digest is its DVC hash, so MLflow and DVC agree on identity."""
        with warnings.catch_warnings():
            # MLflow registers its local-file source class once per URI scheme ('' and 'file') and
            # warns, on every call, that a path matches both; it picks that class either way
            warnings.filterwarnings("ignore",
                                    message="The specified dataset source can be interpreted in multiple ways")
            source = resolve_dataset_source(str(Path(path).resolve()))
        dataset = MetaDataset(source=source, name=name, digest=digest[:36])
        tags = [InputTag("mlflow.data.context", context)] + [InputTag(k, v) for k, v in (extra_tags or {}).items()]
        self._client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=tags)])


    def log_table(self, run_id: str, columns: Mapping[str, list], artifact_file: str) -> None:
        """A table (column name → values) as a run artifact MLflow's UI shows as a table."""
        self._client.log_table(run_id, data=dict(columns), artifact_file=artifact_file)

    # ---- reads -------------------------------------------------------------------------------
    def get_run(self, run_id: str) -> Any:
        return self._client.get_run(run_id)

    def search_runs(self, filter_string: str = "", order_by: list[str] | None = None, max_results: int = 1000,
                    experiment_ids: list[str] | None = None) -> list[Any]:
        """Runs of this experiment (or ``experiment_ids``) matching an MLflow filter string."""
        return list(self._client.search_runs(experiment_ids or [self.experiment_id], filter_string,
                                             order_by=order_by, max_results=max_results))

    def artifact_uri(self, run_id: str) -> str:
        uri = self._client.get_run(run_id).info.artifact_uri
        assert uri is not None, f"run {run_id} has no artifact location"  # the tracking server gives every run one
        return uri

    # ---- model registry ----------------------------------------------------------------------
    def ensure_registered_model(self, name: str, description: str) -> None:
        try:
            self._client.get_registered_model(name)
        except MlflowException:
            self._client.create_registered_model(name, description=redact_value(description))

    def create_model_version(self, name: str, source: str, run_id: str | None, tags: Mapping[str, Any],
                             description: str | None = None, model_id: str | None = None) -> str:
        """Register ``source`` under ``name`` (``model_id``: the MLflow 3 logged model it is); returns the
        new version number."""
        version = self._client.create_model_version(name, source=source, run_id=run_id, tags=redact_mapping(tags),
                                                    description=redact_value(description) if description else None,
                                                    model_id=model_id)
        return str(version.version)

    def set_version_description(self, name: str, version: str, description: str) -> None:
        """Replace a version's description (redacted)."""
        self._client.update_model_version(name, str(version), description=redact_value(description))

    def search_model_versions(self, filter_string: str) -> list[Any]:
        """Model versions matching an MLflow filter string (e.g. ``name = 'x' and tag.k = 'v'``)."""
        return list(self._client.search_model_versions(filter_string))

    # ---- logged models (MLflow 3) -----------------------------------------------------------------
    @property
    def is_server(self) -> bool:
        """Whether the tracking URI is a tracking server (http[s]) rather than a direct database store."""
        return self.tracking_uri.startswith(("http://", "https://"))

    def create_logged_model(self, name: str, source_run_id: str | None, model_type: str,
                            tags: Mapping[str, Any], params: Mapping[str, Any]) -> LoggedModel:
        """A PENDING logged model in this experiment, produced by ``source_run_id``."""
        return self._client.create_logged_model(self.experiment_id, name=name, source_run_id=source_run_id,
                                                tags=redact_mapping(tags), params=redact_mapping(params),
                                                model_type=model_type)

    def log_model_artifacts(self, model_id: str, directory: Path, artifact_path: str | None = None) -> None:
        """Upload a directory's files into a logged model's artifacts (under ``artifact_path``)."""
        self._client.log_model_artifacts(model_id, str(directory), artifact_path)

    def log_model_artifact(self, model_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Upload one file into a logged model's artifacts (under ``artifact_path``), replacing one of its name."""
        self._client.log_model_artifact(model_id, str(path), artifact_path)

    def finalize_logged_model(self, model_id: str, ready: bool) -> LoggedModel:
        """Mark a logged model READY (its files are complete) or FAILED."""
        return self._client.finalize_logged_model(model_id, LoggedModelStatus.READY if ready
                                                  else LoggedModelStatus.FAILED)

    def get_logged_model(self, model_id: str) -> LoggedModel:
        """A logged model by id (artifact location, status, tags, linked metrics)."""
        return self._client.get_logged_model(model_id)

    def set_logged_model_tags(self, model_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags on a logged model (redacted)."""
        self._client.set_logged_model_tags(model_id, redact_mapping(tags))

    def link_model_to_run(self, run_id: str, model_id: str, step: int) -> None:
        """What ``Model.log`` does when it knows the run: the model becomes an output of ``run_id`` at ``step``
        (the runs table's Models column), and the run's metrics at that step are linked to it."""
        self._client.log_outputs(run_id, [LoggedModelOutput(model_id, step=step)])
        run = self._client.get_run(run_id)
        linked = [Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id, run_id=run_id)
                  for key in run.data.metrics for m in self._client.get_metric_history(run_id, key)
                  if m.step == step and m.model_id is None]
        for start in range(0, len(linked), 500):
            self._client.log_batch(run_id, metrics=linked[start:start + 500])

    def metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every logged value of one metric of a run, with its step."""
        return list(self._client.get_metric_history(run_id, key))

    def get_model_version(self, name: str, version: str) -> Any:
        return self._client.get_model_version(name, version)

    def version_for_alias(self, name: str, alias: str) -> Any | None:
        """The version ``alias`` points at, or None when the model or the alias does not exist."""
        try:
            return self._client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._client.set_registered_model_alias(name, alias, str(version))

    def delete_alias(self, name: str, alias: str) -> None:
        self._client.delete_registered_model_alias(name, alias)

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, Any]) -> None:
        for key, value in redact_mapping(tags).items():
            self._client.set_model_version_tag(name, str(version), key, value)


def _local_artifact_root(tracking_uri: str, experiment: str) -> str | None:
    """With a sqlite store, keep artifacts beside the database instead of in ./mlruns of the cwd."""
    if not tracking_uri.startswith("sqlite:///"):
        return None  # a tracking server decides (its --artifacts-destination)
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    return (db.parent / "mlflow-artifacts" / experiment).resolve().as_uri()


def _metric_key(key: str) -> str:
    """MLflow allows / in keys but not ':' or spaces; keep names readable."""
    return key.replace(":", "_").replace(" ", "_")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → dotted params for MLflow."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat
