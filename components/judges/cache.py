"""Judgments cached across rounds by (prompt, response, judge model id, template hash).

SQLite (standard library) rather than a JSON file: each put is one transaction, so a crash never
leaves a half-written cache, and a round that re-judges a million pairs does not rewrite the file
for each one."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict
from pathlib import Path

from alignflow.components.judges.parsing import Judgment


def judgment_key(prompt: str, response: str, judge_model_id: str, template_hash: str,
                 sample: int | None = None) -> str:
    """``sample`` tells apart the N judgments sampled for one input (self-rationalization);
    a greedy judgment leaves it out."""
    # length-prefixed fields: ("ab", "c") and ("a", "bc") must not collide
    parts = [prompt, response, judge_model_id, template_hash] + ([] if sample is None else [str(sample)])
    payload = "".join(f"{len(p)}:{p}" for p in parts).encode()
    return hashlib.sha256(payload).hexdigest()


class JudgmentCache:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, judgment TEXT NOT NULL)")
        self._db.commit()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Judgment | None:
        row = self._db.execute("SELECT judgment FROM judgments WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return Judgment(**json.loads(row[0]))

    def put(self, key: str, judgment: Judgment) -> None:
        with self._db:  # one transaction
            self._db.execute("INSERT OR REPLACE INTO judgments (key, judgment) VALUES (?, ?)",
                             (key, json.dumps(asdict(judgment))))

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0]

    def close(self) -> None:
        self._db.close()
