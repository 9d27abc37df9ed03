"""The data stage on a user's own files: roles from JSONL sources, a held-out eval split by prompt
hash when no eval source is given, contamination, bad input that writes nothing, and the offline
preference pairs and SFT targets built from those rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignflow.components.config import load_config
from alignflow.components.data.formats import DataFormatError
from alignflow.components.data.io import read_rows
from alignflow.components.data.schemas import PairRow
from tests.conftest import MODEL_CACHE
from tests.support.datafiles import write_jsonl


def _cfg(tmp_path: Path, **sources: str):
    overrides = [f"state_dir={tmp_path / 'state'}", "model.source=tiny", f"model.cache_dir={MODEL_CACHE}"]
    overrides += [f"data.sources.{role}={value}" for role, value in sources.items()]
    return load_config(None, overrides)


def _prompts(n: int, offset: int = 0) -> list[dict]:
    return [{"prompt": f"What is {i} + {i}?", "answer": 2 * i} for i in range(offset, offset + n)]


def test_roles_come_from_files_and_eval_is_held_out_by_prompt_hash(tmp_path):
    from alignflow.components.stages.data import prepare_data

    write_jsonl(tmp_path / "prompts.jsonl", _prompts(60))
    write_jsonl(tmp_path / "sft.jsonl", [{"messages": [{"role": "system", "content": "Be brief."},
                                                       {"role": "user", "content": "2+2?"},
                                                       {"role": "assistant", "content": "4"}]}])
    cfg = _cfg(tmp_path, prompts=f"[{{source: {tmp_path / 'prompts.jsonl'}}}]", eval="[]",
               sft=f"[{{source: {tmp_path / 'sft.jsonl'}}}]")
    result = prepare_data(cfg, tmp_path / "out")
    assert result.preferences is None and result.sft is not None
    assert result.counts["prompts"] + result.counts["eval"] == 60 and 0 < result.counts["eval"] < 20
    assert result.contaminated == []
    evaluated = {json.loads(line)["prompt"] for line in Path(result.eval.path).read_text().splitlines()}
    # by hash, not by position: reordering the file holds out the same prompts
    write_jsonl(tmp_path / "prompts.jsonl", list(reversed(_prompts(60))))
    again = prepare_data(cfg, tmp_path / "out2")
    assert {json.loads(line)["prompt"] for line in Path(again.eval.path).read_text().splitlines()} == evaluated
    assert result.profiles["prompts"]["rows"] == result.counts["prompts"]
    assert result.profiles["sft"]["formats"] == {"conversational/prompt_completion": 1}
    columns = json.loads(Path(result.eval.path).read_text().splitlines()[0])["columns"]
    assert set(columns) == {"answer"}  # every other column reaches the scorers


def test_an_eval_set_that_repeats_training_prompts_fails_unless_allowed(tmp_path):
    from alignflow.components.stages.data import prepare_data

    write_jsonl(tmp_path / "prompts.jsonl", _prompts(10))
    write_jsonl(tmp_path / "eval.jsonl", _prompts(3, offset=8))  # 8 and 9 are training prompts too
    sources = dict(prompts=f"[{{source: {tmp_path / 'prompts.jsonl'}}}]",
                   eval=f"[{{source: {tmp_path / 'eval.jsonl'}}}]",
                   sft="[]")
    with pytest.raises(DataFormatError, match="2 eval prompt\\(s\\) also occur in a training role"):
        prepare_data(_cfg(tmp_path, **sources), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    allowed = _cfg(tmp_path, **sources).model_copy(deep=True)
    allowed.data.fail_on_contamination = False
    assert len(prepare_data(allowed, tmp_path / "out").contaminated) == 2


@pytest.mark.parametrize("rows,spec,message", [
    ([{"question": "2+2?"}], "{source: %s, columns: {query: prompt}}", r"field 'query' \(mapped to 'prompt'\)"),
    ([{"prompt": "2+2?", "chosen": "4", "rejected": " "}], "{source: %s}", r"row 1: field 'rejected': empty response"),
    ([{"messages": [{"role": "user", "content": 4}]}], "{source: %s}", r"row 1: field 'messages\[0\].content'"),
    ([{"messages": [{"role": "robot", "content": "hi"}]}], "{source: %s}", r"unknown role 'robot'"),
])
def test_bad_rows_fail_naming_file_row_and_field_and_write_nothing(tmp_path, rows, spec, message):
    from alignflow.components.stages.data import prepare_data

    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    role = "preferences" if "chosen" in rows[0] else "prompts"
    cfg = _cfg(tmp_path, **{role: f"[{spec % path}]"})
    with pytest.raises(DataFormatError, match=message) as info:
        prepare_data(cfg, tmp_path / "out")
    assert "bad.jsonl" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_a_file_that_does_not_exist_names_the_config_key(tmp_path):
    from alignflow.components.stages.data import prepare_data

    cfg = _cfg(tmp_path, prompts=f"[{{source: builtin:arithmetic}}, {{source: {tmp_path / 'missing.jsonl'}}}]")
    with pytest.raises(DataFormatError, match=r"data.sources.prompts\[1\].source: file not found"):
        prepare_data(cfg, tmp_path / "out")


def test_offline_pairs_and_sft_targets_from_conversational_rows(tmp_path, tokenizer):
    """Implicit-prompt conversational preferences → rendered prompt + assistant texts (EOS left to the
    trainer); an SFT messages row trains on its final assistant turn only."""
    from alignflow.components.modeling.checkpoints import materialize_base
    from alignflow.components.stages.common import read_examples, render
    from alignflow.components.stages.data import prepare_data
    from alignflow.components.stages.offline import preference_pairs
    from alignflow.components.stages.results import Checkpoint

    shared = [{"role": "system", "content": "Answer with a number."}, {"role": "user", "content": "2+2?"}]
    write_jsonl(tmp_path / "prefs.jsonl", [{"chosen": shared + [{"role": "assistant", "content": "4"}],
                                            "rejected": shared + [{"role": "assistant", "content": "5"}],
                                            "rationale": "4 is the sum."}])
    cfg = _cfg(tmp_path, preferences=f"[{{source: {tmp_path / 'prefs.jsonl'}}}]")
    data = prepare_data(cfg, tmp_path / "data")
    assert data.preferences is not None
    base = materialize_base(cfg.model, cfg.seed, cfg.state_dir)
    pairs = preference_pairs(cfg, Checkpoint(path=str(base), model_id="tiny"), data.preferences, tmp_path / "pairs")
    [row] = read_rows(pairs.pairs.file, PairRow)
    assert row.prompt.endswith("<|im_start|>assistant\n") and "Answer with a number." in row.prompt
    assert (row.chosen, row.rejected) == ("4", "5") and row.complete_responses
    assert row.rationale == "4 is the sum." and row.rationale_prompt and "Response A" in row.rationale_prompt
    assert row.lineage["origin"].endswith("prefs.jsonl:row 1")
    assert row.lineage["preferences_md5"] == data.preferences.md5

    example = read_examples(data.role("sft"))[0]  # the built-in task's sft rows: prompt → worked solution
    assert render(cfg, tokenizer, example).endswith("<|im_start|>assistant\n")
    assert example.completion and "The answer is" in str(example.completion)
