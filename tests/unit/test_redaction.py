"""Secrets never reach MLflow params or tags (a logged param cannot be deleted)."""

from __future__ import annotations

from alignflow.components.platform.redaction import REDACTED, is_secret_key, redact_mapping, redact_value
from alignflow.components.platform.tracking import Tracker


def test_url_passwords_are_removed_but_the_rest_of_the_url_is_kept():
    assert redact_value("http://bob:s3cr3t@mlflow:5000/x") == f"http://bob:{REDACTED}@mlflow:5000/x"
    assert redact_value("postgresql+psycopg2://u:p%40ss@db/mlflow") == f"postgresql+psycopg2://u:{REDACTED}@db/mlflow"
    assert redact_value("http://127.0.0.1:5000") == "http://127.0.0.1:5000"  # a port is not a password
    assert redact_value("models:/alignflow-judge@production") == "models:/alignflow-judge@production"


def test_secret_named_keys_are_replaced_whole_and_others_are_not():
    assert is_secret_key("s3.secret_access_key") and is_secret_key("auth.password") and is_secret_key("api_key")
    assert is_secret_key("hf-token")
    assert not is_secret_key("judge.max_new_tokens") and not is_secret_key("model.source")
    redacted = redact_mapping({"auth.password": "hunter2", "eval.max_new_tokens": 40, "empty_token": ""})
    assert redacted == {"auth.password": REDACTED, "eval.max_new_tokens": "40", "empty_token": ""}


def test_the_tracker_redacts_params_and_tags_before_sending(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "redaction")
    run_id = tracker.start_run("r", tags={"endpoint": "http://u:tagpass@s3:9000"})
    tracker.log_params(run_id, {"tracking.tracking_uri": "http://u:parampass@host:5000", "db_password": "pw123"})
    tracker.set_tags(run_id, {"api_key": "k-123"})
    data = tracker.get_run(run_id).data
    logged = " ".join([*data.params.values(), *data.tags.values()])
    for secret in ("tagpass", "parampass", "pw123", "k-123"):
        assert secret not in logged
    assert data.params["tracking.tracking_uri"] == f"http://u:{REDACTED}@host:5000"
