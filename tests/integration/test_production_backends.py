"""The production tracking stack on loopback, every piece real: an MLflow server with basic-auth on,
its runs and registry on PostgreSQL (Debian's server, started here in a temp dir), its artifacts on
a SeaweedFS S3 gateway that checks request signatures. The pipeline client gets a user name and
password for MLflow and nothing else: no S3 key, no database password."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import boto3
import botocore.exceptions
import pytest
import requests

from alignflow.components.platform.services import start_mlflow, stop_process
from tests.conftest import tiny_overrides
from tests.integration.portable import files_naming, pyfunc_predict
from tests.support.services import start_postgres, start_seaweedfs

pytestmark = pytest.mark.integration

BUCKET = "alignflow-mlflow"


@pytest.fixture()
def stack(tmp_path):
    postgres = start_postgres()
    s3 = start_seaweedfs(tmp_path / "s3", access_key=f"AK{secrets.token_hex(8).upper()}",
                         secret_key=secrets.token_urlsafe(30))
    services = [postgres.stop, s3.stop]
    try:
        postgres.create_database("mlflow")
        postgres.create_database("mlflow_auth")
        boto3.client("s3", endpoint_url=s3.url, aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key,
                     region_name="us-east-1").create_bucket(Bucket=BUCKET)
        admin_password, flask_key = secrets.token_urlsafe(18), secrets.token_urlsafe(24)
        auth_ini = tmp_path / "basic_auth.ini"
        auth_ini.write_text("[mlflow]\ndefault_permission = READ\n"
                            f"database_uri = {postgres.url('mlflow_auth', 'postgresql+psycopg2')}\n"
                            "admin_username = admin\n"
                            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        server_env = {"MLFLOW_AUTH_CONFIG_PATH": str(auth_ini), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
                      "MLFLOW_FLASK_SERVER_SECRET_KEY": flask_key,  # CSRF key the auth app refuses to start without
                      "AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                      "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": s3.url}
        mlflow, process = start_mlflow(tmp_path / "mlflow", backend_uri=postgres.url("mlflow", "postgresql+psycopg2"),
                                       artifacts_destination=f"s3://{BUCKET}/artifacts", app_name="basic-auth",
                                       extra_env=server_env, timeout=180)
        services.append(lambda: stop_process(process.pid))
        yield {"url": mlflow.url, "s3": s3, "admin": ("admin", admin_password), "postgres": postgres,
               "secrets": [s3.secret_key, s3.access_key, admin_password, flask_key, postgres.password]}
    finally:
        for stop in reversed(services):
            stop()


def test_basic_auth_rejects_anonymous_writes_and_an_authenticated_pipeline_keeps_no_secret(stack, dvc_project):
    url = stack["url"]
    create = f"{url}/api/2.0/mlflow/experiments/create"
    assert requests.post(create, json={"name": "anonymous"}, timeout=30).status_code == 401
    assert requests.post(create, json={"name": "guessed"}, auth=("admin", "not-the-password"),
                         timeout=30).status_code == 401

    # the signature-checking S3 gateway refuses a client with the wrong secret
    wrong = boto3.client("s3", endpoint_url=stack["s3"].url, aws_access_key_id=stack["s3"].access_key,
                         aws_secret_access_key="wrong-secret", region_name="us-east-1")
    with pytest.raises(botocore.exceptions.ClientError):
        wrong.put_object(Bucket=BUCKET, Key="intruder", Body=b"x")

    # the admin creates the pipeline's own user; the pipeline runs with nothing but those credentials
    user, password = "pipeline", secrets.token_urlsafe(18)
    made = requests.post(f"{url}/api/2.0/mlflow/users/create", json={"username": user, "password": password},
                         auth=stack["admin"], timeout=30)
    assert made.status_code == 200, made.text
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env.update({"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password,
                "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    overrides = tiny_overrides(dvc_project, **{"tracking.tracking_uri": url, "tracking.experiment": "it-prod-backends",
                                               "tracking.registered_model": "it-prod-policy", "rounds.n_rounds": "1"})
    run = subprocess.run([sys.executable, "-m", "alignflow.cli", "run", *[a for o in overrides for a in ("-s", o)]],
                         cwd=dvc_project, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    from alignflow.components.platform.mlflow_models import download_logged_model, logged_model_id_of
    from alignflow.components.platform.tracking import Tracker

    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user, password
    try:
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("it-prod-backends")
        assert experiment is not None
        runs = client.search_runs([experiment.experiment_id], max_results=500)
        parent = next(r for r in runs if r.data.tags.get("alignflow.kind") == "pipeline")
        assert parent.info.status == "FINISHED"
        assert {r.info.status for r in runs} == {"FINISHED"}
        version = client.get_registered_model("it-prod-policy").aliases["candidate"]
        assert client.get_model_version("it-prod-policy", version).tags["pipeline_run_id"] == parent.info.run_id

        # the artifacts went through the server into the bucket (the client never had an S3 key)
        s3 = stack["s3"]
        listing = boto3.client("s3", endpoint_url=s3.url, aws_access_key_id=s3.access_key,
                               aws_secret_access_key=s3.secret_key, region_name="us-east-1")
        keys = [o["Key"] for page in listing.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                for o in page.get("Contents", [])]
        assert any(parent.info.run_id in key for key in keys), keys[:20]

        # no secret in any param, tag or artifact of any run
        forbidden = [*stack["secrets"], password]
        downloaded = Path(dvc_project.parent / "downloaded")
        for r in runs:
            logged = "\n".join([*r.data.params.values(), *r.data.tags.values()])
            for secret in forbidden:
                assert secret not in logged, f"a secret is logged in run {r.info.run_name}"
            if client.list_artifacts(r.info.run_id):
                download_artifacts(run_id=r.info.run_id, dst_path=str(downloaded / r.info.run_id),
                                   tracking_uri=url)
        # the registered version: an MLflow model in the bucket, loadable on a machine that only has the
        # MLflow user's credentials (no S3 key, no alignflow, another HOME, empty caches)
        registered = client.get_model_version("it-prod-policy", version)
        model_id = logged_model_id_of(registered)
        assert model_id and registered.source == f"models:/{model_id}"
        assert any(f"models/{model_id}/artifacts/artifacts/hf_model/model.safetensors" in key for key in keys)
        model_files = download_logged_model(Tracker(url, "it-prod-backends"), model_id, downloaded / "model")
        assert files_naming(model_files, [str(dvc_project.parent), str(Path.home())]) == []
        got = pyfunc_predict("models:/it-prod-policy@candidate",
                             [{"input": {"messages": [{"role": "user", "content": "What is 2 + 3?"}]},
                               "params": {"max_tokens": 4}}], dvc_project.parent / "other-machine", url,
                             {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password})
        assert got["alignflow_importable"] is False and got["model_id"] == model_id
        assert got["outputs"][0]["object"] == "chat.completion"

        files = [p for p in downloaded.rglob("*") if p.is_file()]
        assert files, "no artifact came back through the server"
        for path in files:
            content = path.read_bytes()
            for secret in forbidden:
                assert secret.encode() not in content, f"a secret is in artifact {path}"
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
