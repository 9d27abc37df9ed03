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

from components import versioning
from components.atomic import write_text_atomic
from components.tracking import Tracker


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
