"""A lineage's prompt cursor (which prompts its rounds used, by content hash) and its lock in the registry
(issue 19): the next slice skips every used prompt and picks up appended rows, exhaustion stops or
recycles, a failed round's prompts count as consumed without entering production's trained set, and
the lock refuses a second holder, is released, and is taken over when its holder is dead."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest

from alignflow.components.platform.lineage_cursor import (
    PromptCursor,
    PromptsExhausted,
    consumed_counts,
    next_round_index,
    select_prompts,
)
from alignflow.components.platform.lineage_lock import LineageBusyError, is_stale, lineage_lock, lock_name


def _ids(n: int) -> list[str]:
    return [f"p{i:02d}" for i in range(n)]


def test_the_next_slice_skips_used_prompts_and_picks_up_appended_rows():
    ids = _ids(10)
    used = Counter({i: 1 for i in ids[:4]} | {ids[6]: 1})
    assert select_prompts(ids, ids, used, 3, recycle=False) == ["p04", "p05", "p07"]
    # rows appended to the source later are taken in their turn, after the older unused ones
    grown = ids + ["p10", "p11"]
    used.update(["p04", "p05", "p07", "p08", "p09"])
    assert select_prompts(grown, grown, used, 3, recycle=False) == ["p10", "p11"]


def test_an_exhausted_source_stops_naming_the_key_or_recycles_the_least_used():
    ids = _ids(4)
    used = Counter({"p00": 2, "p01": 1, "p02": 1, "p03": 3})
    with pytest.raises(PromptsExhausted, match=r"data\.sources\.prompts.*continuing\.recycle=true"):
        select_prompts(ids, ids, used, 2, recycle=False)
    assert select_prompts(ids, ids, used, 2, recycle=True) == ["p01", "p02"]  # least used, in source order


def test_a_failed_round_is_consumed_but_not_trained_and_numbering_never_repeats():
    production = PromptCursor(lineage_id="L", registered_model="m", round=3,
                              rounds={"1": ["a", "b"], "2": ["c", "d"], "3": ["e"]},
                              trained=["a", "b", "c", "d", "e"], consumed=["a", "b", "c", "d", "e"])
    failed = production.extended(4, ["f", "g"], [])
    assert failed.round == 4 and failed.trained == list("abcdefg")
    assert production.trained == list("abcde")  # production's own cursor is untouched
    counts = consumed_counts([production, failed])
    assert set(counts) == set("abcdefg") and all(v == 1 for v in counts.values())
    # the retry starts from production, skips the failed round's prompts too (fresh prompts)
    retry = production.extended(5, ["h"], counts)
    assert retry.rounds.keys() == {"1", "2", "3", "5"} and "f" in retry.consumed and "f" not in retry.trained

    class Version:
        def __init__(self, round_: int):
            self.tags = {"lineage.round": str(round_)}

    assert next_round_index([Version(2), Version(3), Version(4)]) == 5
    assert next_round_index([]) == 1


def test_a_stale_lock_is_recognised_by_a_dead_holder_or_its_age():
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    here = socket.gethostname()
    assert is_stale({"host": here, "pid": dead.stdout.strip(), "acquired_at": str(time.time())}, 3600)
    assert is_stale({"host": here, "pid": str(os.getpid()), "acquired_at": str(time.time())}, 3600) is None
    assert is_stale({"host": "elsewhere", "pid": "1", "acquired_at": str(time.time() - 7200)}, 3600)
    assert is_stale({"host": "elsewhere", "pid": "1", "acquired_at": str(time.time())}, 3600) is None


def test_the_registry_lock_refuses_a_second_holder_and_takes_over_a_dead_ones(tmp_path):
    from alignflow.components.platform.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "lock")
    with lineage_lock(tracker, "m", holder_run="run-1") as token:
        held = tracker.registered_model_tags(lock_name("m"))
        assert held is not None and held["holder_id"] == token and held["run"] == "run-1"
        with pytest.raises(LineageBusyError, match=r"lineage of 'm' is busy.*run-1"):
            with lineage_lock(tracker, "m", wait_s=1.0, poll_s=0.2):
                pass
    assert tracker.registered_model_tags(lock_name("m")) is None  # released
    # a holder that died without releasing: its lock is stale and taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert tracker.create_registered_model_exclusive(lock_name("m"), "lock", {
        "holder_id": "dead", "host": socket.gethostname(), "pid": dead, "acquired_at": str(time.time())})
    with lineage_lock(tracker, "m") as token:
        assert tracker.registered_model_tags(lock_name("m"))["holder_id"] == token  # type: ignore[index]
    assert tracker.registered_model_tags(lock_name("m")) is None


def test_a_pipeline_cursor_records_what_its_rounds_drew_and_the_slice_file_holds_the_next_unused(tmp_path):
    from alignflow.components.config import load_config
    from alignflow.components.data.formats import Example
    from alignflow.components.data.io import read_rows, write_rows
    from alignflow.components.stages.common import round_prompts
    from alignflow.components.stages.continuing import pipeline_cursor, slice_prompts
    from alignflow.components.stages.results import Artifact

    rows = [Example(prompt=f"question {i}", origin=f"prompts.jsonl:row {i + 1}") for i in range(10)]
    prompts = Artifact.of(write_rows(tmp_path / "prompts.jsonl", rows))
    cfg = load_config(None, ["sampling.prompts_per_round=3"])
    cursor = pipeline_cursor(cfg, prompts, [1, 2], "L", "m")
    assert cursor.round == 2 and cursor.rounds["1"] == [r.id for r in rows[:3]]
    assert cursor.rounds["2"] == [r.id for r in rows[3:6]] and len(cursor.trained) == 6
    sliced = slice_prompts(cfg, prompts, dict(consumed_counts([cursor])), tmp_path / "round-3")
    assert sliced.ids == [r.id for r in rows[6:9]] and (sliced.available, sliced.unused) == (10, 4)
    assert sliced.prompts is not None
    written = read_rows(sliced.prompts.file, Example)
    assert [r.id for r in written] == sliced.ids
    # the round's own slicing (round_prompts) takes exactly this file, in its order
    assert [r.id for r in round_prompts(written, 3, 3)] == sliced.ids
    everything = dict.fromkeys([r.id for r in rows], 1)
    done = slice_prompts(cfg, prompts, everything, tmp_path / "round-4")
    assert done.prompts is None and done.exhausted and "continuing.recycle" in done.exhausted


def test_a_live_holder_beats_so_its_lock_never_looks_stale(tmp_path):
    from alignflow.components.platform.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "beat")
    with lineage_lock(tracker, "m", stale_after_s=3.0, heartbeat_s=0.3):
        time.sleep(4.0)  # longer than stale_after_s: without heartbeats the lock would be stale now
        held = tracker.registered_model_tags(lock_name("m"))
        assert held is not None and float(held["heartbeat_at"]) > float(held["acquired_at"])
        assert is_stale(held, 3.0) is None
        with pytest.raises(LineageBusyError):
            with lineage_lock(tracker, "m", stale_after_s=3.0):
                pass
    # a holder on another machine that stopped beating: stale once its last heartbeat is old enough
    assert is_stale({"host": "elsewhere", "pid": "1", "acquired_at": "0", "heartbeat_at": str(time.time() - 5)}, 3.0)


def test_a_heartbeat_slower_than_a_third_of_the_staleness_is_refused():
    from alignflow.components.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"continuing.lock_heartbeat_s=600.0 must be at most a third"):
        load_config(None, ["continuing.lock_heartbeat_s=600", "continuing.lock_stale_after_s=900"])
