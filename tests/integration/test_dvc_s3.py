"""DVC push/pull against a real S3 endpoint on loopback (moto's server)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from alignflow.components.platform import versioning
from alignflow.components.platform.services import free_port, stop_process, wait_http

pytestmark = pytest.mark.integration


@pytest.fixture()
def s3_endpoint(tmp_path, monkeypatch):
    port = free_port()
    log = tmp_path / "moto.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_http(url, 60, process, log)
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    yield url
    stop_process(process.pid)


def test_track_push_and_pull_through_s3(dvc_project, s3_endpoint):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="alignflow-data")
    versioning.add_remote(dvc_project, "s3", "s3://alignflow-data/dvc", default=True,
                          options={"endpointurl": s3_endpoint})
    data = dvc_project / "workspace" / "pairs.jsonl"
    data.parent.mkdir()
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')

    hashes = versioning.track([data], dvc_project)
    assert hashes[str(data)] == versioning.content_md5(data)
    versioning.push([data], dvc_project)

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="alignflow-data").get("Contents", [])]
    md5 = hashes[str(data)]
    assert any(k.endswith(md5[2:]) for k in keys), keys

    # lose the workspace copy and the local cache; pull must restore it from S3
    data.unlink()
    shutil.rmtree(dvc_project / ".dvc" / "cache")
    subprocess.run([sys.executable, "-m", "dvc", "pull", "-q"], cwd=dvc_project, check=True,
                   env={**os.environ})
    assert versioning.content_md5(data) == md5


def test_push_to_a_dead_endpoint_fails_clearly(dvc_project):
    port = free_port()  # nothing listens here
    versioning.add_remote(dvc_project, "dead", "s3://bucket/x", default=True,
                          options={"endpointurl": f"http://127.0.0.1:{port}"})
    data = dvc_project / "f.txt"
    data.write_text("x")
    versioning.track([data], dvc_project)
    with pytest.raises(versioning.VersioningError, match="dvc push"):
        versioning.push([data], dvc_project)
    assert data.read_text() == "x"  # nothing lost locally


def test_mlflow_server_stores_artifacts_on_s3(s3_endpoint, tmp_path):
    """`alignflow up --artifacts s3://… --s3-endpoint …`: the server proxies artifacts into the bucket."""
    from mlflow import MlflowClient

    from alignflow.components.platform.services import start_mlflow

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="mlflow-artifacts")
    service, process = start_mlflow(tmp_path / "state", artifacts_destination="s3://mlflow-artifacts/store",
                                    extra_env={"MLFLOW_S3_ENDPOINT_URL": s3_endpoint})
    try:
        client = MlflowClient(service.url)
        run_id = client.create_run(client.create_experiment("s3-artifacts")).info.run_id
        report = tmp_path / "gate_report.md"
        report.write_text("# gate\n")
        client.log_artifact(run_id, str(report), "promotion")
        keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_endpoint)
                .list_objects_v2(Bucket="mlflow-artifacts").get("Contents", [])]
        assert any(k.endswith("promotion/gate_report.md") for k in keys), keys
    finally:
        stop_process(process.pid)


def test_a_pipeline_whose_s3_is_down_retries_fails_clearly_and_resumes_once_it_is_back(dvc_project, tmp_path,
                                                                                      monkeypatch):
    """S3 down during the first push: the task retries, the run fails naming the push, every output
    stays on disk and in DVC's cache; with the endpoint back, the same command finishes and pushes."""
    from tests.conftest import tiny_overrides

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    versioning.add_remote(dvc_project, "artifacts", "s3://alignflow-data/dvc", default=True,
                          options={"endpointurl": endpoint})
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    args = [a for o in tiny_overrides(dvc_project, **{"rounds.n_rounds": "0", "versioning.remote": "artifacts",
                                                      "tracking.experiment": "it-s3-down"}) for a in ("-s", o)]
    command = [sys.executable, "-m", "alignflow.cli", "run", *args]

    down = subprocess.run(command, cwd=dvc_project, env=env, capture_output=True, text=True, timeout=600)
    output = down.stdout + down.stderr
    assert down.returncode != 0
    assert "Retry 1/1" in output, output[-3000:]  # the task's own retry (tasks/context.py compute)
    assert "dvc push" in output and "prepare-data" in output, output[-3000:]
    assert "ERROR" in output and "endpoint" in output.lower(), output[-3000:]  # DVC's cause, not just its banner
    data = next((dvc_project / "workspace").iterdir()) / "data"
    written = sorted(data.glob("*/*.jsonl"))  # data/<stage>-<code version>/
    assert written and all(Path(f"{p}.dvc").exists() for p in written)
    for path in written:  # in DVC's local cache, so nothing waits on S3 to be recoverable
        md5 = versioning.dvc_file_hash(path)
        assert (dvc_project / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).exists()

    log = tmp_path / "moto.log"
    with open(log, "wb") as handle:
        moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(endpoint, 60, moto, log)
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
        s3.create_bucket(Bucket="alignflow-data")
        back = subprocess.run(command, cwd=dvc_project, env=env, capture_output=True, text=True, timeout=900)
        assert back.returncode == 0, (back.stdout + back.stderr)[-3000:]
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="alignflow-data").get("Contents", [])}
        for path in written:
            md5 = versioning.dvc_file_hash(path)
            assert any(k.endswith(md5[2:]) for k in keys), (path, keys)
    finally:
        stop_process(moto.pid)
