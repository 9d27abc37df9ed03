"""A crashed run left behind: its MLflow runs stay RUNNING forever (SIGKILL runs no handler), and
the re-run that resumes its work is a new MLflow run with no visible tie to it.

Each flow records its attempt in its workspace (``attempt.json``: parent run id, pid, host). The
next attempt on the same workspace — the same config, by the content-hash layout — reads it: if
that process is still alive on this host it refuses to start (two writers, one workspace); if not,
every run of the old attempt still RUNNING is marked FAILED and the two attempts are linked by tags
(``alignflow.resumed_from`` on the new parent, ``alignflow.resumed_by`` on the old one).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import psutil

from alignflow.components.platform.atomic import write_json_atomic
from alignflow.components.platform.tracking import Tracker

ATTEMPT_FILE = "attempt.json"


class WorkspaceBusyError(RuntimeError):
    pass


@dataclass(frozen=True)
class Attempt:
    run_id: str
    pid: int
    host: str
    started: float  # the process's start time: a recycled pid is not the same process

    @classmethod
    def current(cls, run_id: str) -> Attempt:
        return cls(run_id, os.getpid(), socket.gethostname(), psutil.Process().create_time())

    def alive(self) -> bool:
        if self.host != socket.gethostname():
            return False  # another machine's pod: it holds no lock here, and its pod is gone if we run
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < 1.0
        except psutil.Error:
            return False


def read_attempt(workspace: Path) -> Attempt | None:
    path = Path(workspace) / ATTEMPT_FILE
    if not path.exists():
        return None
    try:
        return Attempt(**json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: not an attempt record ({error}); "
                         f"delete it if no run is using this workspace") from None


def check_not_running(workspace: Path) -> Attempt | None:
    """The previous attempt, once we know it is dead. Call before opening the new run."""
    previous = read_attempt(workspace)
    if previous is not None and previous.alive() and previous.pid != os.getpid():
        raise WorkspaceBusyError(f"{workspace} is in use by a running attempt (pid {previous.pid}, MLflow run "
                                 f"{previous.run_id}); wait for it, or stop it and re-run to resume")
    return previous


def _running_descendants(tracker: Tracker, run_id: str) -> list[str]:
    found, frontier = [], [run_id]
    while frontier:
        parent = frontier.pop()
        children = tracker.search_runs(f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)
        for child in children:
            frontier.append(child.info.run_id)
            if child.info.status == "RUNNING":
                found.append(child.info.run_id)
    return found


def record_attempt(tracker: Tracker, workspace: Path, run_id: str, previous: Attempt | None) -> list[str]:
    """Close the dead attempt's runs, link it to ``run_id``, and make ``run_id`` the workspace's attempt.
    Returns the run ids marked FAILED."""
    failed: list[str] = []
    if previous is not None and previous.run_id != run_id:
        try:
            old = tracker.get_run(previous.run_id)
        except Exception:  # noqa: BLE001 - another tracking server, or the run was deleted: nothing to link
            old = None
        if old is not None and old.info.status != "FINISHED":
            stale = ([previous.run_id] if old.info.status == "RUNNING" else []) + _running_descendants(
                tracker, previous.run_id)
            for stale_id in stale:
                tracker.set_tags(stale_id, {"alignflow.failure": "the process ended without closing this run "
                                                                 "(killed or crashed)"})
                tracker.end_run(stale_id, "FAILED")
            failed = stale
            tracker.set_tags(run_id, {"alignflow.resumed_from": previous.run_id})
            tracker.set_tags(previous.run_id, {"alignflow.resumed_by": run_id})
    attempt = Attempt.current(run_id)
    write_json_atomic(Path(workspace) / ATTEMPT_FILE, attempt.__dict__)
    return failed
