"""Pair-file quality report on a fixed pair file, the position-bias probe on judges with known
behaviour, and the thresholds that fail a round."""

import pytest

from alignflow.components.collection.quality import (
    PairQualityError,
    QualityThresholds,
    check_quality,
    pair_quality,
    position_bias,
)
from alignflow.components.data.schemas import PairRow


def _pair(prompt, chosen, rejected, sc, sr, source="sampling"):
    return PairRow(problem_id="p", prompt=prompt, chosen=chosen, rejected=rejected, score_chosen=sc,
                   score_rejected=sr, lineage={"source": source})


PAIRS = [
    _pair("What is 2 + 3?", "2 + 3 = 5. The answer is 5.", "The answer is 6.", 1.0, 0.0),
    _pair("what is 2 +  3?", "2 + 3 = 5.  The answer is 5.", "the answer is 6.", 1.0, 0.0),  # duplicate
    _pair("Ava has 4 apples. How many?", "4", "The answer is 3.", 1.0, -1.0, "mcts"),
    _pair("Tom has 9 pens and gives 2 away.", "Same text", "same  text", 0.5, 0.25, "mcts"),  # degenerate
]


def test_report_numbers_on_a_fixed_pair_file():
    q = pair_quality(PAIRS, heldout_questions=["Tom has 9 pens and gives 2 away.", ""])
    assert q.n_pairs == 4 and q.margin_mean == pytest.approx((1 + 1 + 2 + 0.25) / 4)
    assert (q.margin_min, q.margin_median, q.margin_max) == (0.25, 1.0, 2.0)
    assert q.chosen_longer_rate == 0.5  # the first two; "4" is shorter; equal lengths are not longer
    assert (q.duplicate_pairs, q.degenerate_pairs, q.contaminated_pairs) == (1, 1, 1)
    assert q.per_source == {"sampling": 2, "mcts": 2}
    assert q.as_metrics()["quality/source/mcts"] == 2.0
    with pytest.raises(ValueError, match="empty"):
        pair_quality([])


def test_position_bias_probe_separates_a_biased_judge_from_a_consistent_one():
    def always_first(prompt, a, b):  # a judge with a known, total position bias
        return "A"

    def prefers_the_answer_five(prompt, a, b):  # consistent: the content decides
        return "A" if "is 5" in a else "B"

    assert position_bias(always_first, PAIRS[:2]) == {"flip_rate": 1.0, "first_position_rate": 1.0}
    assert position_bias(prefers_the_answer_five, PAIRS[:2]) == {"flip_rate": 0.0, "first_position_rate": 0.5}
    with pytest.raises(ValueError, match="'A' or 'B'"):
        position_bias(lambda p, a, b: "both", PAIRS[:1])


def test_thresholds_fail_naming_each_measure_value_and_limit():
    q = pair_quality(PAIRS, heldout_questions=["Tom has 9 pens and gives 2 away."])
    check_quality(q, QualityThresholds(max_contaminated_pairs=None), "pairs.jsonl")  # defaults pass otherwise
    with pytest.raises(PairQualityError) as err:
        check_quality(q, QualityThresholds(min_pairs=5, min_margin_mean=2.0, max_chosen_longer_rate=0.4,
                                           max_duplicate_rate=0.1), "round-1/pairs.jsonl")
    message = str(err.value)
    assert message.startswith("round-1/pairs.jsonl: pair quality gate failed")
    for part in ("n_pairs 4 < min_pairs 5", "margin_mean 1.062 < min_margin_mean 2.0",
                 "chosen_longer_rate 0.500 > max_chosen_longer_rate 0.4 (length bias)",
                 "duplicate rate 0.250 > max_duplicate_rate 0.1", "contaminated_pairs 1 > max_contaminated_pairs 0"):
        assert part in message


def test_quality_plot_is_a_png(tmp_path):
    from alignflow.components.collection.quality import plot_pair_quality

    out = plot_pair_quality(PAIRS, tmp_path / "quality.png", "round 1 pairs")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5_000
