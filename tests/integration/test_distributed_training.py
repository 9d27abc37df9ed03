"""Two ranks under torchrun (gloo on CPU) train a round exactly like one process on whole batches:
each rank takes half of every batch, gradients are averaged, rank 0 writes the checkpoint. 9 pairs
in batches of 4 leave a last batch of one, so one rank has nothing in it — that path is taken too."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from alignflow.components.config import TinyModelConfig, load_config
from alignflow.components.data.io import write_rows
from alignflow.components.data.schemas import PairRow
from alignflow.components.modeling.checkpoints import LoadedModel, save_checkpoint, tiny_model
from alignflow.components.stages.launch import train_round_launched
from alignflow.components.stages.results import Artifact, Checkpoint
from alignflow.components.stages.train import train_round
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.integration


def test_two_torchrun_ranks_train_a_round_like_one_process(tmp_path, tokenizer):
    policy = LoadedModel(tiny_model(tokenizer, TinyModelConfig(), seed=0), tokenizer, "tiny-dist", None)
    policy_dir = save_checkpoint(policy, tmp_path / "policy", {"model_id": "tiny-dist"})
    pairs = tmp_path / "pairs.jsonl"
    write_rows(pairs, [PairRow(problem_id=f"p{i}", prompt=f"Q{i}: what is {i} + 1?", chosen=f"The answer is {i + 1}.",
                               rejected=f"The answer is {i + 7}.", score_chosen=1.0, score_rejected=0.0)
                       for i in range(9)])
    overrides = tiny_overrides(tmp_path, **{"lora.enabled": "false", "preference.batch_size": "4",
                                            "preference.epochs": "2", "preference.lr": "1.0e-3",
                                            "resume_every_steps": "0"})
    single_cfg = load_config(None, overrides)
    checkpoint, pair_file = Checkpoint(path=str(policy_dir), model_id="tiny-dist"), Artifact.of(pairs)
    single = train_round(single_cfg, checkpoint, checkpoint, pair_file, 1, tmp_path / "single", tmp_path / "ref")

    ddp_cfg = load_config(None, overrides + ["launch.nproc_per_node=2"])
    seen: list[int] = []
    launched = train_round_launched(ddp_cfg, checkpoint, checkpoint, pair_file, 1, tmp_path / "ddp",
                                          tmp_path / "ref", on_step=lambda step, metrics: seen.append(step))
    assert launched.world_size == 2 and launched.reference.cached  # computed once, before the launch
    assert launched.steps == single.steps == 6 and seen == [1, 2, 3, 4, 5, 6]

    one, two = load_file(tmp_path / "single" / "model.safetensors"), load_file(tmp_path / "ddp" / "model.safetensors")
    assert one.keys() == two.keys()
    start = load_file(policy_dir / "model.safetensors")
    moved = max((one[k] - start[k]).abs().max().item() for k in one)
    assert moved > 1e-3  # training did change the weights, so agreeing below is not trivial
    for key in one:
        assert (one[key] - two[key]).abs().max().item() < 1e-5 * max(1.0, moved * 100), key
