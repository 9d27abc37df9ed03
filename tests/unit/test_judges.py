"""Judge templates, strict judgment parsing and the judgment cache."""

import pytest

from alignflow.components.judges.cache import JudgmentCache, judgment_key
from alignflow.components.judges.parsing import Judgment, parse_judgment
from alignflow.components.judges.template import JudgeTemplate

T = JudgeTemplate()


@pytest.mark.parametrize("raw, score, rationale", [
    ("Rationale: 3 + 4 = 7 is right and the answer is stated.\nScore: 5", 5,
     "3 + 4 = 7 is right and the answer is stated."),
    ("The second step adds instead of subtracting.\n\n**Score: 2**", 2, "The second step adds instead of subtracting."),
    ("rationale: fine.\nscore: 4/5", 4, "fine."),
    ("Checks out. Score: 3\nSo again, Score: 3", 3, "Checks out."),  # repeated, same value
])
def test_well_formed_judgments_give_rationale_then_score(raw, score, rationale):
    j = parse_judgment(raw, T)
    assert (j.status, j.score, j.rationale, j.problem) == ("ok", score, rationale, None)


@pytest.mark.parametrize("raw, problem", [
    ("Looks correct to me.", "no 'Score: N' line"),
    ("Score: 4\n", "score without a rationale before it"),
    ("Rationale:\nScore: 4", "score without a rationale before it"),
    ("Good. Score: 4. On reflection, Score: 2", "conflicting scores ['2', '4']"),
    ("Good work. Score: 7", "score 7 outside 1..5"),
    ("Good work. Score: 0", "score 0 outside 1..5"),
    ("Half right. Score: 3.5", "score 3.5 is not an integer"),
])
def test_malformed_judgments_are_recorded_with_the_reason_and_never_scored(raw, problem):
    j = parse_judgment(raw, T)
    assert j.status == "malformed" and j.score is None and j.problem == problem and j.raw == raw


def test_template_hash_versions_wording_and_scale_and_bad_templates_fail():
    assert T.hash == JudgeTemplate().hash and len(T.hash) == 16
    assert JudgeTemplate(high=10).hash != T.hash
    assert JudgeTemplate(text=T.text.replace("a few sentences", "one sentence")).hash != T.hash
    with pytest.raises(ValueError, match="low < high"):
        JudgeTemplate(low=5, high=5)
    with pytest.raises(ValueError, match=r"\{rubric\}"):
        JudgeTemplate(text="Grade {context} {response}")


def test_template_renders_a_chat_prompt(tokenizer):
    prompt = T.render(tokenizer, "What is 3 + 4?", "7", "Correct final answer.")
    assert "What is 3 + 4?" in prompt and "an integer from 1 to 5" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_cache_hits_only_on_the_same_prompt_response_judge_and_template(tmp_path):
    key = judgment_key("p", "r", "judge-v1", T.hash)
    variants = [judgment_key("p2", "r", "judge-v1", T.hash), judgment_key("p", "r2", "judge-v1", T.hash),
                judgment_key("p", "r", "judge-v2", T.hash), judgment_key("p", "r", "judge-v1",
                                                                         JudgeTemplate(high=10).hash),
                judgment_key("p", "r", "judge-v1", T.hash, sample=1)]
    assert len({key, *variants}) == 6
    assert judgment_key("ab", "c", "j", "t") != judgment_key("a", "bc", "j", "t")  # no field-boundary collisions

    cache = JudgmentCache(tmp_path / "judgments.sqlite")
    judged = parse_judgment("Right. Score: 5", T)
    malformed = parse_judgment("no verdict", T)
    assert cache.get(key) is None
    cache.put(key, judged)
    cache.put(variants[0], malformed)
    assert cache.get(key) == judged and cache.get(variants[1]) is None
    assert (cache.hits, cache.misses) == (1, 2)
    cache.close()

    reopened = JudgmentCache(tmp_path / "judgments.sqlite")  # the next round
    assert len(reopened) == 2 and reopened.get(variants[0]) == malformed


def test_calculator_evaluates_arithmetic_and_refuses_everything_else():
    from alignflow.components.judges.tools import calculate

    assert calculate("3 + 4 * (2 - 1)") == 7 and calculate("12 ÷ 3 × 2") == 8 and calculate("1,200 - 7") == 1193
    assert calculate("3 x 4") == 12 and calculate("-5 + 2") == -3
    for bad in ("__import__('os')", "2 ** 10", "abs(-1)", "1 / 0", "seven"):
        with pytest.raises(ValueError):
            calculate(bad)


