"""Progress bars for long work (sampling, training, eval), shared by the CLI and the flows."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; ALIGNFLOW_NO_PROGRESS=1 silences it (CI logs, tests)."""
    if os.environ.get("ALIGNFLOW_NO_PROGRESS") == "1":
        yield lambda n=1: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
