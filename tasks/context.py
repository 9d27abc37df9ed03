"""What every task needs: where MLflow is and which run is its parent (``TrackingContext``), and the
one shape of a tracked stage task (``tracked_step``) — open a child run, log its inputs and params,
call the stage, DVC-track what it wrote, log metrics, tags and artifacts, record its time.

``ctx`` is excluded from cache keys, so a re-run under a new MLflow parent run still hits the cache
of an identical earlier computation. Compute tasks cache on their inputs, their own source and the
code version of the stage they call (``compute``): an edited loss re-runs the trainings that use
it, nothing else.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TypeVar

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.context import TaskRunContext
from pydantic import BaseModel

from alignflow.components.config import PipelineConfig
from alignflow.components.data.sources import sources_fingerprint
from alignflow.components.platform import versioning
from alignflow.components.platform.atomic import write_text_atomic
from alignflow.components.platform.codeversion import code_version
from alignflow.components.platform.tracking import Tracker
from alignflow.components.scoring.python import user_code_version
from alignflow.components.stages.results import Artifact, StageResult

R = TypeVar("R", bound=StageResult)
StepHook = Callable[[int, dict[str, float]], None]


class TrackingContext(BaseModel):
    tracking_uri: str
    experiment: str
    parent_run_id: str
    dvc_root: str | None = None
    dvc_remote: str | None = None
    dvc_push: bool = True
    timings_file: str | None = None

    def tracker(self) -> Tracker:
        return Tracker(self.tracking_uri, self.experiment)

    def under(self, run_id: str) -> TrackingContext:
        """The same context with ``run_id`` as the parent of what is logged next."""
        return self.model_copy(update={"parent_run_id": run_id})


def config_of(config: dict[str, Any]) -> PipelineConfig:
    """Tasks take the config as plain JSON (it is part of their cache key) and validate it once."""
    return PipelineConfig.model_validate(config)


@dataclass
class StageCode(CachePolicy):
    """Cache key part: the code version of the stage module a task calls (components.platform.codeversion)."""

    module: str = ""

    def compute_key(self, task_ctx: TaskRunContext, inputs: Optional[dict[str, Any]],
                    flow_parameters: Optional[dict[str, Any]], **kwargs: Any) -> Optional[str]:
        return code_version(self.module)


@dataclass
class UserCode(CachePolicy):
    """Cache key part: the source of the user functions the config's scorers call (a ``python``
    scorer's file), so editing one re-scores instead of returning cached scores."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: Optional[dict[str, Any]],
                    flow_parameters: Optional[dict[str, Any]], **kwargs: Any) -> Optional[str]:
        config = (inputs or {}).get("config")
        if not isinstance(config, dict):
            return None
        cfg = config_of(config)
        return user_code_version([*cfg.scoring.scorers, *([cfg.reward.labeller] if cfg.reward.labeller else [])])


@dataclass
class DataFiles(CachePolicy):
    """Cache key part: the content of the config's local data sources (``sources_fingerprint``), so a
    row appended to a prompts file is seen by the next run — the config names only the path."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: Optional[dict[str, Any]],
                    flow_parameters: Optional[dict[str, Any]], **kwargs: Any) -> Optional[str]:
        config = (inputs or {}).get("config")
        if not isinstance(config, dict):
            return None
        sources = config_of(config).data.sources
        return sources_fingerprint([s for role in ("sft", "prompts", "preferences", "eval")
                                    for s in getattr(sources, role)])


def deterministic_errors() -> tuple[type[BaseException], ...]:
    """Errors that a retry repeats exactly: bad data or config, a user's scorer that raised, pairs that
    fail the quality gate, a model source or checkpoint that does not fit, a reward_model stage without
    usable pairs, a registered model, version or alias that does not exist. (Imported here, not at module
    level: they live beside torch, which a task module need not load.)"""
    from alignflow.components.collection.quality import PairQualityError
    from alignflow.components.config import ConfigError
    from alignflow.components.data.formats import DataFormatError
    from alignflow.components.data.io import DataValidationError
    from alignflow.components.modeling.checkpoints import ModelSourceError
    from alignflow.components.platform.tracking import RegistryLookupError
    from alignflow.components.scoring.base import ScorerError
    from alignflow.components.stages.reward_model import RewardStageError
    from alignflow.components.trainers.resume import ResumeStateMismatch

    return (ConfigError, DataFormatError, DataValidationError, PairQualityError, ModelSourceError, ScorerError,
            ResumeStateMismatch, RewardStageError, RegistryLookupError)


def retry_unless_deterministic(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's ``retry_condition_fn``: retry a failed task unless it raised one of
    ``deterministic_errors()`` (a retry would only repeat it, and its message, after the delay)."""
    return not isinstance(getattr(state, "data", None), deterministic_errors())


def compute(stage_module: str, retries: int = 1) -> dict[str, Any]:
    """Task options of a compute task: cached on (inputs − ctx) + the task's source + the code version
    of ``stage_module`` + the user scorer functions' source + the content of the data source files,
    results persisted, retried once — unless
    it raised a deterministic error (``retry_unless_deterministic``)."""
    code_version(stage_module)  # fail at import, naming the module, if it does not exist
    return dict(cache_policy=(INPUTS - "ctx") + TASK_SOURCE + StageCode(module=stage_module) + UserCode()
                + DataFiles(),
                persist_result=True, retries=retries, retry_delay_seconds=2,
                retry_condition_fn=retry_unless_deterministic)


def versioned_dir(out_dir: str | Path, stage_module: str, name: str | None = None) -> Path:
    """Where a stage writes: ``<out_dir>/<name>-<code version>`` (``name``: default the module's). Output
    of other code never lands where a cached result of this code points (a reverted edit finds its
    own files intact)."""
    return Path(out_dir) / f"{name or stage_module.rsplit('.', 1)[-1]}-{code_version(stage_module)}"


