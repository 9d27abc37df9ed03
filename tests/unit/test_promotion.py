"""Promotion gates on fixed version tags, and the position-fair win rate."""

import pytest

from alignflow.components.config import PromotionConfig
from alignflow.components.evaluation.gates import GateResult, evaluate_gates, win_rate

PROD = {"eval_accuracy": "0.50", "eval_dataset": "md5a", "eval_kl": "0.2", "eval_mean_length": "40"}


def _gates(candidate, production=PROD, win=None, **limits):
    report = evaluate_gates("policy", "2", candidate, "1" if production else None, production,
                            PromotionConfig(**limits), win)
    return report, {g.gate: g.status for g in report.gates}


def test_every_gate_passes_fails_or_is_reported_skipped():
    good = {"eval_accuracy": "0.55", "eval_dataset": "md5a", "eval_kl": "0.3", "eval_mean_length": "44"}
    report, status = _gates(good, min_delta=0.02, max_kl=0.5, max_length_drift=0.2, min_judge_win_rate=0.5, win=0.6)
    assert report.passed and status == {"metric_delta": "passed", "kl_budget": "passed", "length_drift": "passed",
                                        "judge_win_rate": "passed", "proxy_gap": "skipped"}
    report, status = _gates(good, min_delta=0.1, max_kl=0.25, max_length_drift=0.05, min_judge_win_rate=0.7, win=0.6)
    assert not report.passed and set(status.values()) == {"failed", "skipped"} and status["proxy_gap"] == "skipped"
    assert "| metric_delta | failed | 0.0500 | 0.1000 |" in report.as_markdown()
    report, status = _gates(good)  # no limits: reported as skipped, never silently passed
    assert report.passed and status["kl_budget"] == status["length_drift"] == status["judge_win_rate"] == "skipped"


def test_accuracy_gate_refuses_another_eval_set_and_holds_a_first_version_to_its_baseline():
    _, status = _gates({"eval_accuracy": "0.9", "eval_dataset": "md5b"})
    assert status["metric_delta"] == "failed"
    # no production version: compared with the accuracy of the model its rounds started from
    worse = {"eval_accuracy": "0.10", "eval_dataset": "md5b", "baseline_accuracy": "0.15"}
    report, status = _gates(worse, production=None, max_length_drift=0.1)
    assert not report.passed and status == {"metric_delta": "failed", "kl_budget": "skipped",
                                            "length_drift": "skipped", "judge_win_rate": "skipped",
                                            "proxy_gap": "skipped"}
    expected = "| metric_delta | failed | -0.0500 | 0.0000 | eval/accuracy 0.1000 vs 0.1500, its pre-round baseline"
    assert expected in report.as_markdown()
    report, status = _gates({**worse, "eval_accuracy": "0.16"}, production=None, min_delta=0.01)
    assert report.passed
    # nothing at all to compare with (a version registered by hand): accepted, and the report says why
    report, status = _gates({"eval_accuracy": "0.1", "eval_dataset": "md5b"}, production=None)
    assert report.passed and "nothing (no production version, no recorded baseline)" in report.as_markdown()
    # a version without an accuracy is never promoted
    _, status = _gates({"eval_dataset": "md5a"})
    assert status["metric_delta"] == "failed"


def test_win_rate_cancels_position_bias():
    assert win_rate(["A"] * 4, ["A"] * 4) == 0.5  # always the first position: no preference
    assert win_rate(["A", "A"], ["B", "B"]) == 1.0
    assert win_rate(["B", "B"], ["A", "B"]) == 0.25
    with pytest.raises(ValueError):
        win_rate([], [])


class _Version:
    def __init__(self, version: str, tags: dict[str, str]) -> None:
        self.version, self.tags = version, tags


def decide_promotion(version, tags, production, limits, policy_gates=True):
    from alignflow.components.evaluation.gates import decide_promotion as decide

    return decide("policy", version, tags, production and production.version, production and production.tags, limits,
                  policy_gates)


