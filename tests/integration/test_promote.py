"""The promote flow on a real mlflow server and Prefect's test server: gates decide, the report
lands in MLflow and Prefect, a human approves through Prefect's pause/resume with a typed input,
and rollback restores the previous production version."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from alignflow.components.config import load_config
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.integration


def _register(uri: str, checkpoint: Path, accuracy: float, length: float) -> str:
    from alignflow.components.platform.tracking import Tracker
    from alignflow.components.stages.register import register_checkpoint

    tracker = Tracker(uri, "it-promote")
    run = tracker.start_run("pipeline")
    version = register_checkpoint(tracker, "it-promoted", run, checkpoint, {
        "eval_accuracy": accuracy, "eval_dataset": "md5-eval", "eval_kl": 0.1, "eval_mean_length": length})
    tracker.end_run(run)
    return version


def _wait_for_paused_run(timeout: float = 120):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
            if runs:
                return runs[0]
            time.sleep(1)
    raise AssertionError("the promote run never paused for approval")


def test_gates_report_approval_and_rollback(prefect_harness, mlflow_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    from alignflow.components.data.arithmetic import generate_split, task_row
    from alignflow.components.data.formats import normalize
    from alignflow.components.data.io import write_rows
    from alignflow.components.modeling.checkpoints import materialize_base
    from alignflow.components.platform import registry
    from alignflow.components.platform.tracking import Tracker
    from alignflow.flows.promote import promote

    overrides = tiny_overrides(tmp_path, **{"tracking.tracking_uri": mlflow_server, "tracking.experiment": "it-promote",
                                            "tracking.registered_model": "it-promoted",
                                            "promotion.min_delta": "0.01", "promotion.max_length_drift": "0.5"})
    cfg = load_config(None, overrides)
    checkpoint = materialize_base(cfg.model, cfg.seed, cfg.state_dir)
    client = MlflowClient(mlflow_server)

    v1 = _register(mlflow_server, checkpoint, 0.30, 40)
    first = promote(cfg.model_dump(mode="json"), v1)
    assert first["decision"] == "promoted" and client.get_registered_model("it-promoted").aliases["production"] == v1

    v2 = _register(mlflow_server, checkpoint, 0.30, 40)  # no better than production: blocked
    second = promote(cfg.model_dump(mode="json"), v2)
    assert second["decision"] == "blocked" and second["aliases_set"] == []
    tags = client.get_model_version("it-promoted", v2).tags
    assert tags["gate_passed"] == "False" and tags["gate.metric_delta"] == "failed"
    assert tags["gate.kl_budget"] == "skipped" and tags["gate.length_drift"] == "passed"
    run_id = client.get_model_version("it-promoted", v2).run_id
    assert run_id is not None
    assert {Path(a.path).name for a in client.list_artifacts(run_id, "promotion")} == {"gate_report.md",
                                                                                          "gate_report.json"}
    with get_client(sync_client=True) as prefect_client:
        keys = {a.key for a in prefect_client.read_artifacts()}
    assert {f"gate-it-promoted-v{v2}", f"gate-it-promoted-v{v2}-table"} <= keys

    # v3 is better; a human must approve; the judge win-rate gate runs (the tiny base as judge)
    held_out = [normalize(task_row(p), "auto", f"eval:row {i}", role="eval")
                for i, p in enumerate(generate_split(4, 0, [1], 10, "promote-eval"), start=1)]
    eval_path = write_rows(tmp_path / "eval.jsonl", held_out)
    v3 = _register(mlflow_server, checkpoint, 0.40, 42)
    gated = load_config(None, overrides + ["promotion.require_approval=true", "promotion.min_judge_win_rate=0.0",
                                           f"promotion.judge={checkpoint}", "promotion.judge_prompts=4"])
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(promote(gated.model_dump(mode="json"), v3, str(eval_path))))
    worker.start()
    paused = _wait_for_paused_run()
    assert client.get_registered_model("it-promoted").aliases["production"] == v1  # nothing moves before approval
    resume_flow_run(paused.id, run_input={"approved": True, "reviewer": "ada", "comment": "eval looks right"})
    worker.join(timeout=300)
    assert outcome["decision"] == "promoted" and outcome["approved_by"] == "ada: eval looks right"
    gates = {g["gate"]: g for g in outcome["gates"]}
    assert gates["judge_win_rate"]["status"] == "passed" and 0 <= gates["judge_win_rate"]["value"] <= 1
    aliases = client.get_registered_model("it-promoted").aliases
    assert aliases["production"] == v3 and aliases["previous-production"] == v1 and aliases["staging"] == v3
    assert client.get_model_version("it-promoted", v3).tags["approved_by"] == "ada: eval looks right"

    # rollback: production back to v1, and v3 says why it left
    left, restored = registry.rollback(Tracker(mlflow_server, "it-promote"), "it-promoted")
    assert (left, restored) == (v3, v1)
    assert client.get_registered_model("it-promoted").aliases["production"] == v1
    assert client.get_model_version("it-promoted", v3).tags["rolled_back_to"] == v1
    with pytest.raises(LookupError, match="previous-production"):
        registry.rollback(Tracker(mlflow_server, "it-promote"), "it-promoted")
