"""`alignflow compare`: pipeline runs read back from a real MLflow store (sqlite), round by round."""

import pytest

from alignflow.components.evaluation.compare import collect, comparison_table, plot_comparison
from alignflow.components.platform.tracking import Tracker


def _pipeline(tracker: Tracker, kind: str, accuracies: list[float], collection_key: str, seconds: float) -> str:
    parent = tracker.start_run("pipeline", tags={"alignflow.kind": "pipeline"})
    tracker.log_params(parent, {"rounds.kind": kind, "sampling.prompts_per_round": 48, "sampling.k": 4,
                                "mcts.n_iters": 1})
    baseline = tracker.start_run("evaluate:baseline", parent)
    tracker.log_metrics(baseline, {"eval/accuracy": accuracies[0]})
    tracker.end_run(baseline)
    for index, acc in enumerate(accuracies[1:], start=1):
        run = tracker.start_run(f"round-{index}", parent, tags={"alignflow.kind": "round", "round": index})
        tracker.log_metrics(run, {"eval/accuracy": acc, "eval/n": 200, "round/n_pairs": 10 * index,
                                  collection_key: seconds},
                            step=index)
        tracker.end_run(run)
    tracker.end_run(parent)
    return parent


def test_compare_reads_rounds_labels_budgets_and_plots(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "compare-test")
    dpo = _pipeline(tracker, "on_policy", [0.135, 0.160, 0.185], "time/sampling_seconds", 142.0)
    mcts = _pipeline(tracker, "mcts", [0.135, 0.145, 0.170], "time/search_seconds", 600.0)
    unfinished = tracker.start_run("pipeline", tags={"alignflow.kind": "pipeline"})  # still RUNNING: left out

    series = collect(tracker)
    assert [s.run_id for s in series] == [dpo, mcts] and unfinished not in [s.run_id for s in series]
    assert series[0].label == "on_policy (prompts_per_round=48, k=4)"
    assert series[1].label == "mcts (prompts_per_round=48, n_iters=1)"
    assert series[1].accuracy() == {0: 0.135, 1: 0.145, 2: 0.170}
    assert series[1].collection_seconds(2) == 600.0 and series[1].collection_seconds(0) is None
    assert series[1].standard_error()[2] == pytest.approx((0.17 * 0.83 / 200) ** 0.5)
    assert series[1].standard_error()[0] == 0.0  # the baseline here logged no eval size

    table = comparison_table(series)
    assert f"| mcts (prompts_per_round=48, n_iters=1) `{mcts[:8]}` | 2 | 0.170 | 20 | 600 |" in table
    assert f"`{dpo[:8]}` | baseline | 0.135 | – | – |" in table

    out = plot_comparison(series, tmp_path / "plots" / "compare.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert not list((tmp_path / "plots").glob("*.tmp*"))  # written atomically

    only = collect(tracker, [mcts])
    assert [s.run_id for s in only] == [mcts]


def test_compare_without_finished_runs_says_where_it_looked(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "empty")
    with pytest.raises(LookupError, match="no finished pipeline run"):
        collect(tracker)


def test_compare_another_metric_and_tell_runs_apart_by_their_scorers(tmp_path):
    """The reward-model experiment: both arms share a budget; the label names the scorers, and the truth
    (a pass rate, with its standard error) or the proxy (a mean, no binomial error) is compared."""
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "compare-metric")
    arms = {}
    for scorers, truth in (([{"type": "reward_model", "weight": 1.0}, {"type": "constraints", "weight": 0.0}],
                            [0.2, 0.25]), ([{"type": "constraints", "weight": 1.0}], [0.2, 0.3])):
        parent = tracker.start_run("pipeline", tags={"alignflow.kind": "pipeline"})
        tracker.log_params(parent, {"rounds.kind": "on_policy", "sampling.k": 4, "scoring.scorers": scorers})
        baseline = tracker.start_run("evaluate:baseline", parent)
        tracker.log_metrics(baseline, {"eval/constraints/pass_rate": truth[0], "eval/reward_model/mean": 0.1})
        tracker.end_run(baseline)
        run = tracker.start_run("round-1", parent, tags={"alignflow.kind": "round", "round": 1})
        tracker.log_metrics(run, {"eval/constraints/pass_rate": truth[1], "eval/n": 100,
                                  "eval/reward_model/mean": 0.9}, step=1)
        tracker.end_run(run)
        tracker.end_run(parent)
        arms[parent] = truth
    series = collect(tracker, metric="eval/constraints/pass_rate")
    assert [s.label for s in series] == ["on_policy (k=4) scored by reward_model, constraints×0",
                                         "on_policy (k=4) scored by constraints"]
    assert [s.accuracy() for s in series] == [{0: 0.2, 1: 0.25}, {0: 0.2, 1: 0.3}]
    assert series[1].standard_error()[1] == pytest.approx((0.3 * 0.7 / 100) ** 0.5)
    assert "| run | round | eval/constraints/pass_rate |" in comparison_table(series)
    proxy = collect(tracker, metric="eval/reward_model/mean")
    assert proxy[0].accuracy() == {0: 0.1, 1: 0.9} and proxy[0].standard_error() == {0: 0.0, 1: 0.0}
    assert plot_comparison(proxy, tmp_path / "proxy.png").read_bytes()[:4] == b"\x89PNG"
