"""What every task needs to report: where MLflow is, which run is its parent, where DVC lives.

Passed as the ``ctx`` argument and excluded from cache keys, so a re-run under a new MLflow
parent run still hits the cache of an identical earlier computation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel

from alignflow.components.platform import versioning
from alignflow.components.platform.atomic import write_text_atomic
from alignflow.components.platform.tracking import Tracker


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


@contextmanager
def child_run(ctx: TrackingContext, name: str, tags: dict[str, Any] | None = None) -> Iterator[tuple[Tracker, str]]:
    """One MLflow child run per task execution, marked FAILED if the body raises."""
    tracker = ctx.tracker()
    run_id = tracker.start_run(name, parent_run_id=ctx.parent_run_id, tags={"alignflow.kind": "task", **(tags or {})})
    try:
        yield tracker, run_id
    except BaseException:
        tracker.end_run(run_id, "FAILED")
        raise
    tracker.end_run(run_id, "FINISHED")


def version_outputs(ctx: TrackingContext, paths: list[Path]) -> dict[str, str]:
    """DVC-track and push outputs; returns {path: md5}. Without DVC, a plain md5 keeps lineage."""
    if ctx.dvc_root is None:
        return {str(p): versioning.content_md5(Path(p)) for p in paths}
    hashes = versioning.track(paths, Path(ctx.dvc_root))
    if ctx.dvc_push:
        versioning.push(paths, Path(ctx.dvc_root), ctx.dvc_remote)
    return hashes


def record_timing(ctx: TrackingContext, step: str, seconds: float) -> None:
    """Append to the pipeline's timing log: the record of what actually executed (cache hits do not)."""
    if ctx.timings_file is None:
        return
    path = Path(ctx.timings_file)
    previous = path.read_text() if path.exists() else ""
    write_text_atomic(path, previous + json.dumps({"step": step, "seconds": seconds, "at": time.time()}) + "\n")


def metric_logger(tracker: Tracker, run_id: str, prefix: str = "") -> Callable[[int, dict[str, float]], None]:
    def log(step: int, metrics: dict[str, float]) -> None:
        tracker.log_metrics(run_id, {f"{prefix}{k}": v for k, v in metrics.items()}, step=step)
    return log


def open_flow_context(cfg: Any, workspace: Path, run_name: str, tags: dict[str, Any],
                      params: dict[str, Any] | None = None) -> TrackingContext:
    """What every flow does first: check DVC is there when versioning is on, refuse a workspace a live
    attempt is using, open the flow's parent MLflow run (closing and linking a crashed attempt's runs),
    and return the context its tasks report through."""
    from alignflow.components.platform.recovery import check_not_running
    from alignflow.components.platform.tracking import resolve_tracking_uri
    from alignflow.components.platform.versioning import find_repo_root
    from alignflow.tasks.runs import open_run_task, record_attempt_task

    dvc_root = find_repo_root(workspace) if cfg.versioning.enabled else None
    if cfg.versioning.enabled and dvc_root is None:
        raise RuntimeError(f"versioning.enabled is true but {workspace} is not inside a DVC repo: "
                           f"run `dvc init` in the project root, or set versioning.enabled=false")
    Path(workspace).mkdir(parents=True, exist_ok=True)
    previous = check_not_running(Path(workspace))
    tracking_uri = resolve_tracking_uri(cfg.tracking.tracking_uri, cfg.state_dir)
    parent = open_run_task(tracking_uri, cfg.tracking.experiment, run_name, None, tags, params=params)
    ctx = TrackingContext(tracking_uri=tracking_uri, experiment=cfg.tracking.experiment, parent_run_id=parent,
                          dvc_root=str(dvc_root) if dvc_root else None, dvc_remote=cfg.versioning.remote,
                          dvc_push=cfg.versioning.push, timings_file=str(Path(workspace) / "timings.jsonl"))
    record_attempt_task(ctx, str(workspace), previous)
    return ctx
