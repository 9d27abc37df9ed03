import pytest

from alignflow.components.collection.pairs import build_pairs
from alignflow.components.data.schemas import CompletionRow
from alignflow.components.scoring.verifiers import verifier_reward


def _row(pid, idx, text, correct, reward):
    return CompletionRow(problem_id=pid, question="q", answer=1, sample_index=idx, completion=text, n_tokens=3,
                         correct=correct, reward=reward)


ROWS = [
    _row("a", 0, "right one", True, 1.0), _row("a", 1, "wrong far", False, -1.0),
    _row("a", 2, "wrong near", False, -0.1), _row("a", 3, "right two", True, 1.0),
    _row("b", 0, "all wrong 1", False, -0.5), _row("b", 1, "all wrong 2", False, -0.2),
    _row("c", 0, "same", True, 1.0), _row("c", 1, "same", True, 1.0),
]
PROMPTS = {"a": "PA", "b": "PB", "c": "PC"}


def test_correct_vs_incorrect_pairs_only_mixed_prompts():
    pairs = build_pairs(ROWS, PROMPTS, "correct_vs_incorrect", 10, 0, {"policy_model_id": "m"})
    assert {p.problem_id for p in pairs} == {"a"}
    assert len(pairs) == 2
    assert all(p.score_chosen == 1.0 and p.score_rejected < 0 for p in pairs)
    assert {p.chosen for p in pairs} == {"right one", "right two"}
    assert all(p.lineage["policy_model_id"] == "m" and p.prompt == "PA" for p in pairs)


def test_best_vs_worst_ranks_wrong_answers_by_graded_reward():
    pairs = build_pairs(ROWS, PROMPTS, "best_vs_worst", 10, 0, {})
    by_id = {p.problem_id: p for p in pairs}
    assert by_id["a"].chosen == "right one" and by_id["a"].rejected == "wrong far"
    assert by_id["b"].chosen == "all wrong 2" and by_id["b"].rejected == "all wrong 1"
    assert "c" not in by_id  # ties give no pair


def test_all_pairs_and_cap():
    pairs = build_pairs(ROWS, PROMPTS, "all_pairs", 100, 0, {})
    a_pairs = [p for p in pairs if p.problem_id == "a"]
    assert len(a_pairs) == 5  # 6 combinations minus the tied (right one, right two)
    assert all(p.score_chosen > p.score_rejected for p in pairs)
    capped = build_pairs(ROWS, PROMPTS, "all_pairs", 2, 0, {})
    assert len([p for p in capped if p.problem_id == "a"]) == 2


def test_identical_texts_are_never_paired():
    rows = [_row("d", 0, "x", True, 1.0), _row("d", 1, " x ", False, -1.0)]
    assert build_pairs(rows, {"d": "P"}, "best_vs_worst", 5, 0, {}) == []


def test_unknown_strategy():
    with pytest.raises(ValueError, match="unknown pair strategy"):
        build_pairs(ROWS, PROMPTS, "random", 2, 0, {})


def test_verifier_reward():
    assert verifier_reward(5.0, 5) == (True, 1.0)
    assert verifier_reward(None, 5) == (False, -1.0)
    near, far = verifier_reward(6.0, 5)[1], verifier_reward(50.0, 5)[1]
    assert -1.0 <= far < near < 0
