"""Scheduled rounds that continue (issue 19) on the tiny model, a real mlflow server and Prefect's test
server: `alignflow run` once, then `continue` again and again — each round starts from production in the
registry, takes prompts no earlier round of the lineage used, continues the round numbering, and is gated
against production; a failing gate leaves production (and its cursor) alone; a continue on another machine
(another HOME, no state directory) works from the registry alone; a second run on the lineage while one
holds it refuses; a re-run of a finished night trains nothing; an exhausted source stops cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from alignflow.components.config import load_config
from tests.conftest import REPO, tiny_overrides

pytestmark = pytest.mark.integration

MODEL = "it-lineage"


def _cursor(client: MlflowClient, version: str, tmp: Path) -> dict:
    found = client.get_model_version(MODEL, version)
    assert found.run_id is not None
    local = client.download_artifacts(found.run_id, found.tags["lineage.cursor"], str(tmp / f"cursor-v{version}"))
    return json.loads(Path(local).read_text())


def _continue(overrides: list[str], *extra: str, run_key: str | None = None):
    from alignflow.flows.continuing import continue_rounds

    config = load_config(None, [*overrides, f"model.source=models:/{MODEL}@production", *extra])
    return continue_rounds(config.model_dump(mode="json"), run_key)


def _wait_for_lock(client: MlflowClient, process: subprocess.Popen, timeout: float = 400) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if client.search_registered_models(f"name = '{MODEL}.lock'"):
            return True
        time.sleep(0.5)
    return False


def test_rounds_continue_from_production_through_the_registry(prefect_harness, mlflow_server, tmp_path, monkeypatch):
    from alignflow.components.platform.lineage_lock import LineageBusyError
    from alignflow.flows.pipeline import alignment_pipeline

    overrides = tiny_overrides(tmp_path, **{"tracking.tracking_uri": mlflow_server,
                                            "tracking.experiment": "it-continue",
                                            "tracking.registered_model": MODEL, "versioning.enabled": "false",
                                            "data.arithmetic.n_train_prompts": "48"})
    client = MlflowClient(mlflow_server)
    first = alignment_pipeline(load_config(None, overrides).model_dump(mode="json"))
    assert first.version == "1" and client.get_registered_model(MODEL).aliases["production"] == "1"
    v1 = client.get_model_version(MODEL, "1")
    assert v1.tags["lineage.round"] == "2" and v1.tags["lineage.parent_version"] == "none"
    assert v1.tags["lineage.sft"] == f"models:/{MODEL}-sft/1"  # the lineage's SFT model, in the registry
    cursor = _cursor(client, "1", tmp_path)
    used = set(cursor["rounds"]["1"]) | set(cursor["rounds"]["2"])
    assert len(used) == 16 and set(cursor["trained"]) == used

    # continue: round 3 from v1 on unseen prompts, gated against v1, aliases moved
    third = _continue(overrides)
    assert (third.status, third.round_index, third.version, third.policy_in) == (
        "trained", 3, "2", f"models:/{MODEL}/1")
    assert set(third.prompt_ids).isdisjoint(used) and len(third.prompt_ids) == 8
    assert third.promotion["passed"] and "production v1" in third.promotion["compared_with"]
    assert client.get_registered_model(MODEL).aliases["production"] == "2"
    v2 = client.get_model_version(MODEL, "2")
    assert v2.tags["lineage.round"] == "3" and v2.tags["lineage.parent_version"] == f"models:/{MODEL}/1"
    assert v2.tags["lineage.id"] == v1.tags["lineage.id"]
    # its base is the version it was trained from, by URI — not a second upload of v1's weights as a base
    assert v2.tags["base_model_uri"] == f"models:/{MODEL}/1"
    assert len(client.search_model_versions("name = 'alignflow-base'")) == 1
    assert v2.tags["lineage.reference"] == f"models:/{MODEL}-sft/1"  # preference.reference=sft, by URI
    assert set(_cursor(client, "2", tmp_path)["rounds"]["3"]) == set(third.prompt_ids)
    # the round is a nested run of the scheduled run, tagged with the lineage and the parent version
    exp = client.get_experiment_by_name("it-continue")
    assert exp is not None
    [round_run] = [r for r in client.search_runs([exp.experiment_id],
                                                 f"tags.mlflow.parentRunId = '{third.parent_run_id}'")
                   if r.data.tags.get("alignflow.kind") == "round"]
    assert round_run.info.run_name == "round-3"
    assert round_run.data.tags["lineage.id"] == v1.tags["lineage.id"]
    assert round_run.data.tags["lineage.parent_version"] == f"models:/{MODEL}/1"

    # another machine: another HOME, no state directory, another workspace — production from the registry.
    # While it holds the lineage's lock, a second continue here refuses and writes nothing.
    home = tmp_path / "other-home"
    home.mkdir()
    elsewhere = [o for o in overrides if not o.startswith(("workspace=", "state_dir=", "model.cache_dir="))] + [
        f"workspace={home / 'workspace'}", f"state_dir={home / 'state'}", f"model.cache_dir={home / 'models'}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "ALIGNFLOW_"))}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), TMPDIR=str(tmp_path))
    other = subprocess.Popen([sys.executable, "-m", "alignflow.cli", "continue",
                              *[a for o in elsewhere for a in ("-s", o)]], cwd=home, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait_for_lock(client, other), "the other machine's continue never took the lineage's lock"
        with pytest.raises(LineageBusyError, match=f"lineage of '{MODEL}' is busy"):
            _continue(overrides)
        output, _ = other.communicate(timeout=900)
    finally:
        if other.poll() is None:
            other.kill()
    assert other.returncode == 0, output[-4000:]
    assert "round 4" in output and "trained" in output
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))
    assert versions == [1, 2, 3], "the refused run must not have registered anything"
    assert client.get_registered_model(MODEL).aliases["production"] == "3"
    assert client.get_model_version(MODEL, "3").tags["lineage.parent_version"] == f"models:/{MODEL}/2"
    assert not client.search_registered_models(f"name = '{MODEL}.lock'")  # released

    # a gate that cannot pass: v4 stays a candidate, production stays v3
    failed = _continue(overrides, "promotion.min_delta=1.0")
    assert (failed.status, failed.round_index, failed.version) == ("trained", 5, "4")
    assert failed.promotion["passed"] is False and failed.promotion["aliases_set"] == []
    aliases = client.get_registered_model(MODEL).aliases
    assert aliases["production"] == "3" and aliases["candidate"] == "4"
    assert "FAILED" in failed.promotion["reason"]
    production_cursor = _cursor(client, "3", tmp_path)
    assert not set(failed.prompt_ids) & set(production_cursor["trained"])

    # the next night retries from production v3 with fresh prompts (not those of the failed round 5) — and
    # crashes between registering its version and gating it
    import alignflow.flows.continuing as continuing

    def crash(*args, **kwargs):
        raise RuntimeError("the pod was evicted")

    with monkeypatch.context() as patched:
        patched.setattr(continuing, "promote_task", crash)
        with pytest.raises(RuntimeError, match="evicted"):
            _continue(overrides, run_key="night-6")
    ungated = client.get_model_version(MODEL, "5")
    assert ungated.tags["lineage.run_key"] == "night-6" and "gate_passed" not in ungated.tags
    # its re-run trains nothing and gates the version it registered
    retry = _continue(overrides, run_key="night-6")
    assert (retry.status, retry.round_index, retry.policy_in, retry.version) == ("gated", 6, f"models:/{MODEL}/3", "5")
    assert "gate_passed" in client.get_model_version(MODEL, "5").tags and retry.promotion["candidate_version"] == "5"
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 5
    retry_cursor = _cursor(client, "5", tmp_path)
    retry = retry.model_copy(update={"prompt_ids": retry_cursor["rounds"]["6"]})
    earlier = used | set(third.prompt_ids) | set(failed.prompt_ids) | set(_cursor(client, "3", tmp_path)["rounds"]["4"])
    assert len(earlier) == 40 and set(retry.prompt_ids).isdisjoint(earlier)
    assert _cursor(client, retry.version or "", tmp_path)["rounds"].keys() == {"1", "2", "3", "4", "6"}
    # re-running a finished night trains nothing
    again = _continue(overrides, run_key="night-6")
    assert (again.status, again.version, again.round_index, again.policy_in) == (
        "already_done", retry.version, 6, f"models:/{MODEL}/3")
    assert again.message.endswith("(promoted)" if retry.promotion["passed"] else "(blocked by its gate)")
    with pytest.raises(LookupError, match=f"'{MODEL}' has no version 99 at .* \\(it has versions 1–5\\)"):
        _continue(overrides, f"model.source=models:/{MODEL}/99")
    # every prompt used: the run says so and stops cleanly, registering nothing
    count = len(client.search_model_versions(f"name = '{MODEL}'"))
    exhausted = _continue(overrides)
    assert exhausted.status == "exhausted" and "already used by this lineage" in exhausted.message
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == count

    # the lineage across every run it ever had: the pipeline's rounds, then each continuing round
    from alignflow.components.evaluation.compare import lineage_series
    from alignflow.components.platform.tracking import Tracker

    series, verdicts = lineage_series(Tracker(mlflow_server, "it-continue"), v1.tags["lineage.id"])
    assert sorted(series.rounds) == [0, 1, 2, 3, 4, 5, 6] and all("eval/accuracy" in m for m in series.rounds.values())
    assert {k: verdicts[k] for k in (2, 3, 4, 5)} == {2: "v1 promoted", 3: "v2 promoted", 4: "v3 promoted",
                                                        5: "v4 blocked"}
    assert verdicts[6] in (f"v{retry.version} promoted", f"v{retry.version} blocked")
