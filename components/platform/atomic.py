"""Atomic writes: a reader never sees a half-written file or checkpoint directory.

Everything is written next to its destination (same filesystem) and renamed into place, so a
crash leaves either the old state or the new one plus a stray ``.tmp-*`` that is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# mkstemp/mkdtemp create 0600/0700 entries; outputs should get the modes an ordinary open() or
# mkdir() would (teammates, DVC and servers read them), so the temp entry is re-moded before the rename
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, payload: Any) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    text = "".join(json.dumps(row, sort_keys=True, default=str) + "\n" for row in rows)
    return write_text_atomic(path, text)


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temp dir to fill; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, DIR_MODE)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def link_or_copy(src: str, dst: str) -> None:
    """Hard-link ``src`` at ``dst`` (same filesystem: no second copy of a large file), else copy it —
    a ``copy_function`` for ``shutil.copytree``. Rewrite a linked file only by rename (``write_*_atomic``),
    never in place: in place would change the original too."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
