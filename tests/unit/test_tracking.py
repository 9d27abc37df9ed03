"""The Tracker against a real MLflow store (sqlite): keys MLflow would refuse are sanitized and their
original names kept, and nothing it writes — params, tags, run names, datasets, registry tags and
descriptions, tables, text artifacts, gate reports — carries a secret in clear."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow.artifacts import download_artifacts

from alignflow.components.platform.mlflow_keys import sanitize_key
from alignflow.components.platform.redaction import REDACTED
from alignflow.components.platform.tracking import Tracker, original_keys

NASTY_METRICS = {"eval/pass@1": 0.5, "a:b": 1.0, "../x": 2.0, "x" * 300: 3.0, "acc%": 4.0, "eval/reward": 5.0}
SECRET_URL = "https://bob:ab/cd@host/x?api_key=KEY123"


@pytest.fixture()
def tracker(tmp_path: Path) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "tracking")


def test_nasty_metric_param_and_tag_keys_are_logged_and_read_back(tracker: Tracker):
    """`log_metrics({"eval/pass@1": 0.5})` raised MlflowException and would have killed a round."""
    run_id = tracker.start_run("keys", tags={"note@1": "t"})
    tracker.log_metrics(run_id, NASTY_METRICS, step=0)
    tracker.log_metrics(run_id, {k: v + 10 for k, v in NASTY_METRICS.items()}, step=1)
    tracker.log_params(run_id, {"judge:model": "m", "a b": "v", "ok.key": 1})
    tracker.set_tags(run_id, {"scorer/pass@k": "x"})
    data = tracker.get_run(run_id).data
    originals = original_keys(data.tags)
    for key, value in NASTY_METRICS.items():
        logged = sanitize_key(key, "metric")
        assert data.metrics[logged] == value + 10  # the latest step
        assert (logged == key) == (key == "eval/reward")  # a valid key is logged as it is
        if logged != key:
            assert originals[logged] == key
    history = tracker._client.get_metric_history(run_id, sanitize_key("eval/pass@1", "metric"))
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 10.5)]
    assert data.params[sanitize_key("judge:model", "param")] == "m" and data.params["a b"] == "v"
    assert originals[sanitize_key("judge:model", "param")] == "judge:model"
    assert data.tags[sanitize_key("note@1", "tag")] == "t" and data.tags[sanitize_key("scorer/pass@k", "tag")] == "x"
    assert {originals[sanitize_key(k, "tag")] for k in ("note@1", "scorer/pass@k")} == {"note@1", "scorer/pass@k"}


def test_the_step_metric_logger_sanitizes_too(tracker: Tracker):
    from alignflow.tasks.context import metric_logger

    run_id = tracker.start_run("steps")
    log = metric_logger(tracker, run_id, prefix="train/")
    for step in (1, 2):
        log(step, {"pass@1": 0.25 * step})
    key = sanitize_key("train/pass@1", "metric")
    assert tracker.get_run(run_id).data.metrics[key] == 0.5
    assert original_keys(tracker.get_run(run_id).data.tags)[key] == "train/pass@1"


def test_long_values_are_cut_to_mlflows_limits(tracker: Tracker, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRUNCATE_LONG_VALUES", "false")  # MLflow would raise instead of cutting
    run_id = tracker.start_run("long")
    tracker.log_params(run_id, {"p": "v" * 7000})
    tracker.set_tags(run_id, {"t": "w" * 9000})
    data = tracker.get_run(run_id).data
    assert len(data.params["p"]) == 6000 and len(data.tags["t"]) == 8000


def test_run_names_datasets_and_the_registry_are_redacted(tracker: Tracker, tmp_path: Path):
    run_id = tracker.start_run(f"judge {SECRET_URL}", tags={"endpoint": SECRET_URL})
    data_file = tmp_path / "pairs.jsonl"
    data_file.write_text("{}\n")
    tracker.log_dataset(run_id, data_file, f"pairs from {SECRET_URL}", "md5", "training",
                        extra_tags={"origin": SECRET_URL, "hf_token": "hf_secret"})
    tracker.ensure_registered_model("policy", f"trained against {SECRET_URL}")
    version = tracker.create_model_version("policy", str(tmp_path), run_id, {"endpoint": SECRET_URL, "eval/pass@1": 1},
                                           description=f"from {SECRET_URL}")
    tracker.set_version_tags("policy", version, {"db_password": "pw123", "gate.judge@2": "passed"})
    run = tracker.get_run(run_id)
    model_version = tracker.get_model_version("policy", version)
    dataset = run.inputs.dataset_inputs[0]
    logged = json.dumps([run.info.run_name, run.data.tags, dataset.dataset.name, [t.value for t in dataset.tags],
                         model_version.tags, model_version.description,
                         tracker._client.get_registered_model("policy").description])
    for secret in ("ab/cd", "KEY123", "hf_secret", "pw123"):
        assert secret not in logged
    assert run.info.run_name == f"judge https://bob:{REDACTED}@host/x?api_key={REDACTED}"
    assert model_version.tags[sanitize_key("gate.judge@2", "tag")] == "passed"
    assert original_keys(model_version.tags)[sanitize_key("eval/pass@1", "tag")] == "eval/pass@1"


def _artifact_text(tracker: Tracker, run_id: str, path: str, tmp_path: Path) -> str:
    local = download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(tmp_path / "download"),
                               tracking_uri=tracker.tracking_uri)
    return Path(local).read_text(encoding="utf-8")


def test_text_artifacts_are_uploaded_redacted_and_binaries_and_model_files_as_they_are(tracker: Tracker,
                                                                                       tmp_path: Path):
    run_id = tracker.start_run("artifacts")
    report = tmp_path / "report.md"
    report.write_text(f"# report\n\njudge: {SECRET_URL}\nHF_TOKEN=hf_abc python x.py\n", encoding="utf-8")
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"password": 98765, "endpoint": SECRET_URL, "n": 3}), encoding="utf-8")
    blob = tmp_path / "weights.bin"
    blob.write_bytes(b"\x00password=hunter2\xff")
    for path in (report, summary, blob):
        tracker.log_artifact(run_id, path, "files")
    assert report.read_text(encoding="utf-8").count("ab/cd") == 1  # the local file is left alone
    uploaded = _artifact_text(tracker, run_id, "files/report.md", tmp_path)
    assert "ab/cd" not in uploaded and "KEY123" not in uploaded and "hf_abc" not in uploaded
    assert uploaded.startswith("# report\n\njudge: https://bob:")
    assert json.loads(_artifact_text(tracker, run_id, "files/summary.json", tmp_path)) == {
        "password": REDACTED, "endpoint": f"https://bob:{REDACTED}@host/x?api_key={REDACTED}", "n": 3}
    local = download_artifacts(run_id=run_id, artifact_path="files/weights.bin", dst_path=str(tmp_path / "bin"),
                               tracking_uri=tracker.tracking_uri)
    assert Path(local).read_bytes() == blob.read_bytes()

    checkpoint = tmp_path / "checkpoint"
    (checkpoint / "notes").mkdir(parents=True)
    tokenizer_config = json.dumps({"pad_token": "<|im_end|>", "eos_token": "<|im_end|>"})
    (checkpoint / "tokenizer_config.json").write_text(tokenizer_config, encoding="utf-8")
    (checkpoint / "notes" / "lineage.jsonl").write_text(json.dumps({"source": SECRET_URL}) + "\n{bad json\n",
                                                        encoding="utf-8")
    (checkpoint / "model.safetensors").write_bytes(b"\x01\x02token=abc")
    tracker.log_artifacts(run_id, checkpoint, "model")
    assert _artifact_text(tracker, run_id, "model/tokenizer_config.json", tmp_path) == tokenizer_config
    lines = _artifact_text(tracker, run_id, "model/notes/lineage.jsonl", tmp_path).splitlines()
    assert json.loads(lines[0]) == {"source": f"https://bob:{REDACTED}@host/x?api_key={REDACTED}"}
    assert lines[1] == "{bad json"
    weights = download_artifacts(run_id=run_id, artifact_path="model/model.safetensors",
                                 dst_path=str(tmp_path / "weights"), tracking_uri=tracker.tracking_uri)
    assert Path(weights).read_bytes() == b"\x01\x02token=abc"


def test_tables_are_redacted_cell_by_cell(tracker: Tracker, tmp_path: Path):
    run_id = tracker.start_run("table")
    tracker.log_table(run_id, {"endpoint": [SECRET_URL, "http://ok:5000"], "api_key": ["k1", ""], "n": [1, 2]},
                      "quality/table.json")
    table = json.loads(_artifact_text(tracker, run_id, "quality/table.json", tmp_path))
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert rows == [{"endpoint": f"https://bob:{REDACTED}@host/x?api_key={REDACTED}", "api_key": REDACTED, "n": 1},
                    {"endpoint": "http://ok:5000", "api_key": "", "n": 2}]


def test_gate_reports_are_redacted_everywhere_they_go(tracker: Tracker, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    """publish_gate_report writes Markdown + JSON, logs both to MLflow and creates Prefect artifacts."""
    from alignflow.components.evaluation.gates import GateReport, GateResult
    from alignflow.tasks import promotion

    prefect: dict[str, Any] = {}
    monkeypatch.setattr(promotion, "create_markdown_artifact",
                        lambda markdown, **kw: prefect.__setitem__("markdown", markdown))
    monkeypatch.setattr(promotion, "create_table_artifact", lambda table, **kw: prefect.__setitem__("table", table))
    run_id = tracker.start_run("pipeline")
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "weights.bin").write_bytes(b"w")
    tracker.ensure_registered_model("policy", "")
    version = tracker.create_model_version("policy", str(checkpoint), run_id, {})
    report = GateReport("policy", version, None, gates=[
        GateResult("judge_win_rate", "skipped", None, None, f"judge {SECRET_URL} unreachable")],
        compared_with=f"the baseline from {SECRET_URL}")
    files = promotion.publish_gate_report(tracker, report, run_id, tmp_path / "promotion")
    written = [Path(files["markdown"]).read_text(encoding="utf-8"), Path(files["json"]).read_text(encoding="utf-8"),
               _artifact_text(tracker, run_id, "promotion/gate_report.md", tmp_path),
               _artifact_text(tracker, run_id, "promotion/gate_report.json", tmp_path),
               prefect["markdown"], json.dumps(prefect["table"])]
    for text in written:
        assert "ab/cd" not in text and "KEY123" not in text
        assert f"https://bob:{REDACTED}@host" in text
    json.loads(written[1])  # still valid JSON
