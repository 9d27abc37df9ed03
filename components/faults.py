"""Fault injection for crash/resume tests: a real SIGKILL, not a simulated exception."""

from __future__ import annotations

import os
import signal

KILL_AFTER_ROUND_ENV = "ALIGNFLOW_KILL_AFTER_ROUND"


def maybe_kill_after_round(round_index: int) -> None:
    if os.environ.get(KILL_AFTER_ROUND_ENV) == str(round_index):
        os.kill(os.getpid(), signal.SIGKILL)
