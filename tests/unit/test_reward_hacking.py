"""Reward hacking measured: which two metrics are the proxy and the truth, the tags the proxy-gap gate
reads, and the per-round plot of both."""

from __future__ import annotations

import math

import pytest

from alignflow.components.config import load_config
from alignflow.components.evaluation.hacking import plot_proxy_truth, proxy_and_truth, proxy_truth_tags

RM_AND_VERIFIER = "scoring.scorers=[{type: reward_model, model: /rm}, {type: constraints, name: ifeval, weight: 0}]"
BEST_VS_WORST = "pairs.strategy=best_vs_worst"  # a reward model's scores have no pass rule to pair on


def test_the_proxy_and_the_truth_are_configured_or_found_among_the_scorers():
    assert proxy_and_truth(load_config(None, [RM_AND_VERIFIER, BEST_VS_WORST])) == ("eval/reward_model/mean",
                                                                      "eval/ifeval/pass_rate")
    assert proxy_and_truth(load_config(None, [])) is None  # a verifier alone: nothing to hack
    configured = load_config(None, [RM_AND_VERIFIER, BEST_VS_WORST, "promotion.proxy_metric=eval/reward_model/mean",
                                    "promotion.truth_metric=eval/ifeval/mean"])
    metrics = {"eval/reward_model/mean": 0.1, "eval/ifeval/mean": 0.5, "eval/ifeval/pass_rate": 0.2}
    assert proxy_and_truth(configured, metrics) == ("eval/reward_model/mean", "eval/ifeval/mean")
    with pytest.raises(ValueError, match="promotion.truth_metric 'eval/ifeval/mean' is not an eval metric .*"
                                         "eval/ifeval/pass_rate"):
        proxy_and_truth(configured, {"eval/reward_model/mean": 0.1, "eval/ifeval/pass_rate": 0.2})


def test_the_policy_carries_both_metrics_after_the_rounds_and_before_them():
    names = ("eval/reward_model/mean", "eval/ifeval/pass_rate")
    tags = proxy_truth_tags(names, {names[0]: 1.5, names[1]: 0.3}, {names[0]: 0.2})
    assert tags["proxy_metric"] == 1.5 and tags["truth_metric"] == 0.3 and tags["baseline_proxy_metric"] == 0.2
    assert math.isnan(float(tags["baseline_truth_metric"])) and tags["truth_metric_name"] == names[1]
    assert proxy_truth_tags(None, {}, {}) == {}


def test_the_plot_shows_both_metrics_per_round(tmp_path):
    evals = {0: {"p": 0.1, "t": 0.30}, 1: {"p": 0.9, "t": 0.25}, 2: {"p": 1.4, "t": 0.20, "other": 1.0}}
    out = plot_proxy_truth(evals, "p", "t", tmp_path / "plot.png")
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 5000
    with pytest.raises(ValueError, match="no round logged both p and missing"):
        plot_proxy_truth(evals, "p", "missing", tmp_path / "none.png")
