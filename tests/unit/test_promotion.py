"""Promotion gates on fixed version tags, and the position-fair win rate."""

import pytest

from components.config import PromotionConfig
from components.promotion import evaluate_gates, win_rate

PROD = {"eval_accuracy": "0.50", "eval_dataset": "md5a", "eval_kl": "0.2", "eval_mean_length": "40"}


def _gates(candidate, production=PROD, win=None, **limits):
    report = evaluate_gates("policy", "2", candidate, "1" if production else None, production,
                            PromotionConfig(**limits), win)
    return report, {g.gate: g.status for g in report.gates}


def test_every_gate_passes_fails_or_is_reported_skipped():
    good = {"eval_accuracy": "0.55", "eval_dataset": "md5a", "eval_kl": "0.3", "eval_mean_length": "44"}
    report, status = _gates(good, min_delta=0.02, max_kl=0.5, max_length_drift=0.2, min_judge_win_rate=0.5, win=0.6)
    assert report.passed and status == {"accuracy_delta": "passed", "kl_budget": "passed", "length_drift": "passed",
                                        "judge_win_rate": "passed"}
    report, status = _gates(good, min_delta=0.1, max_kl=0.25, max_length_drift=0.05, min_judge_win_rate=0.7, win=0.6)
    assert not report.passed and set(status.values()) == {"failed"}
    assert "| accuracy_delta | failed | 0.0500 | 0.1000 |" in report.as_markdown()
    report, status = _gates(good)  # no limits: reported as skipped, never silently passed
    assert report.passed and status["kl_budget"] == status["length_drift"] == status["judge_win_rate"] == "skipped"


def test_accuracy_gate_refuses_another_eval_set_and_accepts_a_first_version():
    _, status = _gates({"eval_accuracy": "0.9", "eval_dataset": "md5b"})
    assert status["accuracy_delta"] == "failed"
    report, status = _gates({"eval_accuracy": "0.1", "eval_dataset": "md5b"}, production=None, max_length_drift=0.1)
    assert report.passed and status["length_drift"] == "skipped"


def test_win_rate_cancels_position_bias():
    assert win_rate(["A"] * 4, ["A"] * 4) == 0.5  # always the first position: no preference
    assert win_rate(["A", "A"], ["B", "B"]) == 1.0
    assert win_rate(["B", "B"], ["A", "B"]) == 0.25
    with pytest.raises(ValueError):
        win_rate([], [])
