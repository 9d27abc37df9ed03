"""Two ranks under torchrun (gloo on CPU) sample a round and evaluate a policy exactly like one process:
each rank generates its share of the batches (batch b seeded ``seed + b`` wherever it runs) and rank 0
writes the files. 7 prompts in batches of 2 give 4 batches, 2 + 2; 10 eval problems in batches of 4
give 3, so the ranks' shares differ in size. The files must be byte-for-byte those of one process."""

from __future__ import annotations

import pytest
import torch

from alignflow.components.config import TinyModelConfig, load_config
from alignflow.components.modeling.checkpoints import LoadedModel, save_checkpoint, tiny_model
from alignflow.components.stages.data import prepare_data
from alignflow.components.stages.evaluate import evaluate
from alignflow.components.stages.results import Checkpoint
from alignflow.components.stages.sample import sample
from alignflow.components.stages.sharded import evaluate_launched, sample_launched
from tests.conftest import produced, tiny_overrides

pytestmark = pytest.mark.integration


@pytest.fixture()
def one_thread():
    """torchrun gives each of several ranks one thread (OMP_NUM_THREADS=1); the one-process reference
    runs with one too, so any difference left would be the sharding's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_ranks_sample_and_evaluate_like_one_process(tmp_path, tokenizer, one_thread):
    checkpoints = {}
    for name, seed in (("policy", 0), ("reference", 1)):
        loaded = LoadedModel(tiny_model(tokenizer, TinyModelConfig(), seed=seed), tokenizer, f"tiny-{name}", None)
        checkpoints[name] = Checkpoint(path=str(save_checkpoint(loaded, tmp_path / name, {"model_id": f"tiny-{name}"})),
                                       model_id=f"tiny-{name}")
    overrides = tiny_overrides(tmp_path, **{"sampling.prompts_per_round": "7", "sampling.k": "2",
                                            "sampling.batch_size": "4", "sampling.max_new_tokens": "12",
                                            "eval.batch_size": "4", "eval.max_new_tokens": "10",
                                            "eval.kl_samples": "6", "data.arithmetic.n_train_prompts": "7",
                                            "data.arithmetic.n_eval": "10"})
    one, two = load_config(None, overrides), load_config(None, overrides + ["launch.nproc_per_node=2"])
    data = prepare_data(one, tmp_path / "data")  # the built-in task's rows, as the pipeline's data stage writes them
    train, eval_data = data.role("prompts"), data.eval
    assert train is not None and eval_data is not None
    policy, reference = checkpoints["policy"], checkpoints["reference"]

    single = sample(one, policy, train, 1, tmp_path / "single-sample")
    launched = sample_launched(two, policy, train, 1, tmp_path / "ranks-sample")
    assert launched.ranks == 2 and single.ranks == 1 and launched.n_samples == single.n_samples == 14
    assert launched.samples.md5 == single.samples.md5
    assert launched.samples.file.read_bytes() == single.samples.file.read_bytes()
    assert len({row for row in single.samples.file.read_text().splitlines()}) == 14  # 14 different samples

    single_eval = evaluate(one, policy, reference, eval_data, tmp_path / "single-eval", seed=3)
    launched_eval = evaluate_launched(two, policy, reference, eval_data, tmp_path / "ranks-eval", seed=3)
    assert launched_eval.ranks == 2
    assert launched_eval.metrics == single_eval.metrics and "eval/kl_to_reference" in single_eval.metrics
    assert launched_eval.predictions.md5 == single_eval.predictions.md5
    assert launched_eval.metrics_file.md5 == single_eval.metrics_file.md5
    # rank 1 wrote into a scratch directory, removed at the end: the stage's directory holds rank 0's files only
    assert produced(tmp_path / "ranks-eval", "predictions.jsonl")
    assert not list(tmp_path.glob("ranks-eval.launch/rank*"))
