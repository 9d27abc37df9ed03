"""Fault injection for crash/resume tests: a real SIGKILL, not a simulated exception."""

from __future__ import annotations

import os
import signal

KILL_AFTER_ROUND_ENV = "ALIGNFLOW_KILL_AFTER_ROUND"


def maybe_kill_after_round(round_index: int) -> None:
    if os.environ.get(KILL_AFTER_ROUND_ENV) == str(round_index):
        os.kill(os.getpid(), signal.SIGKILL)


KILL_AT_TRAIN_STEP_ENV = "ALIGNFLOW_KILL_AT_TRAIN_STEP"


def kill_at_train_step(label: str):
    """An ``after_step`` hook: ALIGNFLOW_KILL_AT_TRAIN_STEP=<label>:<step> (e.g. train-r1:3) SIGKILLs
    this process once that training's step is done — after any resume state of that step is saved."""
    wanted = os.environ.get(KILL_AT_TRAIN_STEP_ENV, "")
    if not wanted.startswith(f"{label}:"):
        return None
    at = int(wanted.rsplit(":", 1)[1])

    def hook(step: int) -> None:
        if step == at:
            os.kill(os.getpid(), signal.SIGKILL)
    return hook