def test_tools_check_each_equation_and_the_final_answer():
    from alignflow.components.judges.tools import check_equations, equation_tool, verifier_tool

    text = "Start with 12.\n12 - 5 = 7.\n7 * 3 = 20.\nThe answer is 20."
    assert [(c.text, c.valid) for c in check_equations(text)] == [("12 - 5 = 7", True), ("7 * 3 = 20", False)]
    call = equation_tool(text)
    assert call.tool == "check_equations" and call.output == "12 - 5 = 7 -> ok; 7 * 3 = 20 -> wrong, left side is 21"
    assert verifier_tool(text, 21).output == "final answer 20: incorrect"
    assert verifier_tool("no idea", 21).output == "final answer -: no final answer"


def test_labelled_rows_grade_by_correctness_and_step_validity():
    from alignflow.components.data.arithmetic import generate_split
    from alignflow.components.judges.labelled import gold_score, labelled_rows

    assert gold_score("2 + 3 = 5.\nThe answer is 5.", 5) == 5
    assert gold_score("2 + 3 = 6.\nThe answer is 5.", 5) == 4
    assert gold_score("2 + 2 = 4.\nThe answer is 4.", 5) == 2
    assert gold_score("2 + 2 = 5.\nThe answer is 6.", 5) == 1
    problems = generate_split(40, 0, [1, 2], 20, "judge-test")
    rows = labelled_rows(problems, sampled={problems[0].id: ["The answer is 0."]}, heldout_fraction=0.25)
    by_problem = {}
    for row in rows:
        by_problem.setdefault(row.problem_id, []).append(row)
    # the worked solution
    assert all(rs[0].gold_score == 5 and rs[0].source == "perturbed" for rs in by_problem.values())
    two_step = [p for p in problems if p.difficulty == 2]
    assert [r.gold_score for r in by_problem[two_step[0].id]] == [5, 4, 2]
    assert by_problem[problems[0].id][-1].source == "sampled"
    splits = {rs[0].problem_id: {r.split for r in rs} for rs in by_problem.values()}
    assert all(len(s) == 1 for s in splits.values())  # a problem never straddles the split
    heldout = sum(s == {"heldout"} for s in splits.values())
    assert 0 < heldout < len(problems)
    assert labelled_rows(problems, heldout_fraction=0.25) == labelled_rows(problems, heldout_fraction=0.25)
    twin = problems[0].model_copy(update={"id": "another-id"})  # same question, another id: same side
    twins = labelled_rows([problems[0], twin], heldout_fraction=0.25)
    assert {r.split for r in twins} == {splits[problems[0].id].pop()}
    # the seed judge's target: a rationale that checks each calculation and the answer, then the score
    from alignflow.components.judges.labelled import gold_judgment
    from alignflow.components.judges.parsing import parse_judgment
    from alignflow.components.judges.template import JudgeTemplate

    text = gold_judgment("4 + 3 = 7.\n7 * 2 = 15.\nThe answer is 15.", 14)
    assert "7 * 2 = 15 wrong (14)." in text and "4 + 3 = 7 ok." in text and "Final answer 15 wrong." in text
    assert parse_judgment(text, JudgeTemplate()).score == 1
    assert all(r.gold_judgment is not None and parse_judgment(r.gold_judgment, JudgeTemplate()).score == r.gold_score
               for r in rows)


def test_judge_runs_tools_first_records_every_judgment_and_reuses_the_cache(tiny_loaded, tmp_path):
    from alignflow.components.judges.judge import Judge, JudgeInput

    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    generate_calls = []
    original = model.generate
    model.generate = lambda *a, **k: generate_calls.append(1) or original(*a, **k)  # count, not replace
    cache = JudgmentCache(tmp_path / "j.sqlite")
    judge = Judge(model, tok, "tiny-judge", cache=cache, max_new_tokens=12)
    items = [JudgeInput("Ava has 3 apples and gets 4.", "3 + 4 = 8.\nThe answer is 8.", "Correct?", gold=7),
             JudgeInput("Ben has 9 and eats 2.", "9 - 2 = 7.\nThe answer is 7.", "Correct?")]
    prompt = judge.prompt_for(items[0], judge.tool_calls(items[0]))
    assert "check_equations: 3 + 4 = 8 -> wrong, left side is 7" in prompt
    assert "verify_answer: final answer 8: incorrect" in prompt

    first = judge.judge(items)
    assert [len(r) for r in first] == [1, 1] and len(generate_calls) == 1
    assert [len(r[0].tool_calls) for r in first] == [2, 1]
    for (rec,) in first:  # a random-init judge writes nonsense: recorded as malformed, not scored
        assert not rec.cached and rec.judgment.status in ("ok", "malformed")
        assert rec.judgment.status == "ok" or (rec.judgment.score is None and rec.judgment.problem)
    again = judge.judge(items)
    assert len(generate_calls) == 1 and all(r[0].cached for r in again)  # no generation the second time
    assert [r[0].judgment for r in again] == [r[0].judgment for r in first]

    sampled = judge.judge(items, n=2, temperature=1.0, seed=3)
    assert [len(r) for r in sampled] == [2, 2] and len({r.key for row in sampled for r in row}) == 4
    with pytest.raises(ValueError, match="temperature > 0"):
        judge.judge(items, n=2)


