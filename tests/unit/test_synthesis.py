"""Binarizing per-aspect ratings (ALGORITHMS.md §9) and rationale rows reaching the trainer."""

import random

import pytest

from alignflow.components.collection.synthesis import Rated, binarize


def _rated(index, *scores, model="m"):
    aspects = ["instruction_following", "truthfulness", "honesty", "helpfulness"]
    return Rated(index, f"text {index}", model, 0.7, dict(zip(aspects, scores)))


# means: 0 → 4.5, 1 → 2.0, 2 → 4.5 (tie with 0), 3 → 3.0, 4 → malformed everywhere, 5 → 1.0 (one malformed aspect)
GROUP = [_rated(0, 5, 4, 5, 4), _rated(1, 2, 2, 2, 2), _rated(2, 4, 5, 4, 5), _rated(3, 3, 3, 3, 3),
         _rated(4, None, None, None, None), _rated(5, 1, None, 1, 1)]


def test_mean_rating_ignores_malformed_aspects():
    assert GROUP[0].mean == 4.5 and GROUP[5].mean == 1.0 and GROUP[4].mean is None


def test_lowest_takes_the_best_against_the_lowest_and_drops_ties():
    pairs = binarize(GROUP, "lowest", random.Random(0), max_pairs=2)
    assert [(c.index, r.index) for c, r in pairs] == [(0, 5)]  # first of the tied best; never 0 vs 2
    assert binarize([_rated(0, 3, 3, 3, 3), _rated(1, 3, 3, 3, 3)], "lowest", random.Random(0), 2) == []
    assert binarize([_rated(0, 3, 3, 3, 3), GROUP[4]], "lowest", random.Random(0), 2) == []  # one rated: no pair


def test_random_lower_draws_only_strictly_lower_completions():
    seen = set()
    for seed in range(40):
        [(chosen, rejected)] = binarize(GROUP, "random_lower", random.Random(seed), max_pairs=2)
        assert chosen.index == 0 and rejected.rated_mean() < chosen.rated_mean()
        seen.add(rejected.index)
    assert seen == {1, 3, 5}  # 2 ties with the best, 4 has no rating


def test_all_pairs_orders_by_margin_and_caps():
    pairs = binarize(GROUP, "all_pairs", random.Random(0), max_pairs=100)
    assert all(c.rated_mean() > r.rated_mean() for c, r in pairs)
    assert len(pairs) == 9  # 4 rated levels: {4.5, 4.5} > 3 > 2 > 1 → 2·3 + 2 + 1
    margins = [c.rated_mean() - r.rated_mean() for c, r in pairs]
    assert margins == sorted(margins, reverse=True)
    assert [(c.index, r.index) for c, r in binarize(GROUP, "all_pairs", random.Random(0), max_pairs=2)] == [(0, 5),
                                                                                                            (2, 5)]


def test_rationale_rows_become_rationale_enriched_examples():
    from alignflow.components.data.schemas import PairRow
    from alignflow.components.stages.train import preference_examples

    row = PairRow(problem_id="p", prompt="x", chosen="a", rejected="b", score_chosen=5, score_rejected=1,
                  rationale="a is right", rationale_prompt="x_rat")
    plain = row.model_copy(update={"rationale": None, "rationale_prompt": None})
    [with_rationale, without] = preference_examples([row, plain], "<eos>")
    assert (with_rationale.rationale, with_rationale.rationale_prompt) == ("a is right<eos>", "x_rat")
    assert without.rationale is None


def test_pool_names_resolve_to_checkpoints_or_fail_clearly(tmp_path):
    from alignflow.components.collection.synthesis import resolve_pool
    from alignflow.components.config import PipelineConfig

    cfg = PipelineConfig.model_validate({"synthesis": {"policies": [{"checkpoint": "current", "temperature": 0.7},
                                                                    {"checkpoint": "sft", "temperature": 1.0}]}})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pool = resolve_pool(cfg, {"current": str(tmp_path / "a"), "sft": str(tmp_path / "b")})
    assert [(m.label, m.temperature) for m in pool] == [("current", 0.7), ("sft", 1.0)]
    with pytest.raises(ValueError, match="'sft' is neither a known name"):
        resolve_pool(cfg, {"current": str(tmp_path / "a")})