def test_the_pipeline_gate_applies_the_kl_and_length_limits_and_leaves_production_to_promote_when_asked():
    production = _Version("1", PROD)
    drifted = {"eval_accuracy": "0.60", "eval_dataset": "md5a", "eval_kl": "0.9", "eval_mean_length": "80"}
    blocked = decide_promotion("2", drifted, production, PromotionConfig(max_kl=0.5, max_length_drift=0.2))
    assert not blocked.passed and "kl_budget failed" in blocked.reason and "length_drift failed" in blocked.reason
    assert "| kl_budget | failed |" in blocked.as_markdown()
    # the same candidate passes on accuracy alone when those limits are not set (reported as skipped)
    free = decide_promotion("2", drifted, production, PromotionConfig())
    assert free.passed and [g.status for g in free.gates] == ["passed", "skipped", "skipped", "skipped"]
    assert free.ceiling == "production" and "0.6000 vs 0.5000, production v1" in free.reason
    # no KL measured (eval.kl_samples 0 leaves "nan") while a budget is set: blocked, not waved through
    unmeasured = decide_promotion("2", {**drifted, "eval_kl": "nan"}, production, PromotionConfig(max_kl=0.5))
    assert not unmeasured.passed and "has no eval_kl" in unmeasured.reason
    # approval or a judge gate configured: the pipeline stops at staging; `alignflow promote` decides production
    for limits in (PromotionConfig(require_approval=True), PromotionConfig(min_judge_win_rate=0.5)):
        staged = decide_promotion("2", drifted, production, limits)
        assert staged.passed and staged.ceiling == "staging" and "alignflow promote" in staged.reason
    # the first version (no production) is compared with its own pre-round baseline
    first = decide_promotion("1", {**drifted, "baseline_accuracy": "0.65"}, None, PromotionConfig())
    assert not first.passed and "its pre-round baseline" in first.reason and first.reference_accuracy == 0.65
    # a judge: accuracy alone — no KL/length rows, no staging ceiling, whatever the promotion section says
    judge = decide_promotion("2", {"eval_accuracy": "0.6", "eval_dataset": "md5a"}, production,
                             PromotionConfig(max_kl=0.5, require_approval=True), policy_gates=False)
    assert judge.passed and [g.gate for g in judge.gates] == ["metric_delta"] and judge.ceiling == "production"


def _bare_version(tracker, run: str, tags: dict[str, str]) -> str:
    """A registry version as `candidate`, with no model behind it: the alias rules never read its files."""
    tracker.ensure_registered_model("policy", "alias rules")
    version = tracker.create_model_version("policy", f"{tracker.artifact_uri(run)}/model", run, tags)
    tracker.set_alias("policy", "candidate", version)
    return version


def test_a_staging_ceiling_moves_staging_but_not_production(tmp_path):
    from alignflow.components.platform import registry
    from alignflow.components.platform.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "ceiling")
    versions = []
    for accuracy in ("0.5", "0.6"):
        run = tracker.start_run("pipeline")
        versions.append(_bare_version(tracker, run, {"eval_accuracy": accuracy, "eval_dataset": "md5a"}))
        tracker.end_run(run)
    first = decide_promotion(versions[0], {"eval_accuracy": "0.5", "eval_dataset": "md5a",
                                                    "baseline_accuracy": "0.4"}, None, PromotionConfig())
    assert registry.apply_promotion(tracker, "policy", first, "production") == ["staging", "production"]
    production = registry.version_for_alias(tracker, "policy", "production")
    second = decide_promotion(versions[1], {"eval_accuracy": "0.6", "eval_dataset": "md5a"},
                                       production, PromotionConfig(require_approval=True))
    assert registry.apply_promotion(tracker, "policy", second, "production") == ["staging"]
    assert _alias(tracker, "staging") == versions[1]
    assert _alias(tracker, "production") == versions[0]