def _j(score=None, text="because"):
    return parse_judgment(f"{text}\nScore: {score}" if score is not None else "no verdict", T)


def test_curation_rules_pick_gold_matching_chosen_and_deviating_rejected():
    import random

    from alignflow.components.judges.curation import CurationRules, curate_pair, judge_pair_rows

    def curated(samples: list[Judgment], gold: int, rules: CurationRules, rng: random.Random
                ) -> tuple[Judgment, Judgment]:
        pair = curate_pair(samples, gold, rules, rng)
        assert pair is not None
        return pair

    rng = random.Random(0)
    samples = [_j(4, "near"), _j(5, "right"), _j(1, "far"), _j(5, "also right")]
    chosen, rejected = curated(samples, 5, CurationRules(), rng)
    assert (chosen.rationale, rejected.rationale) == ("right", "far")  # first match; the largest deviation
    assert curate_pair([_j(3), _j(3)], 3, CurationRules(), rng) is None  # all agree
    assert curate_pair([_j(2), _j(4)], 5, CurationRules(), rng) is None  # nothing matches gold
    with_bad = [_j(5, "right"), _j(1, "far"), _j()]
    assert curated(with_bad, 5, CurationRules(), rng)[1].status == "malformed"
    assert curated(with_bad, 5, CurationRules(malformed_as_rejected=False), rng)[1].rationale == "far"
    assert curate_pair([_j(5), _j(5), _j()], 5, CurationRules(malformed_as_rejected=False), rng) is None
    picks = {curated(samples, 5, CurationRules("random", "random_mismatch"), random.Random(s))[1].rationale
             for s in range(20)}
    assert picks == {"near", "far"}

    rows = judge_pair_rows([("p1", "PROMPT", 5), ("p2", "PROMPT2", 3)], [samples, [_j(3), _j(3)]],
                           CurationRules(), seed=0, lineage={"judge_model_id": "seed-judge"})
    assert len(rows) == 1 and rows[0].chosen == "right\nScore: 5" and rows[0].score_rejected == 1.0
    assert rows[0].lineage["gold_score"] == 5 and rows[0].lineage["rules"]["rejected_rule"] == "max_deviation"


def test_judge_metrics_on_fixed_predictions():
    from alignflow.components.judges.metrics import judge_metrics

    gold = [5, 4, 2, 1, 5, 2]
    predicted = [5, 5, 2, None, 3, 2]  # one malformed; problem "b": 5 vs 2 predicted 3 vs 2 — agrees
    groups = ["a", "a", "a", "a", "b", "b"]
    m = judge_metrics(gold, predicted, groups)
    assert m["judge/exact_accuracy"] == 3 / 6  # the malformed one counts as wrong
    assert m["judge/mae"] == (0 + 1 + 0 + 2 + 0) / 5  # over the well-formed ones
    assert m["judge/malformed_rate"] == pytest.approx(1 / 6)
    # group a: (5,4) tie → no, (5,2) yes, (5,1) malformed → no, (4,2) yes, (4,1) no, (2,1) no; group b: yes
    assert m["judge/n_pairs_compared"] == 7 and m["judge/pairwise_agreement"] == 3 / 7
    reversed_judge = judge_metrics(gold, [6 - g for g in gold], groups)
    assert reversed_judge["judge/pairwise_agreement"] == 0.0
    with pytest.raises(ValueError, match="equal, non-empty"):
        judge_metrics([1], [1, 2], ["a"])


def test_pairwise_probe_reads_the_models_letter_choice_batched_and_swapped(tiny_loaded):
    """A model whose output layer favours one letter picks by position: every swap flips its pick."""
    import torch

    from alignflow.components.data.schemas import PairRow
    from alignflow.components.judges.pairwise import model_position_bias, pairwise_choices

    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    queries = [(f"What is {i} + 1?", f"The answer is {i + 1}.", "The answer is 0.") for i in range(5)]
    # left padding must not change a row's answer: batched == one at a time
    assert pairwise_choices(model, tok, queries, batch_size=8) == [
        pairwise_choices(model, tok, [q], batch_size=1)[0] for q in queries]
    pairs = [PairRow(problem_id=str(i), prompt="x", chosen=a, rejected=b, score_chosen=1, score_rejected=0,
                     lineage={"question": q}) for i, (q, a, b) in enumerate(queries)]
    bias = torch.zeros(model.config.vocab_size)
    for letter, expected_first in (("A", 1.0), ("B", 0.0)):
        bias.zero_()
        bias[tok.encode(letter, add_special_tokens=False)[0]] = 1e4
        model.lm_head.bias = torch.nn.Parameter(bias.clone(), requires_grad=False)
        assert model_position_bias(model, tok, pairs) == {"flip_rate": 1.0, "first_position_rate": expected_first}
