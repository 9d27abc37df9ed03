import pytest

from alignflow.components.collection.pairs import build_pairs
from alignflow.components.data.schemas import CompletionRow
from alignflow.components.scoring.verifiers import verifier_reward


def _row(pid, idx, text, correct, reward):
    return CompletionRow(prompt_id=pid, prompt=PROMPTS[pid], source_prompt="q", columns={"answer": 1}, sample_index=idx,
                         completion=text, n_tokens=3, scores={"arithmetic": reward}, score=reward, passed=correct)


PROMPTS = {"a": "PA", "b": "PB", "c": "PC", "d": "P"}


ROWS = [
    _row("a", 0, "right one", True, 1.0), _row("a", 1, "wrong far", False, -1.0),
    _row("a", 2, "wrong near", False, -0.1), _row("a", 3, "right two", True, 1.0),
    _row("b", 0, "all wrong 1", False, -0.5), _row("b", 1, "all wrong 2", False, -0.2),
    _row("c", 0, "same", True, 1.0), _row("c", 1, "same", True, 1.0),
]


def test_correct_vs_incorrect_pairs_only_mixed_prompts():
    pairs = build_pairs(ROWS, "correct_vs_incorrect", 10, 0, {"policy_model_id": "m"})
    assert {p.problem_id for p in pairs} == {"a"}
    assert len(pairs) == 2
    assert all(p.score_chosen == 1.0 and p.score_rejected < 0 for p in pairs)
    assert {p.chosen for p in pairs} == {"right one", "right two"}
    assert all(p.lineage["policy_model_id"] == "m" and p.prompt == "PA" for p in pairs)


def test_best_vs_worst_ranks_wrong_answers_by_graded_reward():
    pairs = build_pairs(ROWS, "best_vs_worst", 10, 0, {})
    by_id = {p.problem_id: p for p in pairs}
    assert by_id["a"].chosen == "right one" and by_id["a"].rejected == "wrong far"
    assert by_id["b"].chosen == "all wrong 2" and by_id["b"].rejected == "all wrong 1"
    assert "c" not in by_id  # ties give no pair


def test_all_pairs_and_cap():
    pairs = build_pairs(ROWS, "all_pairs", 100, 0, {})
    a_pairs = [p for p in pairs if p.problem_id == "a"]
    assert len(a_pairs) == 5  # 6 combinations minus the tied (right one, right two)
    assert all(p.score_chosen > p.score_rejected for p in pairs)
    capped = build_pairs(ROWS, "all_pairs", 2, 0, {})
    assert len([p for p in capped if p.problem_id == "a"]) == 2


def test_identical_texts_are_never_paired():
    rows = [_row("d", 0, "x", True, 1.0), _row("d", 1, " x ", False, -1.0)]
    assert build_pairs(rows, "best_vs_worst", 5, 0, {}) == []


def test_unknown_strategy():
    with pytest.raises(ValueError, match="unknown pair strategy"):
        build_pairs(ROWS, "random", 2, 0, {})


def test_verifier_reward():
    assert verifier_reward(5.0, 5) == (True, 1.0)
    assert verifier_reward(None, 5) == (False, -1.0)
    near, far = verifier_reward(6.0, 5)[1], verifier_reward(50.0, 5)[1]
    assert -1.0 <= far < near < 0


def test_best_vs_random_min_margin_and_unscored_rows():
    import random

    from alignflow.components.collection.pairs import candidate_pairs

    a = [r for r in ROWS if r.prompt_id == "a"]
    for seed in range(5):  # the best sample, against any strictly lower one
        [(chosen, rejected)] = candidate_pairs(a, "best_vs_random", random.Random(seed))
        assert chosen.score == 1.0 and rejected.score is not None and rejected.score < 1.0
    wide = build_pairs(ROWS, "min_margin", 100, 0, {}, min_margin=1.5)  # only 1.0 vs -1.0 (and -0.5 ... no)
    assert [(p.chosen, p.rejected) for p in wide] == [("right one", "wrong far"), ("right two", "wrong far")] or \
        sorted((p.chosen, p.rejected) for p in wide) == [("right one", "wrong far"), ("right two", "wrong far")]
    # every strategy drops pairs under pairs.min_margin; rows no scorer applied to never pair
    assert build_pairs(ROWS, "best_vs_worst", 10, 0, {}, min_margin=0.5) == [
        p for p in build_pairs(ROWS, "best_vs_worst", 10, 0, {}) if p.score_chosen - p.score_rejected >= 0.5]
    unscored = [r.model_copy(update={"score": None, "passed": None}) for r in ROWS]
    assert build_pairs(unscored, "all_pairs", 10, 0, {}) == []
