"""The whole pipeline on the tiny model: Prefect (test harness), a real mlflow server, real DVC."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from alignflow.components.config import load_config
from tests.conftest import MODEL_CACHE, REPO, produced, tiny_overrides
from tests.integration.mlflow_ui import check_mlflow_ui
from tests.integration.portable import files_naming, pyfunc_predict, serve_and_ask, transformers_generate

pytestmark = pytest.mark.integration


def _run(overrides):
    from alignflow.flows.pipeline import alignment_pipeline

    return alignment_pipeline(load_config(None, overrides).model_dump(mode="json"))


def test_pipeline_tracks_registers_promotes_and_gates(prefect_harness, mlflow_server, dvc_project, tmp_path):
    overrides = tiny_overrides(dvc_project, **{"tracking.tracking_uri": mlflow_server,
                                               "tracking.experiment": "it-pipeline",
                                               "tracking.registered_model": "it-policy"})
    first = _run(overrides)
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("it-pipeline")
    assert exp is not None
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id], max_results=500)}
    parent = runs[first.parent_run_id]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["alignflow.kind"] == "pipeline"
    assert parent.data.tags["config_hash"] and parent.data.tags["git_commit"]
    assert parent.data.params["preference.loss_type"] == "sigmoid"

    children = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    rounds = sorted((r for r in children if r.data.tags.get("alignflow.kind") == "round"),
                    key=lambda r: r.info.run_name or "")
    assert [r.info.run_name for r in rounds] == ["round-1", "round-2"]
    for round_run in rounds:
        assert "eval/accuracy" in round_run.data.metrics and "time/sampling_seconds" in round_run.data.metrics
        tasks = {r.info.run_name for r in runs.values()
                 if r.data.tags.get("mlflow.parentRunId") == round_run.info.run_id}
        n = str(round_run.info.run_name).split("-")[1]
        assert tasks == {f"sample:r{n}", f"score:r{n}", f"pairs:r{n}", f"quality:r{n}", f"train:r{n}",
                         f"evaluate:r{n}"}
        assert round_run.data.metrics["quality/n_pairs"] == round_run.data.metrics["round/n_pairs"]
        assert round_run.data.metrics["quality/source/verifier"] == round_run.data.metrics["round/n_pairs"]
    assert {"prepare-data", "sft", "evaluate:baseline"} <= {r.info.run_name for r in children}

    # per-step training metrics and the per-round accuracy curve
    train_run = next(r for r in runs.values() if r.info.run_name == "train:r1")
    losses = client.get_metric_history(train_run.info.run_id, "train/loss")
    assert len(losses) >= 2 and [m.step for m in losses] == sorted(m.step for m in losses)
    for key in ("train/rewards/chosen", "train/rewards/rejected", "train/rewards/margin", "train/rewards/accuracy"):
        assert key in train_run.data.metrics
    # the reference log-probs trained against are an artifact, with their lineage beside them
    ref_files = {Path(a.path).suffix for a in client.list_artifacts(train_run.info.run_id, "reference_logps")}
    assert ref_files == {".pt", ".json"}
    curve = client.get_metric_history(parent.info.run_id, "eval/accuracy")
    assert sorted(m.step for m in curve) == [0, 1, 2]

    # dataset inputs carry the DVC hash of the tracked file
    data_run = next(r for r in runs.values() if r.info.run_name == "prepare-data")
    assert data_run.inputs is not None
    inputs = {d.dataset.name: d for d in data_run.inputs.dataset_inputs}
    eval_file = produced(first.workspace, "data/*/eval.jsonl")
    dvc_md5 = yaml.safe_load(Path(f"{eval_file}.dvc").read_text())["outs"][0]["md5"]
    assert inputs["eval"].dataset.digest == dvc_md5[:36]
    assert {t.key: t.value for t in inputs["eval"].tags}["dvc_md5"] == dvc_md5
    assert any((tmp_path / "remote").rglob("*")), "nothing was pushed to the DVC remote"

    # registry: version 1 promoted through staging to production
    assert first.promotion["passed"] is True
    model = client.get_registered_model("it-policy")
    assert model.aliases == {"candidate": "1", "staging": "1", "production": "1"}
    version = client.get_model_version("it-policy", "1")
    assert version.tags["eval_dataset"] == dvc_md5 and float(version.tags["eval_accuracy"]) >= 0
    # nothing was in production: the gate held the first version to the accuracy its rounds started from
    assert float(version.tags["baseline_accuracy"]) == first.metric_history[0] and first.metric == "eval/accuracy"
    assert "pre-round baseline" in first.promotion["compared_with"]
    assert client.list_artifacts(parent.info.run_id, "promotion")
    _production_leaves_the_platform(mlflow_server, overrides, first, dvc_project, tmp_path)

    # what a user sees: the rounds and their accuracy in the MLflow UI (headless Chromium)
    assert parent.info.run_name is not None
    check_mlflow_ui(mlflow_server, exp.experiment_id, parent.info.run_name,
                    {str(r.info.run_name): r.info.run_id for r in rounds})

    # a second run with an unreachable gate registers a candidate but must not promote it
    second = _run(overrides + ["promotion.min_delta=1.0"])
    assert second.promotion["passed"] is False
    model = client.get_registered_model("it-policy")
    assert model.aliases["production"] == "1" and model.aliases["staging"] == "1"
    assert model.aliases["candidate"] == "2"
    assert "production v1" in second.promotion["compared_with"]
    assert [v.version for v in client.search_model_versions("name = 'alignflow-base'")] == ["1"]  # once, by hash
    assert client.get_run(second.parent_run_id).data.tags["promotion.passed"] == "False"
    # the second run reused every computation (same config hash): rounds were re-reported, not redone
    timings = (Path(first.workspace) / "timings.jsonl").read_text().splitlines()
    assert sum('"sample:r1"' in line for line in timings) == 1
    resumed = [r for r in client.search_runs([exp.experiment_id],
                                             f"tags.mlflow.parentRunId = '{second.parent_run_id}'")
               if r.data.tags.get("alignflow.kind") == "round"]
    assert len(resumed) == 2 and all(r.data.tags.get("resumed") == "true" for r in resumed)


def _production_leaves_the_platform(mlflow_server: str, overrides: list[str], first, project: Path,
                                    tmp_path: Path) -> None:
    """Issue 18: the promoted version is an MLflow model of the pipeline run with a real card, and on a
    machine that never ran the pipeline (another HOME, empty caches, the state directory gone, alignflow not
    importable) pyfunc, `mlflow models serve` and the `alignflow export` directory with plain transformers
    all answer the pipeline's own greedy evaluation of that checkpoint, word for word."""
    from alignflow.components.data.formats import Example
    from alignflow.components.data.io import read_rows
    from alignflow.components.data.schemas import PredictionRow
    from alignflow.components.platform.mlflow_models import download_logged_model, logged_model_id_of
    from alignflow.components.platform.tracking import Tracker

    client = MlflowClient(mlflow_server)
    version = client.get_model_version("it-policy", "1")
    model_id = logged_model_id_of(version)
    assert model_id and version.source == f"models:/{model_id}"
    logged = client.get_logged_model(model_id)
    assert logged.source_run_id == first.parent_run_id and str(logged.status) == "READY"
    assert {("eval/accuracy", 2), ("eval/mean_length", 2)} <= {(m.key, m.step) for m in logged.metrics or []}
    outputs = client.get_run(first.parent_run_id).outputs
    assert outputs is not None and [(o.model_id, o.step) for o in outputs.model_outputs] == [(model_id, 2)]
    assert version.tags["model_format"] == "full"
    assert version.tags["base_model_uri"].startswith("models:/alignflow-base/")
    base_version = client.get_model_version("alignflow-base", version.tags["base_model_uri"].rsplit("/", 1)[1])
    assert base_version.tags["weights_sha256"] == version.tags["base_weights_sha256"]  # the base, by content
    description = version.description or ""  # the card, regenerated with the gate's report
    assert "**PASSED**" in description and "## Known limits" in description

    cfg = load_config(None, overrides)
    example = read_rows(produced(first.workspace, "data/*/eval.jsonl"), Example)[0]
    answer = next(p.completion for p in read_rows(produced(first.workspace, "round-2/eval/*/predictions.jsonl"),
                                                  PredictionRow) if p.prompt_id == example.id)
    messages = [{"role": "user", "content": str(example.prompt)}]  # the built-in rows' prompt holds the instruction
    tokens = cfg.eval.max_new_tokens
    exported = tmp_path / "exported"
    done = subprocess.run([sys.executable, "-m", "alignflow.cli", "export", "--alias", "production", "--out",
                           str(exported), *[a for o in overrides for a in ("-s", o)]], cwd=project,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert {"model.safetensors", "config.json", "tokenizer.json", "generation_config.json", "README.md"} <= {
        p.name for p in exported.iterdir()}

    state = Path(cfg.state_dir).resolve()
    hidden = state.with_name("state-elsewhere")
    state.rename(hidden)  # the producing machine's checkpoints and base model are not there to be found
    try:
        files = download_logged_model(Tracker(mlflow_server, "it-pipeline"), model_id, tmp_path / "downloaded")
        assert files_naming(files, [str(tmp_path), str(Path.home()), str(REPO), str(MODEL_CACHE)]) == []
        card = (files / "README.md").read_text()  # the whole card, regenerated with the gate's report
        assert card == (files / "artifacts" / "hf_model" / "README.md").read_text()
        for fact in ("| 2 | on_policy |", "**PASSED**", "pairs-r1", "round-1/", version.tags["weights_sha256"],
                     version.tags["eval_dataset"], "## Known limits", "preference.loss_type"):
            assert fact in card, fact
        other = tmp_path / "other-machine"
        got = pyfunc_predict("models:/it-policy@production", [{"input": {"messages": messages},
                                                               "params": {"max_tokens": tokens, "temperature": 0.0}}],
                             other / "pyfunc", mlflow_server)
        assert got["alignflow_importable"] is False and got["model_id"] == model_id
        assert got["outputs"][0]["choices"][0]["message"]["content"] == answer
        plain = transformers_generate(exported, messages, tokens, other / "transformers")
        assert plain["alignflow_importable"] is False and plain["text"] == answer
        status, body = serve_and_ask("models:/it-policy@production", {"messages": messages, "max_tokens": tokens,
                                                                      "temperature": 0.0}, other / "serve",
                                     mlflow_server)
        assert status == 200 and body["choices"][0]["message"]["content"] == answer, body
    finally:
        hidden.rename(state)


def test_reward_ensemble_curates_the_round_pairs_before_training(prefect_harness, mlflow_server, dvc_project):
    """reward.strength_mode on: a strength task trains an ensemble, writes a curated copy of the
    pair file with μ̂/σ̂ and per-pair ε, and the train task trains on that copy."""
    from alignflow.components.data.io import read_rows
    from alignflow.components.data.schemas import PairRow

    overrides = tiny_overrides(dvc_project, **{"tracking.tracking_uri": mlflow_server,
                                               "tracking.experiment": "it-strength", "rounds.n_rounds": "1",
                                               "reward.strength_mode": "smooth", "reward.ensemble_size": "2",
                                               "reward.strength_threshold": "1.0e9", "reward.smooth_epsilon": "0.2",
                                               "reward.epochs": "2", "reward.batch_size": "4"})
    result = _run(overrides)
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("it-strength")
    assert exp is not None
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id], max_results=200)}
    strength, train = runs["strength:r1"], runs["train:r1"]
    assert strength.data.params["reward.strength_mode"] == "smooth"
    assert strength.data.params["reward.ensemble_size"] == "2"
    curated = produced(result.workspace, "round-1/*/pairs-strength.jsonl")
    rows = read_rows(curated, PairRow)
    assert rows and all(r.label_smoothing == 0.2 and r.strength_std is not None for r in rows)
    assert all(r.lineage["strength"]["ensemble_seeds"] == [1000, 1001] for r in rows)
    assert strength.data.metrics["strength/n_smoothed"] == len(rows)
    assert Path(f"{curated}.dvc").exists()  # versioned like every other pair file
    assert train.inputs is not None
    trained_on = {d.dataset.name for d in train.inputs.dataset_inputs}
    assert trained_on == {"pairs-strength-r1"}


