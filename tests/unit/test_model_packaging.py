"""Registry versions as MLflow models, on the tiny model and a real MLflow store (sqlite, the store
`alignflow run` uses without `alignflow up`): portable directories, the chat and reward pyfuncs, the
registration stage, the model card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow.exceptions import MlflowException

from alignflow.components.config import LoraSettings
from alignflow.components.modeling.checkpoints import attach_lora, load_checkpoint, save_checkpoint


@pytest.fixture()
def lora_checkpoint(tmp_path, tiny_loaded) -> Path:
    """A LoRA checkpoint as the pipeline writes one: its base named by this machine's absolute path,
    lineage with a DVC-relative pair file, an id that embeds a path."""
    base = save_checkpoint(tiny_loaded, tmp_path / "state" / "base", {"model_id": "tiny-base", "parent": None,
                                                                      "produced_by": "tiny-init"})
    policy = attach_lora(load_checkpoint(base), LoraSettings(r=4, alpha=8, target_modules=["q_proj", "v_proj"]), 0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # lora_B starts at zero: make the adapter change the outputs
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return save_checkpoint(policy, tmp_path / "state" / "round-1", {
        "model_id": "round1@cafe", "base_path": str(base), "parent": "sft@cafe", "produced_by": "preference:sigmoid",
        "inputs": {"pairs": {"md5": "0123abcd", "path": "workspace/cafe/round-1/pairs.jsonl"},
                   "reference": f"local:{base}", "scratch": str(tmp_path / "scratch.jsonl")},
        "git_commit": "abc123", "config_hash": "cafe"})


def _logits(directory: Path) -> torch.Tensor:
    loaded = load_checkpoint(directory, merge=True)
    with torch.no_grad():
        return loaded.model(torch.tensor([[1, 17, 42, 99, 7]])).logits


def _local_paths(directory: Path, needles: list[str]) -> list[str]:
    return [f"{p.relative_to(directory)}: {n}" for p in sorted(directory.rglob("*")) if p.is_file()
            for n in needles if n.encode() in p.read_bytes()]


def test_portable_metadata_keeps_identities_and_drops_every_local_path():
    from alignflow.components.modeling.export import portable_metadata

    meta = {"model_id": "round2@x", "base_path": "/root/.cache/m", "gguf_path": "/usr/lib/x.gguf",
            "parent": "round1@x", "inputs": {"pairs": {"md5": "ab", "path": "workspace/h/round-2/pairs.jsonl"},
                                             "old": "/work/ws/pairs.jsonl", "uri": "file:///tmp/x"},
            "reference": "local:/home/me/models/sft", "base": {"uri": "models:/alignflow-base/3", "sha256": "ff"},
            "list": ["/abs", "rel/path"], "seed": 3, "parent_version": None}
    pairs = {"md5": "ab", "path": "workspace/h/round-2/pairs.jsonl"}
    assert portable_metadata(meta) == {
        "model_id": "round2@x", "parent": "round1@x", "inputs": {"pairs": pairs},
        "reference": "local:sft", "base": {"uri": "models:/alignflow-base/3", "sha256": "ff"}, "list": ["rel/path"],
        "seed": 3, "parent_version": None}


def test_a_merged_directory_is_the_evaluated_model_and_names_no_local_path(tmp_path, lora_checkpoint):
    from alignflow.components.modeling.export import write_model_directory
    from alignflow.components.platform.versioning import weights_sha256

    out = write_model_directory(lora_checkpoint, tmp_path / "out", merge=True, readme="# card\n",
                                generation={"do_sample": False, "max_new_tokens": 9})
    assert out.format == "merged" and out.dtype == "float32" and out.weights_sha256 == weights_sha256(out.path)
    assert not (out.path / "adapter_config.json").exists()
    assert torch.equal(_logits(out.path), _logits(lora_checkpoint))  # float32 merge: bit-for-bit what eval loads
    assert _local_paths(out.path, [str(tmp_path), str(Path.home())]) == []
    meta = json.loads((out.path / "alignflow_model.json").read_text())
    assert meta["inputs"] == {"pairs": {"md5": "0123abcd", "path": "workspace/cafe/round-1/pairs.jsonl"},
                              "reference": "local:base"}
    assert meta["git_commit"] == "abc123" and meta["config_hash"] == "cafe" and "base_path" not in meta
    assert (out.path / "README.md").read_text() == "# card\n"
    assert json.loads((out.path / "generation_config.json").read_text())["max_new_tokens"] == 9
    assert (out.path / "chat_template.jinja").exists() or "chat_template" in (out.path / "tokenizer_config.json"
                                                                              ).read_text()
    half = write_model_directory(lora_checkpoint, tmp_path / "half", merge=True, dtype="float16")
    weights = [(d / "model.safetensors").stat().st_size for d in (half.path, out.path)]
    assert weights[0] < 0.51 * weights[1] and half.dtype == "float16"
    with pytest.raises(ValueError, match="dtype 'float8'"):
        write_model_directory(lora_checkpoint, tmp_path / "bad", dtype="float8")


def test_an_adapter_directory_names_its_base_by_uri(tmp_path, lora_checkpoint):
    from alignflow.components.modeling.export import write_model_directory

    out = write_model_directory(lora_checkpoint, tmp_path / "out", merge=False,
                                base_reference="models:/alignflow-base/1")
    assert out.format == "adapter" and out.size_bytes < 5_000_000
    config = json.loads((out.path / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "models:/alignflow-base/1"
    assert not (out.path / "README.md").exists()  # PEFT's empty template never travels
    assert _local_paths(out.path, [str(tmp_path)]) == []


def test_the_pyfunc_and_alignflow_hash_weights_the_same_way(lora_checkpoint):
    from alignflow.components.platform.pyfunc import chat_model
    from alignflow.components.platform.versioning import weights_sha256

    base = Path(json.loads((lora_checkpoint / "alignflow_model.json").read_text())["base_path"])
    assert chat_model.weights_sha256(base) == weights_sha256(base) != weights_sha256(lora_checkpoint)


def test_registering_logs_an_mlflow_model_that_answers_as_the_pipeline_evaluates(tmp_path, lora_checkpoint,
                                                                               monkeypatch):
    """On the sqlite store: a merged and an adapter version of one checkpoint (one base registered, by
    hash), both MLflow models linked to the run and its final metrics; downloaded, both are the checkpoint's
    weights; loaded as pyfuncs, both answer greedily what the pipeline's evaluation answers — the adapter
    folded into the base the registry holds, refused when that base is not the content it was trained on;
    exported with --merge's code, the adapter version is the checkpoint's weights again."""
    import mlflow.pyfunc

    from alignflow.components.data.prompts import render_prompt
    from alignflow.components.modeling.generation import generate_completions
    from alignflow.components.platform import registry
    from alignflow.components.platform.mlflow_models import download_logged_model, logged_model_id_of
    from alignflow.components.platform.tracking import Tracker
    from alignflow.components.stages.register import Packaging, register_checkpoint

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "packaging")
    run = tracker.start_run("pipeline", tags={"alignflow.kind": "pipeline"})
    tracker.log_metrics(run, {"eval/accuracy": 0.25}, step=0)
    tracker.log_metrics(run, {"eval/accuracy": 0.5, "eval/mean_length": 6.0}, step=1)
    tags = {"eval_accuracy": 0.5, "baseline_accuracy": 0.25, "pipeline_run_id": run}
    merged = register_checkpoint(tracker, "policy", run, lora_checkpoint, tags, Packaging(max_tokens=6), step=1)
    adapter = register_checkpoint(tracker, "policy", run, lora_checkpoint, tags,
                                  Packaging(format="adapter", max_tokens=6), step=1)
    tracker.end_run(run)

    versions = {v: tracker.get_model_version("policy", v) for v in (merged, adapter)}
    candidate = registry.version_for_alias(tracker, "policy", "candidate")
    assert candidate is not None and str(candidate.version) == adapter
    assert [versions[v].tags["model_format"] for v in (merged, adapter)] == ["merged", "adapter"]
    assert {v.tags["base_model_uri"] for v in versions.values()} == {"models:/alignflow-base/1"}  # registered once
    assert int(versions[adapter].tags["size_bytes"]) < int(versions[merged].tags["size_bytes"]) / 3
    ids = [logged_model_id_of(versions[v]) or "" for v in (merged, adapter)]
    assert all(ids)
    outputs = tracker.get_run(run).outputs
    assert outputs is not None and {o.model_id for o in outputs.model_outputs} == set(ids)  # the Models column
    logged = tracker.get_logged_model(ids[0])
    assert str(logged.status) == "READY" and logged.source_run_id == run
    assert {(m.key, m.step) for m in logged.metrics or []} == {("eval/accuracy", 1), ("eval/mean_length", 1)}
    for v in (merged, adapter):  # the card is the description and the README, from what the run logged
        card = versions[v].description
        assert card.startswith("---\n") and "## Known limits" in card and "| 1 |" in card and "None" not in card

    questions = ["What is 2 + 3?", "Tom has 4 apples and eats 1."]
    evaluated = load_checkpoint(lora_checkpoint, merge=True)  # greedy, one prompt at a time, as the eval stage
    expected = [c.text for c in generate_completions(
        evaluated.model, evaluated.tokenizer, [render_prompt(evaluated.tokenizer, q) for q in questions], k=1,
        do_sample=False, max_new_tokens=6, batch_size=1)]
    from alignflow.components.data.prompts import INSTRUCTION

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracker.tracking_uri)  # where the adapter's pyfunc finds its base
    expected_logits = _logits(lora_checkpoint)
    for number, model_id in zip((merged, adapter), ids):
        local, _ = registry.download_version(tracker, "policy", "", tmp_path / "cache", versions[number])
        assert torch.equal(_logits(local), expected_logits)
        root = download_logged_model(tracker, model_id, tmp_path / f"model-{number}")
        assert (root / "artifacts" / "hf_model" / "README.md").read_text() == versions[number].description
        requirements = (root / "requirements.txt").read_text().split()
        assert requirements[:2] == ["mlflow==3.17.2", "torch==2.13.0"]  # pinned, no local +cpu label
        assert ("peft==" in " ".join(requirements)) == (number == adapter)
        assert _local_paths(root, [str(tmp_path), str(Path.home())]) == []
        model = mlflow.pyfunc.load_model(str(root))
        answers = [model.predict({"messages": [{"role": "user", "content": f"{q}\n{INSTRUCTION}"}]},
                                 params={"max_tokens": 6})["choices"][0]["message"]["content"] for q in questions]
        assert answers == expected
    request = {"messages": [{"role": "user", "content": "Hi"}]}
    for params, message in [({"max_tokens": 100_000}, "max_tokens 100000 does not fit: the model's context is 1024"),
                            ({"max_tokens": 0}, "max_tokens must be a positive integer"),
                            ({"temperature": -1.0}, "temperature must be >= 0"),
                            ({"top_p": 0.0}, r"top_p must be in \(0, 1\]")]:
        with pytest.raises(MlflowException, match=message) as raised:  # a 400 when served, not a 500
            model.predict(request, params=params)
        assert raised.value.error_code == "INVALID_PARAMETER_VALUE"

    from alignflow.components.modeling.export import write_model_directory

    local, _ = registry.download_version(tracker, "policy", "", tmp_path / "cache", versions[adapter])
    exported = write_model_directory(local, tmp_path / "exported", merge=True, dtype=None)  # `export --merge`
    assert exported.format == "merged" and not (exported.path / "adapter_config.json").exists()
    assert torch.equal(_logits(exported.path), expected_logits)
    adapter_root = tmp_path / f"model-{adapter}"
    meta_file = adapter_root / "artifacts" / "hf_model" / "alignflow_model.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "base": {**meta["base"], "sha256": "0" * 64}}))
    with pytest.raises(Exception, match="not the one this adapter needs"):
        mlflow.pyfunc.load_model(str(adapter_root))


def test_the_reward_pyfunc_scores_what_the_reward_model_scores(tmp_path, tiny_loaded):
    import mlflow.pyfunc
    import pandas as pd

    from alignflow.components.modeling.logprobs import encode_pairs
    from alignflow.components.modeling.reward_model import RewardModel
    from alignflow.components.platform.mlflow_models import download_logged_model, log_reward_model
    from alignflow.components.platform.tracking import Tracker

    torch.manual_seed(0)
    reward = RewardModel(tiny_loaded.model, head="scalar").eval()
    with torch.no_grad():
        reward.head.bias.fill_(0.25)
    tok = tiny_loaded.tokenizer
    rows = [{"prompt": "What is 2 + 3?", "response": "The answer is 5."},
            {"prompt": "A much longer prompt about apples, pears and a basket of twelve plums.", "response": "7"}]
    with torch.no_grad():
        expected = reward(encode_pairs(tok, [r["prompt"] for r in rows], [r["response"] + tok.eos_token for r in rows],
                                       max_length=256))["reward"].tolist()
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "rewards")
    run = tracker.start_run("reward-model")
    tracker.log_metrics(run, {"reward/accuracy": 0.75}, step=2)
    logged = log_reward_model(tracker, run, reward, tok, name="reward", max_length=256, step=2, work_dir=tmp_path)
    assert str(logged.status) == "READY" and [m.key for m in logged.metrics or []] == ["reward/accuracy"]
    root = download_logged_model(tracker, logged.model_id, tmp_path / "model")
    model = mlflow.pyfunc.load_model(str(root))
    assert model.predict(pd.DataFrame(rows)) == pytest.approx(expected, abs=1e-5)
    with pytest.raises(MlflowException, match="row 1: 'response' must be text"):
        model.predict([rows[0], {"prompt": "What is 2 + 3?", "response": None}])
    assert _local_paths(root, [str(tmp_path)]) == []
    with pytest.raises(ValueError, match="only a scalar reward head"):
        log_reward_model(tracker, run, RewardModel(tiny_loaded.model, head="multi_attribute"), tok, name="r",
                         max_length=256)


def test_a_model_card_says_what_was_logged_and_never_leaves_a_field_empty():
    from alignflow.components.evaluation.model_card import (
        CardFacts,
        DataSource,
        RoundFacts,
        description_of,
        render_model_card,
    )

    tags = {"model_id": "round2@h", "eval_accuracy": "0.185", "baseline_accuracy": "0.135", "eval_dataset": "e" * 32,
            "model_format": "merged", "model_dtype": "float32", "size_bytes": "538090408", "weights_sha256": "a" * 64,
            "base_model_uri": "models:/alignflow-base/1", "base_model": "smollm2@b1", "base_weights_sha256": "b" * 64,
            "git_commit": "0fa30ef", "config_hash": "h", "eval_kl": "0.102", "eval_mean_length": "31.6"}
    facts = CardFacts("alignflow-policy", "4", "policy", tags, run_id="r" * 32, run_name="pipeline-h",
                      experiment="1", params={"model.source": "smollm2", "data.arithmetic.n_eval": "200",
                                              "sft.enabled": "True", "preference.loss_type": "sigmoid",
                                              "preference.beta": "0.1", "data.arithmetic.difficulties": "[1, 2]",
                                              "data.arithmetic.max_operand": "20", "eval.max_new_tokens": "40",
                                              "data.sources.prompts": "[{'source': 'builtin:arithmetic'}]"},
                      rounds=[RoundFacts(0, "after SFT", None, {"eval/accuracy": 0.135}),
                              RoundFacts(1, "on_policy", 36, {"eval/accuracy": 0.16, "eval/kl_to_reference": 0.4}),
                              RoundFacts(2, "on_policy", 42, {"eval/accuracy": 0.185, "eval/n": 200.0})],
                      datasets=[DataSource("pairs-r1", "pairs", "c" * 32, "workspace/h/round-1/pairs.jsonl",
                                           "pairs:r1")])
    card = render_model_card(facts)
    for section in ("## Training", "## Data", "## Rounds", "## Evaluation", "## Gate", "## How to use",
                    "## Intended use", "## Known limits"):
        assert section in card
    assert "| 2 | on_policy | 42 | 0.185 |" in card and "workspace/h/round-1/pairs.jsonl" in card
    assert "538.1 MB" in card and "models:/alignflow-base/1" in card and "±0.027" in card
    assert "Not gated yet" in card
    assert "arithmetic word problems ([1, 2] operations, operands up to 20)" in card  # the task, from its params
    assert "None" not in card and "nan" not in card and "||" not in card.replace("|---|", "")
    facts.gate = {"passed": True, "reason": "accuracy gate passed: 0.185 >= 0.135", "aliases_set": ["staging"],
                  "gates": [{"gate": "accuracy_delta", "status": "passed", "value": 0.05, "limit": 0.0,
                             "detail": "vs baseline"}]}
    gated = render_model_card(facts)
    assert "**PASSED**" in gated and "| accuracy_delta | passed | 0.0500 | 0.0000 | vs baseline |" in gated
    assert description_of(gated) == gated
    short = description_of(gated, limit=len(gated) - 200)  # the usage snippets go first
    assert "## Known limits" in short and "mlflow models serve" not in short and "In README.md" in short
    assert len(short) <= len(gated) - 200 and "## Gate" in short
    tiny = description_of(gated, limit=600)
    assert len(tiny) <= 600 and tiny.endswith("README.md in the version)\n")


def test_a_model_card_names_the_task_and_metric_of_own_data_and_reward_models():
    """A policy trained on a user's files, gated on its own promotion metric, says so (no arithmetic,
    no empty evaluation); a reward model's card says it scores and how to call it."""
    from alignflow.components.evaluation.model_card import CardFacts, RoundFacts, render_model_card

    tags = {"model_id": "m", "eval_metric_name": "eval/correct/mean", "eval_metric": "0.42", "baseline_metric": "0.30",
            "eval_dataset": "e" * 32, "model_format": "merged", "size_bytes": "1000"}
    params = {"data.sources.prompts": "[{'source': 'examples/data/prompts.jsonl', 'format': 'auto'}]",
              "data.sources.eval": "[{'source': 'examples/data/eval.jsonl'}]", "sft.enabled": "True"}
    card = render_model_card(CardFacts("own-policy", "2", "policy", tags, run_id="r", params=params, rounds=[
        RoundFacts(0, "after SFT", None, {"eval/correct/mean": 0.30}),
        RoundFacts(1, "on_policy", 10, {"eval/correct/mean": 0.42})]))
    assert "arithmetic" not in card and "`examples/data/prompts.jsonl`" in card
    assert "held-out `eval/correct/mean`: **0.420**, from 0.300 before the rounds" in card
    assert "| 1 | on_policy | 10 | 0.420 |" in card
    reward = render_model_card(CardFacts("alignflow-reward", "1", "reward", {
        "model_id": "rm", "family": "reward", "eval_metric_name": "reward/accuracy", "eval_metric": "0.81",
        "model_format": "full", "pairs_source": "sampled from the SFT policy, labelled by constraints"},
        params={"data.sources.prompts": "[{'source': 'builtin:constraints'}]", "reward.loss": "bt"}))
    assert "(reward model)" in reward and "pipeline_tag: text-classification" in reward
    assert "pairwise accuracy on held-out preference pairs: **0.810**" in reward
    assert "dataframe_records" in reward and "verifiable constraints" in reward and "None" not in reward
