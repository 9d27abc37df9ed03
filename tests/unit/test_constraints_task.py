"""builtin:constraints as a data source (every role, eval combinations held out, columns reach the
scorers) and its verifier scorer ``constraints``: fraction met, pass = all met, per-kind eval metrics,
bad rows named, and weight 0 as eval-only (the combined score ignores it)."""

from __future__ import annotations

import json

import pytest

from alignflow.components.config import ScorerSpec, load_config
from alignflow.components.data.constraints import (
    ConstraintProblem,
    combination_key,
    constraints_source,
    reference_response,
)
from alignflow.components.data.schemas import PredictionRow
from alignflow.components.evaluation.policy import promotion_metric, score_metrics
from alignflow.components.scoring.base import ScorerError, ScoringItem, combine, score_all
from alignflow.components.scoring.verifiers import VERIFIERS


def _cfg(tmp_path, *overrides: str):
    sources = [f"data.sources.{role}=[{{source: 'builtin:constraints'}}]" for role in ("sft", "prompts", "eval")]
    return load_config(None, [f"state_dir={tmp_path / 'state'}", "data.constraints.n_sft=24",
                              "data.constraints.n_train_prompts=40", "data.constraints.n_eval=30", *sources,
                              "scoring.scorers=[{type: constraints}]", *overrides])


def test_every_role_comes_from_the_builtin_with_eval_combinations_held_out(tmp_path):
    from alignflow.components.stages.data import load_roles

    roles, contaminated = load_roles(_cfg(tmp_path))
    assert {role: len(rows) for role, rows in roles.items()} == {"sft": 24, "prompts": 40, "preferences": 0,
                                                                 "eval": 30}
    assert contaminated == []
    combos = {role: {combination_key(e.columns["constraints"]) for e in rows} for role, rows in roles.items()}
    assert combos["eval"] and not combos["eval"] & (combos["sft"] | combos["prompts"])
    # the reference response is the SFT completion, and it meets every constraint of its row
    scorer = VERIFIERS["constraints"](ScorerSpec(type="constraints"))
    sft = roles["sft"]
    items = [ScoringItem(e.id, e.prompt, str(e.completion), e.columns) for e in sft]
    assert scorer.score(items) == [1.0] * len(sft)
    assert set(sft[0].columns) >= {"constraints", "topic", "form", "n_constraints", "combination", "problem_id"}
    # a source entry's params override data.constraints, and the generator is deterministic under the seed
    again, _ = load_roles(_cfg(tmp_path))
    assert [e.prompt for e in again["eval"]] == [e.prompt for e in roles["eval"]]
    fewer, _ = load_roles(_cfg(tmp_path, "data.sources.eval=[{source: 'builtin:constraints', params: {n_eval: 5}}]"))
    assert len(fewer["eval"]) == 5


def test_the_builtin_refuses_roles_and_settings_it_has_no_rows_for():
    with pytest.raises(ValueError, match="no rows for the 'preferences' role"):
        constraints_source("preferences", 0, 1, 1, 1)
    with pytest.raises(ValueError, match="max_constraints must be 2 or 3"):
        constraints_source("eval", 0, 1, 1, 1, max_constraints=1)


def _item(completion: str, constraints=None, **columns) -> ScoringItem:
    cols = {**({"constraints": constraints} if constraints is not None else {}), **columns}
    return ScoringItem("p1", "Write a note.", completion, cols)


def test_the_constraints_scorer_counts_the_fraction_met_and_passes_only_when_all_are():
    scorer = VERIFIERS["constraints"](ScorerSpec(type="constraints"))
    rules = [{"kind": "lowercase"}, {"kind": "no_commas"}, {"kind": "end_question"}]
    texts = ["all lowercase and no commas, right?", "all lowercase and no commas right?", "Shout, now."]
    assert scorer.score([_item(t, rules) for t in texts]) == [pytest.approx(2 / 3), 1.0, 0.0]
    assert scorer.pass_threshold == 1.0
    assert scorer.score([_item("anything")]) == [None]  # a row without constraints: not applicable
    assert scorer.score([_item("anything", [])]) == [1.0]  # no constraints: vacuously met
    details = scorer.details([_item(texts[0], rules)])[0]
    assert details == {"kind/lowercase": 1.0, "kind/no_commas": 0.0, "kind/end_question": 1.0}
    # the row's constraints may live in another column
    other = VERIFIERS["constraints"](ScorerSpec(type="constraints", gold_column="rules"))
    assert other.score([_item(texts[1], rules=rules)]) == [1.0]


