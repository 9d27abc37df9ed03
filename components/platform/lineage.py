"""What produced an artifact: git commit, config hash, parent model, seed, input hashes."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from typing import Any


def git_commit(root: Path | None = None) -> str:
    """HEAD's sha with a '-dirty' suffix for uncommitted changes; 'unknown' outside a git repo."""
    cwd = str(root or Path.cwd())
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def lineage_record(produced_by: str, config_hash: str, seed: int, parent_model: str | None = None,
                   inputs: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "produced_by": produced_by,
        "git_commit": git_commit(),
        "config_hash": config_hash,
        "seed": seed,
        "parent_model": parent_model,
        "inputs": inputs or {},
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        **extra,
    }