def test_one_alias_rule_for_the_pipeline_gate_and_alignflow_promote(tmp_path):
    """Both paths move aliases with registry.promote_version (issue 14: apply_promotion had its own copy,
    which wrote previous-production even when production already was the candidate)."""
    from alignflow.components.evaluation.gates import GateReport
    from alignflow.components.platform import registry
    from alignflow.components.platform.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "aliases")
    run = tracker.start_run("pipeline")
    v1 = _bare_version(tracker, run, {"eval_accuracy": "0.5"})
    v2 = _bare_version(tracker, run, {"eval_accuracy": "0.6"})
    passed = GateReport("policy", v1, None, ceiling="production")
    assert registry.apply_promotion(tracker, "policy", passed, "production") == ["staging", "production"]
    # promoting the production version again (a re-run, or `alignflow promote` after the pipeline's own gate)
    for again in (lambda: registry.apply_promotion(tracker, "policy", passed, "production"),
                  lambda: registry.promote_version(tracker, "policy", v1, "production")):
        assert again() == ["staging", "production"]
        assert registry.version_for_alias(tracker, "policy", "previous-production") is None
    assert registry.promote_version(tracker, "policy", v2, "production") == ["staging", "production"]
    assert _alias(tracker, "previous-production") == v1
    # a blocked report moves nothing, whatever the target
    blocked = GateReport("policy", v1, v2, gates=[GateResult("metric_delta", "failed", -0.1, 0.0, "worse")])
    assert registry.apply_promotion(tracker, "policy", blocked, "production") == []
    assert _alias(tracker, "production") == v2
    tracker.end_run(run)


def test_the_pipeline_gate_and_the_promote_flow_report_with_one_type():
    from alignflow.components.evaluation.gates import GateReport

    tags = {"eval_accuracy": "0.55", "eval_dataset": "md5a", "eval_kl": "0.3", "eval_mean_length": "44"}
    pipeline = decide_promotion("2", tags, _Version("1", PROD), PromotionConfig(max_kl=0.5))
    promote, _ = _gates(tags, max_kl=0.5)
    assert type(pipeline) is type(promote) is GateReport
    assert pipeline.reason == promote.reason
    assert pipeline.gates == [g for g in promote.gates if g.gate != "judge_win_rate"]


def _alias(tracker, alias: str) -> str:
    from alignflow.components.platform import registry

    version = registry.version_for_alias(tracker, "policy", alias)
    assert version is not None, f"no version has alias {alias}"
    return str(version.version)


def test_the_gate_compares_the_promotion_metric_and_names_it():
    """Any task: the version carries eval_metric_name/eval_metric, the gate compares those (never a
    different metric), and the report names the metric."""
    prod = {"eval_metric_name": "eval/rewards/mean", "eval_metric": "0.40", "eval_dataset": "md5a"}
    better = {"eval_metric_name": "eval/rewards/mean", "eval_metric": "0.45", "eval_dataset": "md5a"}
    report, status = _gates(better, production=prod, min_delta=0.01)
    assert report.passed and status["metric_delta"] == "passed"
    assert "eval/rewards/mean 0.4500 vs 0.4000" in report.as_markdown() and report.metric == "eval/rewards/mean"
    other = {**better, "eval_metric_name": "eval/accuracy"}
    report, status = _gates(other, production=prod)
    assert not report.passed and "measured by eval/accuracy, production by eval/rewards/mean" in report.reason
    # a first version is held to its recorded baseline of the same metric
    first = {**better, "baseline_metric": "0.5"}
    report, _ = _gates(first, production=None)
    assert not report.passed and "eval/rewards/mean 0.4500 vs 0.5000, its pre-round baseline" in report.reason


HACKING = PromotionConfig(proxy_metric="eval/reward_model/mean", truth_metric="eval/constraints/pass_rate")


def _proxy_tags(proxy: float, truth: float, **extra: str) -> dict[str, str]:
    return {"eval_metric_name": "eval/reward_model/mean", "eval_metric": str(proxy), "eval_dataset": "md5a",
            "proxy_metric_name": "eval/reward_model/mean", "proxy_metric": str(proxy),
            "truth_metric_name": "eval/constraints/pass_rate", "truth_metric": str(truth), **extra}


