"""One continuing round at a time per lineage, across machines: a lock held in the MLflow registry.

The lock of registered model ``<name>`` is a registered model named ``<name>.lock``. Creating a
registered model fails when the name exists, so creating it is an atomic test-and-set on whatever
database backs the registry (SQLite, PostgreSQL, a tracking server); deleting it releases the lock. Its
tags say who holds it (host, pid, MLflow run, since when), so a second run refuses — or, with a wait,
polls until the holder is done — with a message that names the holder.

While it holds the lock, the holder refreshes a ``heartbeat_at`` tag every ``heartbeat_s`` (a daemon
thread). A holder that died without releasing leaves a *stale* lock: one whose holder ran on this host
and whose pid is gone, or whose last heartbeat is older than ``stale_after_s`` (a holder on another
machine cannot be probed; a live one keeps beating). A stale lock is deleted and taken over, and the
takeover is logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from alignflow.components.platform.tracking import Tracker

logger = logging.getLogger("alignflow.lineage_lock")
LOCK_DESCRIPTION = ("Lock of a lineage of scheduled alignment rounds (alignflow continue): exists while a run "
                    "trains the lineage's next round; its tags name the holder. Deleted when the run ends.")


class LineageBusyError(RuntimeError):
    """Another run holds the lineage's lock (names the holder and how to proceed)."""


def lock_name(registered_model: str) -> str:
    """The registered model that is the lock of ``registered_model``'s lineage."""
    return f"{registered_model}.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(tags: dict[str, str], stale_after_s: float, now: float | None = None) -> str | None:
    """Why a held lock is stale (its holder on this host is gone, or it is older than ``stale_after_s``),
    or None when it is live."""
    now = time.time() if now is None else now
    last = max(float(tags.get("acquired_at", "0") or 0), float(tags.get("heartbeat_at", "0") or 0))
    if tags.get("host") == socket.gethostname() and tags.get("pid", "").isdigit() and not _alive(int(tags["pid"])):
        return f"its holder (pid {tags['pid']} on {tags['host']}) is no longer running"
    if now - last > stale_after_s:
        return (f"its holder's last sign of life was {now - last:.0f} s ago, more than "
                f"continuing.lock_stale_after_s={stale_after_s:.0f}")
    return None


def _describe(tags: dict[str, str]) -> str:
    since = dt.datetime.fromtimestamp(float(tags.get("acquired_at", "0") or 0), dt.timezone.utc)
    return (f"pid {tags.get('pid', '?')} on {tags.get('host', '?')}, {tags.get('run', 'run ?')}, "
            f"since {since:%Y-%m-%d %H:%M:%S} UTC")


def _heartbeat(tracker: Tracker, name: str, token: str, every_s: float, stop: threading.Event) -> None:
    """Refresh the lock's ``heartbeat_at`` while this holder still owns it (a failed refresh is logged, not
    fatal: the next one may succeed, and a lock left without beats only becomes stale)."""
    while not stop.wait(every_s):
        try:
            held = tracker.registered_model_tags(name)
            if held is None or held.get("holder_id") != token:
                logger.warning("lineage lock %s is no longer ours (taken over as stale?): heartbeat stops", name)
                return
            tracker.set_registered_model_tag(name, "heartbeat_at", f"{time.time():.3f}")
        except Exception as exc:  # noqa: BLE001 - the registry may be briefly unreachable
            logger.warning("lineage lock %s: heartbeat failed (%s)", name, exc)


@contextmanager
def lineage_lock(tracker: Tracker, registered_model: str, holder_run: str = "", wait_s: float = 0.0,
                 stale_after_s: float = 900.0, poll_s: float = 2.0, heartbeat_s: float = 60.0) -> Iterator[str]:
    """Hold the lock of ``registered_model``'s lineage for the body; yields the lock's token.

    ``wait_s``: how long to wait for a live holder (0: refuse at once). ``holder_run``: recorded in the
    lock's tags so the refusal names the run that holds it (e.g. ``prefect flow run <id>``).
    ``heartbeat_s``: how often the holder refreshes its ``heartbeat_at`` tag (keep it well under
    ``stale_after_s``).

    Raises:
        LineageBusyError: a live holder kept the lock for all of ``wait_s``.
    """
    name = lock_name(registered_model)
    token = uuid.uuid4().hex
    tags = {"holder_id": token, "host": socket.gethostname(), "pid": str(os.getpid()), "run": holder_run or "none",
            "acquired_at": f"{time.time():.3f}"}
    deadline = time.monotonic() + wait_s
    while True:
        tags["acquired_at"] = f"{time.time():.3f}"
        if tracker.create_registered_model_exclusive(name, LOCK_DESCRIPTION, tags):
            break
        held = tracker.registered_model_tags(name)
        if held is None:  # released between our create and our read: try again at once
            continue
        stale = is_stale(held, stale_after_s)
        if stale is not None:
            logger.warning("lineage lock %s is stale (%s): taking it over from %s", name, stale, _describe(held))
            # only the taker that still sees the same stale holder deletes it; a race between two takers is
            # settled by the create above (one of them gets the name)
            if tracker.registered_model_tags(name) == held:
                tracker.delete_registered_model(name)
            continue
        if time.monotonic() >= deadline:
            raise LineageBusyError(
                f"lineage of '{registered_model}' is busy: another continuing round holds its lock "
                f"(registered model '{name}': {_describe(held)}). Wait for it to finish (a second run would "
                f"train the same round twice), or raise continuing.lock_wait_s to wait; if that holder is dead, "
                f"the lock is taken over once stale (continuing.lock_stale_after_s), or delete '{name}' by hand")
        time.sleep(poll_s)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(tracker, name, token, heartbeat_s, stop), daemon=True,
                            name=f"lineage-lock-heartbeat-{registered_model}")
    beat.start()
    try:
        yield token
    finally:
        stop.set()
        beat.join(timeout=10)
        held = tracker.registered_model_tags(name)
        if held is not None and held.get("holder_id") == token:
            tracker.delete_registered_model(name)
