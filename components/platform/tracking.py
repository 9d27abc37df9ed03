"""MLflow tracking with explicit run ids.

Prefect runs tasks in worker threads and MLflow's fluent "active run" is thread-local, so every
call here names its run id instead of relying on ``mlflow.start_run`` context. One parent run
per pipeline, a nested run per round and per task, linked through ``mlflow.parentRunId``.

Everything written goes through two filters first:

- redaction (``platform/redaction.py``): params, tags, run names, dataset names and tags,
  registered-model and model-version tags and descriptions, tables, and text artifacts
  (``TEXT_ARTIFACT_SUFFIXES`` up to ``MAX_REDACTED_ARTIFACT_BYTES``: uploaded from a redacted
  copy when redaction changes them; binaries, larger files and the model files of
  ``MODEL_FILE_NAMES`` as they are);
- MLflow's key rules (``platform/mlflow_keys.py``): a metric, param or tag key MLflow would refuse
  (``eval/pass@1``, ``a:b``, 251 characters) is logged under a deterministic sanitized key, and the
  original name is kept in the tag ``alignflow.original_key.<sanitized key>`` of the same run (or
  model version); values are cut to MLflow's limits.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Dataset as DatasetEntity
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

from alignflow.components.platform.mlflow_keys import clip_value, sanitize_key, sanitize_mapping
from alignflow.components.platform.redaction import redact_json, redact_mapping, redact_text, redact_value

ORIGINAL_KEY_TAG = "alignflow.original_key."  # + sanitized key -> the name it was logged under
TEXT_ARTIFACT_SUFFIXES = frozenset({".md", ".json", ".txt", ".yaml", ".yml", ".jsonl", ".csv", ".html"})
MAX_REDACTED_ARTIFACT_BYTES = 5 * 1024 * 1024  # a larger text artifact is uploaded as it is
# Machine-readable model files (checkpoints logged to the registry): redaction would read their keys as
# secrets ("pad_token": "<|im_end|>", a vocabulary's "password": 8844) and break the model; they hold no
# user input.
MODEL_FILE_NAMES = frozenset({"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                              "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                              "adapter_config.json", "model.safetensors.index.json", "chat_template.json"})
_BATCH = {"metric": 500, "param": 100, "tag": 100}  # MLflow's log_batch takes at most 1000 / 100 / 100


class RegistryLookupError(LookupError):
    """A registry that answered has no such registered model, version, alias, or run artifact: a retry
    repeats it (unlike a registry that could not be reached)."""


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
        self._recorded: set[tuple[str, str]] = set()  # (run id, sanitized key) whose original is logged
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        found = self._client.get_experiment_by_name(experiment)
        # MLflow 3's UI opens an experiment of unknown kind on its GenAI trace overview; these are
        # training runs, so say so and the runs table is what a user sees first
        self.experiment_id = found.experiment_id if found else self._client.create_experiment(
            experiment, artifact_location=_local_artifact_root(tracking_uri, experiment),
            tags={"mlflow.experimentKind": "custom_model_development"})

    def start_run(self, name: str, parent_run_id: str | None = None, tags: Mapping[str, Any] | None = None) -> str:
        """Create a run named ``name`` (redacted) under ``parent_run_id``; ``tags`` are redacted and
        their keys sanitized (originals recorded). Returns the run id."""
        name = redact_value(name)
        items = self._run_tags(tags or {})
        items += [RunTag("mlflow.runName", name)]
        if parent_run_id:
            items.append(RunTag("mlflow.parentRunId", parent_run_id))
        run_id = self._client.create_run(self.experiment_id, tags={t.key: t.value for t in items},
                                         run_name=name).info.run_id
        return run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._client.set_terminated(run_id, status=status)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params: values redacted (by their original key) and cut to 6000 characters, keys
        sanitized to MLflow's rules with the originals recorded as tags."""
        sanitized, originals = sanitize_mapping(redact_mapping(params), "param")
        items = [Param(k, clip_value(v, "param")) for k, v in sanitized.items()]
        self._batch(run_id, params=items, tags=self._original_key_tags(run_id, originals))

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log metrics at ``step`` (None and NaN values are skipped); keys MLflow would refuse
        (``eval/pass@1``) are sanitized, the original names recorded once per run as tags."""
        now = get_current_time_millis()
        finite = {k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(float(v))}
        sanitized, originals = sanitize_mapping(finite, "metric")
        items = [Metric(k, v, now, step) for k, v in sanitized.items()]
        self._batch(run_id, metrics=items, tags=self._original_key_tags(run_id, originals))

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set run tags: values redacted and cut to 8000 characters, keys sanitized (originals recorded)."""
        self._batch(run_id, tags=self._run_tags(tags, run_id))

    def _run_tags(self, tags: Mapping[str, Any], run_id: str | None = None) -> list[RunTag]:
        sanitized, originals = sanitize_mapping(redact_mapping(tags), "tag")
        items = [RunTag(k, clip_value(v, "tag")) for k, v in sanitized.items()]
        return items + self._original_key_tags(run_id, originals)

    def _original_key_tags(self, run_id: str | None, originals: Mapping[str, str]) -> list[RunTag]:
        """``alignflow.original_key.<sanitized>`` = original, for keys not yet recorded on ``run_id``
        by this tracker (a per-step metric is recorded once, not at every step)."""
        items = []
        for sanitized, original in originals.items():
            if run_id is not None and (run_id, sanitized) in self._recorded:
                continue
            if run_id is not None:
                self._recorded.add((run_id, sanitized))
            items.append(RunTag(original_key_tag(sanitized), clip_value(original, "tag")))
        return items

    def _batch(self, run_id: str, metrics: list[Metric] | None = None, params: list[Param] | None = None,
               tags: list[RunTag] | None = None) -> None:
        """``log_batch`` in pieces MLflow accepts (at most 1000 metrics, 100 params, 100 tags a call)."""
        metrics, params, tags = metrics or [], params or [], tags or []
        for start in range(0, len(metrics), _BATCH["metric"]):
            self._client.log_batch(run_id, metrics=metrics[start:start + _BATCH["metric"]])
        for start in range(0, len(params), _BATCH["param"]):
            self._client.log_batch(run_id, params=params[start:start + _BATCH["param"]])
        for start in range(0, len(tags), _BATCH["tag"]):
            self._client.log_batch(run_id, tags=tags[start:start + _BATCH["tag"]])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Upload one file; a text artifact is uploaded from a redacted copy when redaction changes it
        (see the module docstring)."""
        path = Path(path)
        redacted = redacted_artifact_text(path)
        if redacted is None:
            self._client.log_artifact(run_id, str(path), artifact_path)
            return
        with tempfile.TemporaryDirectory(prefix="alignflow-redacted-") as tmp:
            copy = Path(tmp) / path.name
            copy.write_text(redacted, encoding="utf-8")
            self._client.log_artifact(run_id, str(copy), artifact_path)

    def log_artifacts(self, run_id: str, directory: Path, artifact_path: str | None = None) -> None:
        """Upload a directory tree; its text artifacts that redaction changes are uploaded from redacted
        copies, everything else as it is."""
        with _redacted_tree(Path(directory)) as upload:
            self._client.log_artifacts(run_id, str(upload), artifact_path)

    def log_dataset(self, run_id: str, path: Path, name: str, digest: str, context: str,
                    extra_tags: Mapping[str, str] | None = None, schema: Mapping[str, Any] | None = None,
                    profile: Mapping[str, Any] | None = None) -> None:
        """Record a dataset input whose digest is its DVC hash, so MLflow and DVC agree on identity;
        ``schema`` and ``profile`` (JSON-able) show in the run's dataset panel. The name, the extra tags
        and the profile are redacted (the source is the local file's path)."""
        with warnings.catch_warnings():
            # MLflow registers its local-file source class once per URI scheme ('' and 'file') and
            # warns, on every call, that a path matches both; it picks that class either way
            warnings.filterwarnings("ignore",
                                    message="The specified dataset source can be interpreted in multiple ways")
            source = resolve_dataset_source(str(Path(path).resolve()))
        entity = MetaDataset(source=source, name=redact_value(name), digest=digest[:36])._to_mlflow_entity()
        if schema is not None or profile is not None:
            entity = DatasetEntity(name=entity.name, digest=entity.digest, source_type=entity.source_type,
                                   source=entity.source, schema=json.dumps(schema) if schema is not None else None,
                                   profile=json.dumps(redact_json(dict(profile))) if profile is not None else None)
        tags = [InputTag("mlflow.data.context", context)] + [
            InputTag(k, clip_value(v, "tag")) for k, v in redact_mapping(extra_tags or {}).items()]
        self._client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=tags)])

    def log_table(self, run_id: str, columns: Mapping[str, list], artifact_file: str) -> None:
        """A table (column name → values) as a run artifact MLflow's UI shows as a table; every cell is
        redacted (a column with a secret name is masked whole)."""
        data = {name: [redact_json({name: value})[name] for value in values] for name, values in columns.items()}
        self._client.log_table(run_id, data=data, artifact_file=artifact_file)

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

    def create_registered_model_exclusive(self, name: str, description: str, tags: Mapping[str, Any]) -> bool:
        """Create registered model ``name`` only if none exists: True when this call created it, False when
        it already existed. The registry's uniqueness of names makes this an atomic test-and-set (the
        lineage lock, ``components/platform/lineage_lock.py``)."""
        try:
            self._client.create_registered_model(name, tags={k: str(v) for k, v in redact_mapping(tags).items()},
                                                 description=redact_value(description))
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_ALREADY_EXISTS":
                return False
            raise
        return True

    def registered_model_tags(self, name: str) -> dict[str, str] | None:
        """A registered model's tags, or None when it does not exist."""
        try:
            return dict(self._client.get_registered_model(name).tags or {})
        except MlflowException:
            return None

    def set_registered_model_tag(self, name: str, key: str, value: Any) -> None:
        """One tag on a registered model (value redacted)."""
        self._client.set_registered_model_tag(name, key, str(redact_value(str(value))))

    def delete_registered_model(self, name: str) -> bool:
        """Delete a registered model; False when it did not exist."""
        try:
            self._client.delete_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return True

    def download_run_artifact(self, run_id: str, path: str, dst: Path) -> Path:
        """One artifact of a run downloaded under ``dst``; returns the local file."""
        return Path(self._client.download_artifacts(run_id, path, str(dst)))

    def create_model_version(self, name: str, source: str, run_id: str | None, tags: Mapping[str, Any],
                             description: str | None = None, model_id: str | None = None) -> str:
        """Register ``source`` under ``name`` (``model_id``: the MLflow 3 logged model it is); returns the
        new version number. Tags and the description are redacted, tag keys sanitized (originals recorded
        as version tags)."""
        version = self._client.create_model_version(name, source=source, run_id=run_id, tags=_version_tags(tags),
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
        """The version ``alias`` points at (an all-digit ``alias`` is a version number: that version), or
        None when the model, the alias or the version does not exist.

        Raises:
            MlflowException: any other answer (a registry that cannot be reached is not a missing model).
        """
        try:
            if alias.isdigit():
                return self._client.get_model_version(name, alias)
            return self._client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            # a missing model or version: RESOURCE_DOES_NOT_EXIST; a missing alias: INVALID_PARAMETER_VALUE
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._client.set_registered_model_alias(name, alias, str(version))

    def delete_alias(self, name: str, alias: str) -> None:
        self._client.delete_registered_model_alias(name, alias)

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, Any]) -> None:
        """Set model-version tags: values redacted, keys sanitized (originals recorded as version tags)."""
        for key, value in _version_tags(tags).items():
            self._client.set_model_version_tag(name, str(version), key, value)