def test_the_proxy_gap_gate_blocks_a_candidate_that_raised_the_proxy_while_the_verifier_fell():
    production = _Version("1", _proxy_tags(0.80, 0.40))
    hacked = _proxy_tags(1.30, 0.35)  # the reward model likes it more, the verifier passes fewer answers
    report = decide_promotion("2", hacked, production, HACKING)
    gate = next(g for g in report.gates if g.gate == "proxy_gap")
    assert not report.passed and gate.status == "failed"
    assert gate.value == pytest.approx(-0.05) and gate.limit == 0.0
    assert "reward hacking: the proxy rose while the truth fell" in report.reason
    assert "against production v1" in gate.detail and "| proxy_gap | failed |" in report.as_markdown()
    # the metric gate alone (the proxy) would have promoted it
    assert next(g for g in report.gates if g.gate == "metric_delta").status == "passed"
    # both rose, or the truth fell no more than max_proxy_gap, or the proxy fell too: not hacking
    for candidate, limits in ((_proxy_tags(1.30, 0.45), HACKING),
                              (hacked, HACKING.model_copy(update={"max_proxy_gap": 0.05})),
                              (_proxy_tags(0.70, 0.35), HACKING)):
        gate = next(g for g in decide_promotion("2", candidate, production, limits).gates if g.gate == "proxy_gap")
        assert gate.status == "passed", gate


def test_the_proxy_gap_gate_falls_back_to_the_baseline_and_says_what_it_could_not_compare():
    first = _proxy_tags(1.30, 0.35, baseline_proxy_metric="0.8", baseline_truth_metric="0.4")
    gate = next(g for g in decide_promotion("1", first, None, HACKING).gates if g.gate == "proxy_gap")
    assert gate.status == "failed" and "its pre-round baseline (no production version yet)" in gate.detail
    # production registered without the two metrics: the baseline again, and the report says why
    legacy = _Version("1", {"eval_metric_name": "eval/reward_model/mean", "eval_metric": "0.8", "eval_dataset": "md5a"})
    gate = next(g for g in decide_promotion("2", first, legacy, HACKING).gates if g.gate == "proxy_gap")
    assert gate.status == "failed" and "production v1 recorded no eval/reward_model/mean" in gate.detail
    # nothing at all to compare with: skipped, not passed
    gate = next(g for g in decide_promotion("1", _proxy_tags(1.3, 0.35), None, HACKING).gates
                if g.gate == "proxy_gap")
    assert gate.status == "skipped" and "nothing to compare" in gate.detail
    # configured but the candidate carries no values: blocked
    bare = {"eval_metric_name": "eval/reward_model/mean", "eval_metric": "1.3", "eval_dataset": "md5a"}
    report = decide_promotion("2", bare, _Version("1", _proxy_tags(0.8, 0.4)), HACKING)
    assert not report.passed and "the candidate has no eval/reward_model/mean / eval/constraints/pass_rate" in \
        report.reason
    # not configured: reported skipped; a judge or a reward model is never held to it
    assert next(g for g in decide_promotion("2", first, None, PromotionConfig()).gates
                if g.gate == "proxy_gap").status == "skipped"
    assert "proxy_gap" not in {g.gate for g in decide_promotion("2", first, None, HACKING, policy_gates=False).gates}


def test_the_proxy_gap_settings_are_checked_at_load_time():
    from alignflow.components.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="proxy_metric and truth_metric go together"):
        load_config(None, ["promotion.proxy_metric=eval/reward_model/mean"])
    with pytest.raises(ConfigError, match="max_proxy_gap=0.1 has no effect without proxy_metric"):
        load_config(None, ["promotion.max_proxy_gap=0.1"])
    with pytest.raises(ConfigError, match="the same metric"):
        load_config(None, ["promotion.proxy_metric=eval/accuracy", "promotion.truth_metric=eval/accuracy"])