@pytest.mark.parametrize("bad,message", [
    ("lowercase", "field 'constraints': expected a list of"),
    ([{"kind": "haiku"}], "field 'constraints': unknown constraint kind"),
    ([{"kind": "bullet_count", "n": 0}], "field 'constraints': BulletCount.n must be a positive int"),
    ([{"kind": "lowercase", "typo": 1}], "field 'constraints': .*typo"),
])
def test_a_malformed_constraints_column_names_the_scorer_row_and_field(bad, message):
    scorer = VERIFIERS["constraints"](ScorerSpec(type="constraints"))
    with pytest.raises(ScorerError, match=f"scorer 'constraints': row p1: {message}"):
        scorer.score([_item("text", bad)])


def test_a_word_list_given_as_one_string_is_refused_not_split_into_letters():
    scorer = VERIFIERS["constraints"](ScorerSpec(type="constraints"))
    for kind, field in (("include_words", "words"), ("exclude_words", "words"), ("json_keys", "keys")):
        with pytest.raises(ScorerError, match=f"{field} must be a list of words, got the string 'soil'"):
            scorer.score([_item("I love soil.", [{"kind": kind, field: "soil"}])])
    assert scorer.score([_item("I love soil.", [{"kind": "include_words", "words": ["soil"]}])]) == [1.0]
    for bad, message in (({"kind": "include_words", "words": "soil rain"}, r"\(write \['soil', 'rain'\]\)"),
                         ({"kind": "include_words", "words": {"soil": 1}}, "must be a list of words, got dict"),
                         ({"kind": "first_word", "word": ["soil"]}, "'first_word': a param of the wrong type"),
                         ({"kind": ["lowercase"]}, r"unknown constraint kind \['lowercase'\]")):
        with pytest.raises(ScorerError, match=message):
            scorer.score([_item("I love soil.", [bad])])


def test_unknown_kinds_and_params_list_what_is_known():
    scorer = VERIFIERS["constraints"](ScorerSpec(type="constraints"))
    with pytest.raises(ScorerError, match=r"unknown constraint kind 'all_caps'.*known kinds: .*uppercase"):
        scorer.score([_item("X", [{"kind": "all_caps"}])])
    with pytest.raises(ScorerError, match=r"constraint 'bullet_count' takes n, got count"):
        scorer.score([_item("X", [{"kind": "bullet_count", "count": 2}])])


def test_a_bad_constraints_column_in_a_users_file_fails_the_data_stage_naming_file_row_and_field(tmp_path):
    from alignflow.components.data.formats import DataFormatError
    from alignflow.components.stages.data import load_roles

    rows = [{"prompt": f"Write note {i}.", "constraints": [{"kind": "lowercase"}]} for i in range(6)]
    rows[3]["constraints"] = [{"kind": "all_caps"}]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = [f"data.sources.prompts=[{{source: '{path}'}}]"]
    with pytest.raises(DataFormatError, match=r"prompts.jsonl: row 4: field 'constraints': unknown constraint kind "
                                              r"'all_caps'.*prompts role"):
        load_roles(_cfg(tmp_path, *overrides))
    # a pipeline with no constraints scorer does not read the column, and does not check it
    load_roles(_cfg(tmp_path, *overrides, "scoring.scorers=[{type: regex, pattern: x}]"))


def test_builtin_entries_with_different_split_params_are_a_config_error(tmp_path):
    from alignflow.components.config import ConfigError

    with pytest.raises(ConfigError, match=r"data.sources.eval\[0\]: seed 1234, heldout_combinations 0.5.*eval "
                                          r"combinations would occur in training"):
        _cfg(tmp_path, "data.sources.eval=[{source: 'builtin:constraints', params: {heldout_combinations: 0.5}}]")
    with pytest.raises(ConfigError, match=r"max_constraints 2"):
        _cfg(tmp_path, "data.sources.sft=[{source: 'builtin:constraints', params: {max_constraints: 2}}]")
    with pytest.raises(ConfigError, match=r"data.sources.eval\[0\]: seed 7"):
        _cfg(tmp_path, "data.sources.eval=[{source: 'builtin:constraints', params: {seed: 7}}]")
    # the same split in every entry (here through params equal to the section) is fine
    _cfg(tmp_path, "data.sources.eval=[{source: 'builtin:constraints', params: {heldout_combinations: 0.2}}]")