def test_mcts_round_searches_with_the_policy_and_trains_on_step_pairs(prefect_harness, mlflow_server, dvc_project):
    """rounds.kind=mcts: the round searches trees with the current policy, logs them (JSON + an
    HTML picture), writes step-level pairs with lineage and visit-count ε, and trains on them."""
    from alignflow.components.data.io import read_rows
    from alignflow.components.data.schemas import PairRow

    overrides = tiny_overrides(dvc_project, **{"tracking.tracking_uri": mlflow_server,
                                               "tracking.experiment": "it-mcts", "rounds.n_rounds": "1",
                                               "rounds.kind": "mcts", "sampling.prompts_per_round": "4",
                                               "mcts.n_iters": "1", "mcts.first_root_iterations_factor": "3",
                                               "mcts.depth_limit": "2", "mcts.max_new_tokens_per_step": "6",
                                               "mcts.filter": "false"})
    result = _run(overrides)
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("it-mcts")
    assert exp is not None
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id], max_results=200)}
    round_run, search_run, train = runs["round-1"], runs["mcts:r1"], runs["train:r1"]
    assert round_run.data.tags["round_kind"] == "mcts" and round_run.data.metrics["round/search_nodes"] > 0
    assert "eval/accuracy" in round_run.data.metrics
    assert search_run.data.params["mcts.depth_limit"] == "2"
    artifacts = {Path(a.path).name for a in client.list_artifacts(search_run.info.run_id, "trees")}
    assert artifacts == {"trees.jsonl", "tree-r1.html"}
    pairs_file = produced(result.workspace, "round-1/mcts-*/pairs.jsonl")
    rows = read_rows(pairs_file, PairRow)
    assert rows and all(not r.complete_responses for r in rows)
    assert all(r.lineage["source"] == "mcts" and "depth" in r.lineage and r.lineage["policy_model_id"] for r in rows)
    assert all(r.label_smoothing is not None and 0 <= r.label_smoothing < 0.5 for r in rows)
    assert all(r.chosen != r.rejected for r in rows)
    assert train.inputs is not None and {d.dataset.name for d in train.inputs.dataset_inputs} == {"pairs-r1"}
    assert train.data.metrics["train/loss"] > 0