def test_a_reward_model_is_compared_with_production_scored_again_on_its_own_held_out_pairs():
    from alignflow.components.evaluation.gates import Remeasured

    # production registered 0.95 on ITS held-out pairs; on the candidate's pairs it ranks 0.90
    production = _Version("3", {"eval_metric_name": "reward/accuracy", "eval_metric": "0.95", "eval_dataset": "old"})
    candidate = {"eval_metric_name": "reward/accuracy", "eval_metric": "0.85", "eval_dataset": "new"}
    remeasured = Remeasured("3", "reward/accuracy", 0.90, "new")
    worse = decide_promotion_rm(candidate, production, remeasured, min_metric=0.6)
    assert not worse.passed and "reward/accuracy 0.8500 vs 0.9000, production v3" in worse.reason
    assert "scored again on the candidate's held-out set" in worse.compared_with
    better = decide_promotion_rm({**candidate, "eval_metric": "0.92"}, production, remeasured, min_metric=0.6)
    assert better.passed and [g.gate for g in better.gates] == ["metric_delta", "min_metric"]
    # the floor applies whatever production does
    low = decide_promotion_rm({**candidate, "eval_metric": "0.55"}, None, None, min_metric=0.6)
    assert not low.passed and "min_metric failed (reward/accuracy on its own held-out set: 0.5500 vs limit 0.6)" in \
        low.reason
    # a measurement of another production version is not used: the registered tags are (another set: refused)
    stale = decide_promotion_rm(candidate, production, Remeasured("2", "reward/accuracy", 0.5, "new"), 0.6)
    assert not stale.passed and "not comparable: eval set new vs production's old" in stale.reason


def decide_promotion_rm(tags, production, remeasured, min_metric):
    from alignflow.components.evaluation.gates import decide_promotion as decide

    return decide("reward", "4", tags, production and production.version, production and production.tags,
                  PromotionConfig(), policy_gates=False, min_metric=min_metric, remeasured=remeasured)


def test_a_model_uri_names_an_alias_or_pins_a_version_number(tmp_path):
    from alignflow.components.platform import registry
    from alignflow.components.platform.tracking import Tracker

    assert registry.parse_model_uri("models:/alignflow-reward@production") == ("alignflow-reward", "production")
    assert registry.parse_model_uri("models:/alignflow-reward/3") == ("alignflow-reward", "3")
    assert registry.parse_model_uri("/some/checkpoint") is None
    for bad in ("models:/alignflow-reward", "models:/@production", "models:/alignflow-reward/latest"):
        with pytest.raises(ValueError, match="expected models:/<registered model>@<alias> or"):
            registry.parse_model_uri(bad)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "uris")
    run = tracker.start_run("r")
    first, second = _bare_version(tracker, run, {}), _bare_version(tracker, run, {})
    pinned, aliased = (registry.version_for_alias(tracker, "policy", a) for a in (first, "candidate"))
    assert pinned is not None and aliased is not None
    assert (str(pinned.version), str(aliased.version)) == (first, second)
    assert registry.version_for_alias(tracker, "policy", "99") is None
    with pytest.raises(LookupError, match="has no version 99 at .*register one first"):
        registry.download_version(tracker, "policy", "99", tmp_path / "cache")


def test_scores_of_different_reward_models_are_not_compared():
    """A candidate scored by reward model B is not gated against production scored by reward model A on
    the metric (blocked: not comparable) nor on the proxy (the proxy gap falls back to the candidate's
    own pre-round baseline, which B scored too); the same model compares as before."""
    from alignflow.components.evaluation.gates import scored_by, scorer_models_tag

    def tags(proxy: float, truth: float, model: str) -> dict[str, str]:
        return {**_proxy_tags(proxy, truth, baseline_proxy_metric="0.9", baseline_truth_metric="0.3"),
                **scorer_models_tag({"reward_model": model})}

    production = _Version("1", tags(0.80, 0.40, "rm-a"))
    assert scored_by(production.tags, "eval/reward_model/mean") == "rm-a"
    assert scored_by(production.tags, "eval/constraints/pass_rate") is None  # a verifier
    other = decide_promotion("2", tags(1.30, 0.45, "rm-b"), production, HACKING)
    metric = next(g for g in other.gates if g.gate == "metric_delta")
    assert not other.passed and metric.status == "failed"
    assert "scored by model rm-b, production's by rm-a" in metric.detail
    proxy = next(g for g in other.gates if g.gate == "proxy_gap")
    assert "its pre-round baseline (production v1's eval/reward_model/mean was scored by another model)" in \
        proxy.detail
    same = decide_promotion("2", tags(1.30, 0.45, "rm-a"), production, HACKING)
    assert same.passed and "against production v1" in next(g for g in same.gates if g.gate == "proxy_gap").detail