@contextmanager
def child_run(ctx: TrackingContext, name: str, tags: Mapping[str, Any] | None = None
              ) -> Iterator[tuple[Tracker, str]]:
    """One MLflow child run per task execution, marked FAILED if the body raises."""
    tracker = ctx.tracker()
    run_id = tracker.start_run(name, parent_run_id=ctx.parent_run_id, tags={"alignflow.kind": "task", **(tags or {})})
    try:
        yield tracker, run_id
    except BaseException:
        tracker.end_run(run_id, "FAILED")
        raise
    tracker.end_run(run_id, "FINISHED")


def version_outputs(ctx: TrackingContext, artifacts: list[Artifact]) -> None:
    """DVC-track (and push) the files a stage wrote; DVC's hash must be the md5 the stage recorded.

    Raises:
        VersioningError: DVC failed, or recorded another hash than the stage's (the file changed
        between the stage and DVC).
    """
    if ctx.dvc_root is None or not artifacts:
        return
    paths = [a.file for a in artifacts]
    hashes = versioning.track(paths, Path(ctx.dvc_root))
    for artifact in artifacts:
        if hashes[str(artifact.file)] != artifact.md5:
            raise versioning.VersioningError(f"{artifact.path}: DVC recorded md5 {hashes[str(artifact.file)]}, the "
                                             f"stage wrote {artifact.md5}: the file changed in between")
    if ctx.dvc_push:
        versioning.push(paths, Path(ctx.dvc_root), ctx.dvc_remote)


def record_timing(ctx: TrackingContext, step: str, seconds: float) -> None:
    """Append to the pipeline's timing log: the record of what actually executed (cache hits do not)."""
    if ctx.timings_file is None:
        return
    path = Path(ctx.timings_file)
    previous = path.read_text() if path.exists() else ""
    write_text_atomic(path, previous + json.dumps({"step": step, "seconds": seconds, "at": time.time()}) + "\n")


def metric_logger(tracker: Tracker, run_id: str, prefix: str = "") -> StepHook:
    def log(step: int, metrics: dict[str, float]) -> None:
        tracker.log_metrics(run_id, {f"{prefix}{k}": v for k, v in metrics.items()}, step=step)
    return log


def section_params(section: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """A config section as MLflow params: ``{"beta": 0.1}`` → ``{"preference.beta": 0.1}``."""
    return {f"{section}.{k}": v for k, v in values.items()}


# (name, file, context) of an MLflow dataset input, optionally with (schema, profile) to show with it
Dataset = tuple[str, Artifact, str] | tuple[str, Artifact, str, dict[str, Any], dict[str, Any]]


def _log_dataset(tracker: Tracker, run_id: str, dataset: Dataset) -> None:
    label, artifact, context = dataset[0], dataset[1], dataset[2]
    schema, profile = (dataset[3], dataset[4]) if len(dataset) == 5 else (None, None)
    tracker.log_dataset(run_id, artifact.file, label, artifact.md5, context=context,
                        extra_tags={"dvc_md5": artifact.md5, "dvc_path": artifact.ref()["path"]}, schema=schema,
                        profile=profile)


def tracked_step(ctx: TrackingContext, name: str, run: Callable[[StepHook], R], *, stage_module: str,
                 inputs: Iterable[Dataset] = (), params: Mapping[str, Any] | None = None,
                 outputs: Callable[[R], Iterable[Dataset]] | None = None,
                 metrics: Callable[[R], Mapping[str, float]] | None = None,
                 tags: Callable[[R], Mapping[str, Any]] | None = None,
                 artifacts: Callable[[R], Iterable[tuple[str, str]]] | None = None,
                 tables: Callable[[R], Iterable[tuple[dict[str, list], str]]] | None = None,
                 check: Callable[[R], None] | None = None, timer: str | None = None) -> R:
    """Run one stage as a tracked step: a child MLflow run named ``name`` (tagged with the stage's code
    version) logs ``inputs`` as datasets and ``params``; ``run(on_step)`` calls the stage (``on_step``
    logs a training's per-step metrics); every Artifact of the result is DVC-tracked; then the
    result's ``outputs`` datasets, ``metrics`` (plus its wall time), ``tags`` and ``artifacts``
    ((path, artifact dir) pairs) and ``tables`` ((columns, artifact file)) are logged and its time recorded
    (``time/<timer>_seconds``, default
    the step's name). Last, ``check(result)`` may raise a verdict on what was logged (a quality limit):
    the run is then FAILED but shows why. Any failure marks the run FAILED."""
    with child_run(ctx, name, {"code_version": code_version(stage_module), "stage": stage_module}) as (tracker, run_id):
        for dataset in inputs:
            _log_dataset(tracker, run_id, dataset)
        if params:
            tracker.log_params(run_id, params)
        result = run(metric_logger(tracker, run_id))
        version_outputs(ctx, result.artifacts())
        for dataset in (outputs(result) if outputs else ()):
            _log_dataset(tracker, run_id, dataset)
        timer = timer or name.split(":")[0].replace("-", "_")
        tracker.log_metrics(run_id, {**(metrics(result) if metrics else {}), f"time/{timer}_seconds": result.seconds})
        if tags:
            tracker.set_tags(run_id, tags(result))
        for path, folder in (artifacts(result) if artifacts else ()):
            if Path(path).exists():
                tracker.log_artifact(run_id, Path(path), folder)
        for columns, artifact_file in (tables(result) if tables else ()):
            tracker.log_table(run_id, columns, artifact_file)
        if check:
            check(result)
    record_timing(ctx, name, result.seconds)
    return result