def test_pair_quality_is_logged_and_its_thresholds_stop_a_round(prefect_harness, mlflow_server, dvc_project):
    """The round's pair file gets its report in MLflow (metrics, a table, the PNG) and a broken
    limit stops the round before training, naming the measure, its value and the limit."""
    import json

    from alignflow.components.collection.quality import PairQualityError

    overrides = tiny_overrides(dvc_project, **{"tracking.tracking_uri": mlflow_server,
                                               "tracking.experiment": "it-quality", "rounds.n_rounds": "1",
                                               "quality.min_pairs": "10000", "quality.max_chosen_longer_rate": "0"})
    with pytest.raises(PairQualityError, match=r"n_pairs \d+ < min_pairs 10000.*max_chosen_longer_rate 0"):
        _run(overrides)
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("it-quality")
    assert exp is not None
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id], max_results=200)}
    quality, round_run = runs["quality:r1"], runs["round-1"]
    assert quality.info.status == "FAILED" and round_run.info.status == "FAILED"
    assert "train:r1" not in runs  # nothing trained on pairs that failed their gate
    assert quality.data.metrics["quality/n_pairs"] > 0 and "quality/margin_mean" in quality.data.metrics
    names = {Path(a.path).name for a in client.list_artifacts(quality.info.run_id, "quality")}
    assert {"r1.json", "quality.png", "quality.json"} <= names
    table = json.loads(Path(client.download_artifacts(quality.info.run_id, "quality/r1.json")).read_text())
    assert "chosen_longer_rate" in [row[0] for row in table["data"]]