def _local_artifact_root(tracking_uri: str, experiment: str) -> str | None:
    """With a sqlite store, keep artifacts beside the database instead of in ./mlruns of the cwd."""
    if not tracking_uri.startswith("sqlite:///"):
        return None  # a tracking server decides (its --artifacts-destination)
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    return (db.parent / "mlflow-artifacts" / experiment).resolve().as_uri()


def original_key_tag(sanitized: str) -> str:
    """The tag that records the original name of a sanitized key: ``alignflow.original_key.<sanitized>``,
    itself sanitized when that is longer than MLflow's 250 characters."""
    return sanitize_key(f"{ORIGINAL_KEY_TAG}{sanitized}", "tag")


def original_keys(tags: Mapping[str, str]) -> dict[str, str]:
    """{sanitized key: original key} recorded in a run's (or a model version's) ``tags``. The sanitized
    key is recomputed from the recorded original (sanitization is deterministic and the same for
    metrics, params and tags), so a tag key that had to be shortened still maps back."""
    return {sanitize_key(original, "tag"): original for key, original in tags.items()
            if key.startswith(ORIGINAL_KEY_TAG)}


def _version_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Model-version tags as MLflow takes them: redacted values, sanitized keys, originals added."""
    sanitized, originals = sanitize_mapping(redact_mapping(tags), "tag")
    return {**sanitized, **{original_key_tag(k): clip_value(v, "tag") for k, v in originals.items()}}


def redacted_artifact_text(path: Path) -> str | None:
    """The redacted text of an artifact file when redaction changes it; None when the file is to be
    uploaded as it is (not a text artifact by suffix, a model file, larger than
    ``MAX_REDACTED_ARTIFACT_BYTES``, not UTF-8, or nothing to redact). JSON and JSONL are redacted
    by structure (``redact_json``), so they stay valid; other text with ``redact_text``."""
    path = Path(path)
    if (path.suffix.lower() not in TEXT_ARTIFACT_SUFFIXES or path.name in MODEL_FILE_NAMES or not path.is_file()
            or path.stat().st_size > MAX_REDACTED_ARTIFACT_BYTES):
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None
    redacted = _redact_document(text, path.suffix.lower())
    return None if redacted == text else redacted


def _redact_document(text: str, suffix: str) -> str:
    if suffix == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            return redact_text(text)
        redacted = redact_json(document)
        return text if redacted == document else json.dumps(redacted, indent=2, ensure_ascii=False) + "\n"
    if suffix == ".jsonl":
        lines = []
        for line in text.splitlines(keepends=True):
            try:
                document = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                lines.append(redact_text(line))
                continue
            redacted = redact_json(document)
            lines.append(line if redacted == document else json.dumps(redacted, ensure_ascii=False) + "\n")
        return "".join(lines)
    return redact_text(text)


@contextmanager
def _redacted_tree(directory: Path) -> Iterator[Path]:
    """``directory`` itself when none of its files changes under redaction; else a temporary tree
    of links to its files, with redacted copies in place of the text artifacts that change."""
    changed = {}
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        redacted = redacted_artifact_text(file)
        if redacted is not None:
            changed[file] = redacted
    if not changed:
        yield directory
        return
    with tempfile.TemporaryDirectory(prefix="alignflow-redacted-") as tmp:
        shadow = Path(tmp) / directory.name
        for file in (p for p in directory.rglob("*") if p.is_file()):
            target = shadow / file.relative_to(directory)
            target.parent.mkdir(parents=True, exist_ok=True)
            if file in changed:
                target.write_text(changed[file], encoding="utf-8")
            else:
                try:
                    target.symlink_to(file.resolve())  # every artifact store reads a link's content
                except OSError:
                    shutil.copy2(file, target)
        yield shadow


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