def test_per_kind_pass_rates_reach_the_eval_metrics():
    scorer = VERIFIERS["constraints"](ScorerSpec(type="constraints"))
    rows = [([{"kind": "lowercase"}, {"kind": "no_commas"}], "fine, yes"),
            ([{"kind": "lowercase"}], "Nope"),
            ([{"kind": "title"}], "<<A Title>>\nbody")]
    items = [_item(text, rules) for rules, text in rows]
    scored = score_all([scorer], items).scored
    details = scorer.details(items)
    predictions = [PredictionRow(prompt_id=str(i), completion=item.completion, n_tokens=3, scores=s.scores,
                                 passed=s.passed, details={f"constraints/{k}": v for k, v in d.items()})
                   for i, (item, s, d) in enumerate(zip(items, scored, details, strict=True))]
    metrics = score_metrics([scorer], predictions, [])
    assert metrics["eval/constraints/pass_rate"] == metrics["eval/accuracy"] == pytest.approx(1 / 3)
    assert metrics["eval/constraints/mean"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert metrics["eval/constraints/kind/lowercase"] == 0.5  # of the two rows that carry it
    assert metrics["eval/constraints/kind/no_commas"] == 0.0 and metrics["eval/constraints/kind/title"] == 1.0
    assert "eval/constraints/kind/json_keys" not in metrics


def test_a_weight_0_verifier_is_eval_only_it_never_moves_the_combined_score():
    class Fixed(VERIFIERS["regex"]):  # a stand-in primary scorer with a known score
        def score(self, items):
            return [0.25 for _ in items]

    primary = Fixed(ScorerSpec(type="regex", name="proxy", pattern="."))
    verifier = VERIFIERS["constraints"](ScorerSpec(type="constraints", weight=0.0))
    for completion in ("all lowercase, right?", "SHOUT"):
        per_scorer = {"proxy": 0.25, "constraints": verifier.score([_item(completion, [{"kind": "lowercase"}])])[0]}
        combined = combine([primary, verifier], per_scorer)
        assert combined.score == 0.25 and combined.scores["constraints"] in (0.0, 1.0)


def test_the_constraints_scorer_is_a_verifier_for_the_promotion_metric(tmp_path):
    assert promotion_metric(_cfg(tmp_path)) == "eval/accuracy"


def test_reference_responses_of_the_source_rows_are_the_module_s_own():
    row = constraints_source("sft", 3, 2, 1, 1)[0]
    problem = ConstraintProblem(id=row["problem_id"], prompt=row["prompt"], constraints=row["constraints"],
                                topic=row["topic"], form=row["form"])
    assert row["completion"] == reference_response(problem) and row["n_constraints"] == len(row["constraints"])


def test_a_constraints_column_read_from_the_user_s_parquet_scores_like_the_builtin(tmp_path):
    """Parquet (Arrow) stores a column of objects as one struct — every key on every object, None where a
    row had none: the scorer reads None as absent."""
    from alignflow.components.data.sources import load_role
    from tests.support.datafiles import write_parquet

    rows = constraints_source("eval", 5, 1, 1, 6)
    write_parquet(tmp_path / "eval.parquet", [{"prompt": r["prompt"], "constraints": r["constraints"]} for r in rows])
    loaded = load_role([{"source": str(tmp_path / "eval.parquet")}], "eval", 0, cache_dir=tmp_path / "hf")
    assert any(None in c.values() for e in loaded for c in e.columns["constraints"])  # what datasets did
    scorer = VERIFIERS["constraints"](ScorerSpec(type="constraints"))
    references = [r["completion"] for r in rows]
    assert scorer.score([ScoringItem(e.id, e.prompt, ref, e.columns) for e, ref in zip(loaded, references,
                                                                                        strict=True)]) == [1.0] * 6


def test_a_builtin_param_it_does_not_take_names_the_source_entry(tmp_path):
    from alignflow.components.data.formats import DataFormatError
    from alignflow.components.stages.data import load_roles

    bad = "data.sources.eval=[{source: 'builtin:constraints', params: {heldout_combination: 0.3}}]"
    with pytest.raises(DataFormatError, match=r"data.sources.eval\[0\].params: builtin:constraints refused "
                                              r".*heldout_combination"):
        load_roles(_cfg(tmp_path, bad))
