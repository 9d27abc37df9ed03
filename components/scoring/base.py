"""Scorers behind one interface, their weighted combination, and the score cache.

A scorer maps (prompt, completion, the row's other columns) to a float, or to ``None`` when it
does not apply to that row (a verifier with no gold value in the row). ``scoring.scorers`` is a
weighted list: a completion's ``score`` is the weighted mean of the scores that apply; the first
scorer is the primary one, and its pass rule (score ≥ ``pass_threshold``) is what
``correct_vs_incorrect`` pairs and ``eval/accuracy`` counts.

Every scorer has an ``id`` (its config name) and a ``version`` that changes when what it computes
can change (its parameters; for a user function, the hash of its source; for a model, its id).
Both go into every scored row's lineage, and (completion, prompt, columns, version) keys the
score cache, so re-pairing or re-evaluating never re-scores.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignflow.components.config import ScorerSpec


class ScorerError(RuntimeError):
    """A scorer failed; the message names the scorer (and, for user code, the row and the exception)."""


@dataclass(frozen=True)
class ScoringItem:
    """What a scorer sees of one completion: the row's prompt as given (a string, or a list of
    messages for conversational rows), the completion text, the row's other columns."""

    prompt_id: str
    prompt: str | list[dict[str, Any]]
    completion: str
    columns: Mapping[str, Any]

    @property
    def conversational(self) -> bool:
        return isinstance(self.prompt, list)


class Scorer(ABC):
    """One entry of ``scoring.scorers``."""

    default_pass_threshold: float | None = None

    def __init__(self, spec: ScorerSpec) -> None:
        self.spec = spec

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def version(self) -> str:
        """``<type>@<hash of its settings and implementation revision>``."""
        settings = self.spec.model_dump(mode="json", exclude={"weight", "name", "batch_size"})
        blob = json.dumps([settings, self.revision()], sort_keys=True)
        return f"{self.spec.type}@{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def revision(self) -> str:
        """What else a score depends on (a user function's source hash, a model's id); bump the
        class constant REVISION when a built-in scorer's rule changes."""
        return str(getattr(self, "REVISION", "1"))

    @property
    def pass_threshold(self) -> float | None:
        return self.spec.pass_threshold if self.spec.pass_threshold is not None else self.default_pass_threshold

    @abstractmethod
    def score(self, items: Sequence[ScoringItem]) -> list[float | None]:
        """One score per item (None: not applicable).

        Raises:
            ScorerError: the scorer could not score (names the scorer, and the row for user code).
        """

    def details(self, items: Sequence[ScoringItem]) -> list[dict[str, float]]:
        """Finer verdicts than the score, per item (``{name: value}``; none by default): eval reports
        each name's mean over the rows that have it as ``eval/<id>/<name>`` (the ``constraints``
        verifier's per-kind pass rates). Not cached: only cheap scorers give any."""
        return [{} for _ in items]

    def lineage(self) -> dict[str, str]:
        return {"id": self.id, "version": self.version}


def gold_value(spec: ScorerSpec, columns: Mapping[str, Any]) -> Any | None:
    """The row's gold value for a verifier: ``gold_column``, else the first of ground_truth, answer."""
    for key in ([spec.gold_column] if spec.gold_column else ["ground_truth", "answer"]):
        if key in columns and columns[key] is not None:
            return columns[key]
    return None


@dataclass(frozen=True)
class Scored:
    """Every scorer's score of one completion, their weighted combination, the primary pass."""

    scores: dict[str, float | None]
    score: float | None
    passed: bool | None


def combine(scorers: Sequence[Scorer], per_scorer: Mapping[str, float | None]) -> Scored:
    """Weighted mean of the applicable scores (None when none applies); the primary scorer's pass."""
    applicable = [(s.spec.weight, per_scorer[s.id]) for s in scorers if per_scorer[s.id] is not None]
    total_weight = sum(w for w, _ in applicable)
    score = (sum(w * v for w, v in applicable if v is not None) / total_weight) if applicable and total_weight else None
    primary = scorers[0]
    value = per_scorer[primary.id]
    passed = None if value is None or primary.pass_threshold is None else value >= primary.pass_threshold
    return Scored(dict(per_scorer), score, passed)


class ScoreCache:
    """Scores by (scorer version, prompt id, columns, completion) in one SQLite file, shared by every
    round and evaluation of a state directory. Safe across threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, value REAL)")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    @staticmethod
    def key(version: str, item: ScoringItem) -> str:
        blob = json.dumps([version, item.prompt_id, item.prompt, dict(item.columns), item.completion],
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, float | None]:
        found: dict[str, float | None] = {}
        with self._lock, self._connect() as db:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start:start + 500])
                rows = db.execute(f"SELECT key, value FROM scores WHERE key IN ({','.join('?' * len(chunk))})",
                                  chunk).fetchall()
                found.update({k: v for k, v in rows})
        return found

    def put_many(self, items: Mapping[str, float | None]) -> None:
        with self._lock, self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO scores (key, value) VALUES (?, ?)", list(items.items()))


@dataclass
class ScoringRun:
    """The result of ``score_all``: per item, its ``Scored``; how many scores came from the cache; and
    each scorer's wall seconds (cache look-ups included), by scorer id."""

    scored: list[Scored]
    cache_hits: int
    computed: int
    seconds: dict[str, float] = field(default_factory=dict)


def score_all(scorers: Sequence[Scorer], items: Sequence[ScoringItem], cache: ScoreCache | None = None) -> ScoringRun:
    """Every scorer on every item (cached scores reused), combined per item."""
    per_scorer: dict[str, list[float | None]] = {}
    seconds: dict[str, float] = {}
    hits = computed = 0
    for scorer in scorers:
        started = time.perf_counter()
        if cache is not None:
            keys = [ScoreCache.key(scorer.version, item) for item in items]
            known = cache.get_many(keys)
            todo = [i for i, k in enumerate(keys) if k not in known]
            values: list[float | None] = [known.get(k) for k in keys]
        else:
            keys, todo = [], list(range(len(items)))
            values = [None for _ in items]
        fresh = scorer.score([items[i] for i in todo]) if todo else []
        if len(fresh) != len(todo):
            raise ScorerError(f"scorer '{scorer.id}' returned {len(fresh)} scores for {len(todo)} completions")
        for i, value in zip(todo, fresh, strict=True):
            values[i] = value
        if cache is not None and todo:
            cache.put_many({keys[i]: values[i] for i in todo})
        hits += len(items) - len(todo)
        computed += len(todo)
        per_scorer[scorer.id] = values
        seconds[scorer.id] = round(time.perf_counter() - started, 3)
    scored = [combine(scorers, {s.id: per_scorer[s.id][i] for s in scorers}) for i in range(len(items))]
    return ScoringRun(scored, hits, computed, seconds)
