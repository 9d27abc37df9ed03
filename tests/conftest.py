"""Shared fixtures: tiny configs, a tokenizer, real services on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("ALIGNFLOW_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
MODEL_CACHE = Path(os.environ.get("ALIGNFLOW_TEST_MODEL_CACHE", "~/.cache/alignflow/models")).expanduser()


def tiny_overrides(tmp: Path, **extra: str) -> list[str]:
    """A pipeline that exercises every stage with the tiny model in seconds."""
    base = {
        "workspace": str(tmp / "workspace"), "state_dir": str(tmp / "state"),
        "model.source": "tiny", "model.cache_dir": str(MODEL_CACHE),
        "lora.enabled": "false",
        "data.arithmetic.n_sft": "16", "data.arithmetic.n_train_prompts": "16", "data.arithmetic.n_eval": "12",
        "sft.batch_size": "8", "sft.lr": "5.0e-3", "sft.epochs": "8",
        "sampling.prompts_per_round": "8", "sampling.k": "2", "sampling.max_new_tokens": "8",
        "sampling.batch_size": "16",
        "pairs.strategy": "best_vs_worst",
        "preference.batch_size": "4",
        "eval.batch_size": "12", "eval.max_new_tokens": "8", "eval.kl_samples": "4",
        "rounds.n_rounds": "2",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def produced(root: Path | str, pattern: str) -> Path:
    """The one file a run wrote that matches ``pattern`` under ``root`` (stages write into
    ``<dir>/<stage>-<code version>/``, so tests find outputs by name, not by a fixed path)."""
    found = sorted(Path(root).glob(pattern))
    assert len(found) == 1, f"expected one {pattern} under {root}, found {found}"
    return found[0]


@pytest.fixture(scope="session")
def tokenizer():
    from alignflow.components.modeling.checkpoints import load_tokenizer, smollm2_directory

    return load_tokenizer(smollm2_directory(MODEL_CACHE))


@pytest.fixture()
def tiny_loaded(tokenizer):
    from alignflow.components.config import TinyModelConfig
    from alignflow.components.modeling.checkpoints import LoadedModel, tiny_model

    return LoadedModel(model=tiny_model(tokenizer, TinyModelConfig(), seed=0), tokenizer=tokenizer,
                       model_id="tiny-test", path=None)


@pytest.fixture()
def dvc_project(tmp_path: Path) -> Path:
    """A fresh git + DVC project with a local remote, as a user's checkout would be."""
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    # git ignores the state directory (tiny_overrides' state/), as this repository ignores .alignflow/: DVC
    # refuses to track a git-ignored file, so a stage that versions what it wrote there fails here as for a user
    (project / ".gitignore").write_text("state/\n")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(tmp_path / "remote")],
                   cwd=project, check=True)
    return project


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` subprocess (sqlite backend, local artifacts) on a free loopback port."""
    from alignflow.components.platform.services import start_mlflow, stop_process

    state = tmp_path_factory.mktemp("mlflow-server")
    service, process = start_mlflow(state)
    yield service.url
    stop_process(process.pid)


@pytest.fixture(scope="module")
def prefect_harness(tmp_path_factory):
    """Prefect's test server for the flows of one test module, results persisted to a temp dir."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, PREFECT_RESULTS_PERSIST_BY_DEFAULT, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage, PREFECT_RESULTS_PERSIST_BY_DEFAULT: True}):
            yield


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """A datasets cache dir of the test's own (nothing lands in ~/.cache)."""
    return tmp_path / "hf-cache"
