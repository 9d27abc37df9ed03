"""Promotion gates for a registered policy version (`alignflow promote`, flow ``promote``).

A candidate moves to staging and production only if every configured gate passes:

- metric delta: its held-out ``promotion.metric`` (eval/accuracy on the arithmetic task; any task's
  primary scorer otherwise; higher is better) ≥ production's + ``min_delta`` — the same metric and
  the same eval file, by DVC hash, or the gate refuses to compare; with no production version yet,
  ≥ the value of the model its rounds started from (the ``baseline_metric`` tag the pipeline and the
  judge loop register) + ``min_delta`` — a first version is never accepted just for being first;
- KL budget: its KL to its reference ≤ ``max_kl`` — a policy that bought accuracy by drifting far
  from its reference is held back;
- length drift: |its mean answer length / production's − 1| ≤ ``max_length_drift``;
- judge win-rate: when a judge is given, its answers beat production's in ≥ ``min_judge_win_rate``
  of pairwise comparisons (each pair asked both ways round, so position bias cancels);
- proxy gap (reward hacking): with ``promotion.proxy_metric`` and ``truth_metric`` (e.g. a reward
  model's eval mean and a verifier's pass rate), a candidate whose proxy rose while its truth fell by
  more than ``max_proxy_gap`` — against production, or its pre-round baseline — is blocked;
- minimum (a reward model's own gate): its metric ≥ ``min_metric`` on its own held-out set.

A reward model's held-out pairs are its own, so production is scored again on the candidate's
pairs (``Remeasured``) and compared on those: a worse model never replaces a better one.

Gates without a limit, or without a production version to compare with, are reported as skipped,
never as passed silently. The report is markdown plus a table (MLflow and Prefect artifacts).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

GATE = "metric_delta"  # the metric gate's name in reports and version tags (gate.metric_delta)
PROXY_GATE = "proxy_gap"
MIN_GATE = "min_metric"


@dataclass(frozen=True)
class GateResult:
    gate: str
    status: str  # "passed" | "failed" | "skipped"
    value: float | None
    limit: float | None
    detail: str


@dataclass
class GateReport:
    """Every gate applied to one candidate version, the verdict and how far it may move. The one
    report type of the pipeline's own gate, the judge loop's and ``alignflow promote``."""

    registered_model: str
    candidate_version: str
    production_version: str | None
    gates: list[GateResult] = field(default_factory=list)
    compared_with: str = ""  # what the metric was compared with: "production vN", "its pre-round baseline …"
    reference_accuracy: float = math.nan  # that reference's value of the metric (nan: nothing to compare with)
    candidate_accuracy: float = math.nan  # the candidate's value of the metric
    metric: str = "eval/accuracy"  # the promotion metric compared
    eval_dataset: str = ""
    min_delta: float = 0.0
    # how far a passing candidate may move: "production", or "staging" when production needs `alignflow promote`
    ceiling: str = "production"
    note: str = ""

    @property
    def passed(self) -> bool:
        return all(g.status != "failed" for g in self.gates)

    @property
    def reason(self) -> str:
        """One line: the accuracy verdict, then every other failed gate, then the ceiling's note."""
        accuracy = next((g for g in self.gates if g.gate == GATE), None)
        parts = []
        if accuracy is not None:
            verdict = "passed" if accuracy.status == "passed" else "FAILED"
            parts.append(f"metric gate {verdict}: {accuracy.detail} (min_delta {self.min_delta:+.4f})")
        parts += [f"{g.gate} failed ({g.detail}: {'n/a' if g.value is None else f'{g.value:.4f}'} vs limit {g.limit})"
                  for g in self.gates if g.status == "failed" and g is not accuracy]
        return "; ".join(parts) + self.note

    def table(self) -> list[dict[str, Any]]:
        return [{k: ("" if v is None else v) for k, v in asdict(g).items()} for g in self.gates]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "reason": self.reason}

    def as_markdown(self) -> str:
        verdict = "PASSED" if self.passed else "BLOCKED"
        against = f"production v{self.production_version}" if self.production_version else "no production version"
        return (f"# Promotion of {self.registered_model} v{self.candidate_version}: {verdict}\n\n{self.reason}\n\n"
                f"| quantity | value |\n|---|---|\n"
                f"| compared with | {against}; {self.metric} against {self.compared_with} |\n"
                f"| metric | {self.metric} (higher is better) |\n"
                f"| candidate | {self.candidate_accuracy:.4f} |\n"
                f"| reference | {self.reference_accuracy:.4f} |\n"
                f"| required delta | {self.min_delta:+.4f} |\n"
                f"| eval dataset (DVC md5) | {self.eval_dataset} |\n"
                f"| furthest alias | {self.ceiling} |\n\n"
                f"{gate_table(self.gates)}")


@dataclass(frozen=True)
class Remeasured:
    """Production's ``metric`` measured again on the candidate's own eval set (a reward model's
    held-out pairs): what the metric gate compares with instead of production's registered value."""

    version: str  # the production version that was measured
    metric: str
    value: float
    eval_dataset: str  # the candidate's eval set (DVC md5)

    def tags(self) -> dict[str, str]:
        """The production tags this measurement replaces."""
        return {"eval_metric_name": self.metric, "eval_metric": str(self.value), "eval_dataset": self.eval_dataset}


def gate_table(gates: list[GateResult]) -> str:
    """The gates as a markdown table (the promote flow's report and the pipeline's gate report)."""
    rows = "".join(f"| {g.gate} | {g.status} | {_fmt(g.value)} | {_fmt(g.limit)} | {g.detail} |\n" for g in gates)
    return f"| gate | status | value | limit | detail |\n|---|---|---|---|---|\n{rows}"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _float(tags: dict[str, str], key: str) -> float | None:
    try:
        value = float(tags[key])
    except (KeyError, ValueError):
        return None
    return None if math.isnan(value) else value


def metric_name(tags: dict[str, str]) -> str:
    """The eval metric a version's tags record (versions registered before ``promotion.metric``
    existed recorded eval/accuracy as ``eval_accuracy``)."""
    return tags.get("eval_metric_name") or "eval/accuracy"


def metric_value(tags: dict[str, str]) -> float | None:
    value = _float(tags, "eval_metric")
    return value if value is not None or "eval_metric" in tags else _float(tags, "eval_accuracy")


def metric_reference(candidate_tags: dict[str, str], production_version: str | None,
                     production_tags: dict[str, str] | None) -> tuple[float | None, str]:
    """What the candidate's metric is compared with, and a name for it: production's, or, before
    anything is in production, the recorded value of the model its rounds started from."""
    if production_version is not None:
        return metric_value(production_tags or {}), f"production v{production_version}"
    baseline = _float(candidate_tags, "baseline_metric")
    if baseline is None:
        baseline = _float(candidate_tags, "baseline_accuracy")
    if baseline is None:
        return None, "nothing (no production version, no recorded baseline)"
    return baseline, "its pre-round baseline (no production version yet)"


SCORER_MODELS_TAG = "eval_scorer_models"


def scorer_models_tag(scorer_models: dict[str, str]) -> dict[str, str]:
    """The version tag naming the model behind each model-backed scorer (``{id: model id}``, JSON), or
    none when no scorer is model-backed."""
    return {SCORER_MODELS_TAG: json.dumps(scorer_models, sort_keys=True)} if scorer_models else {}


def scored_by(tags: dict[str, str], metric: str) -> str | None:
    """The model id of the reward model or judge whose scores ``metric`` (``eval/<scorer id>/…``) is made
    of, from the version's tags; None for a verifier's metric (or a version that recorded none)."""
    try:
        models = json.loads(tags.get(SCORER_MODELS_TAG) or "{}")
    except ValueError:
        return None
    parts = metric.split("/")
    return models.get(parts[1]) if len(parts) > 2 and isinstance(models, dict) else None


def _scorer_mismatch(candidate_tags: dict[str, str], prod: dict[str, str], metric: str) -> str | None:
    """Why the candidate's and production's ``metric`` are not on one scale: scored by different models."""
    ours, theirs = scored_by(candidate_tags, metric), scored_by(prod, metric)
    if ours == theirs:
        return None
    return (f"not comparable: {metric} was scored by model {ours or 'not recorded'}, production's by "
            f"{theirs or 'not recorded'} (scores of different reward models or judges are not on one scale)")


def metric_gate(candidate_tags: dict[str, str], production_version: str | None,
                production_tags: dict[str, str] | None, min_delta: float) -> GateResult:
    """The one metric rule for the pipeline's gate and `alignflow promote`: candidate ≥ reference +
    min_delta on the same metric (``promotion.metric``, higher is better) and the same eval set. Only
    a version with neither a production version nor a recorded baseline to compare with is accepted
    on its own — and the report says so."""
    prod = production_tags or {}
    name = metric_name(candidate_tags)
    value = metric_value(candidate_tags)
    reference, source = metric_reference(candidate_tags, production_version, prod)
    if value is None:
        return GateResult(GATE, "failed", None, min_delta, f"the candidate has no {name}")
    if production_version is not None and metric_name(prod) != name:
        return GateResult(GATE, "failed", None, min_delta,
                          f"not comparable: the candidate is measured by {name}, production by {metric_name(prod)}")
    if production_version is not None and candidate_tags.get("eval_dataset") != prod.get("eval_dataset"):
        return GateResult(GATE, "failed", None, min_delta,
                          f"not comparable: eval set {candidate_tags.get('eval_dataset')} vs "
                          f"production's {prod.get('eval_dataset')}")
    if production_version is not None and (mismatch := _scorer_mismatch(candidate_tags, prod, name)):
        return GateResult(GATE, "failed", None, min_delta, mismatch)
    if reference is None and production_version is not None:
        return GateResult(GATE, "failed", None, min_delta, f"{source} has no {name}")
    if reference is None:
        return GateResult(GATE, "passed", None, min_delta,
                          f"{name} {value:.4f}, compared with {source}: the first candidate is accepted on it")
    delta = value - reference
    return GateResult(GATE, "passed" if delta >= min_delta else "failed", delta, min_delta,
                      f"{name} {value:.4f} vs {reference:.4f}, {source}")


def _proxy_reference(candidate_tags: dict[str, str], production_version: str | None, prod: dict[str, str],
                     proxy: str, truth: str) -> tuple[float | None, float | None, str]:
    """(proxy, truth, what they are) of production when it recorded both on the candidate's eval set,
    else of the candidate's pre-round baseline."""
    same_names = (prod.get("proxy_metric_name"), prod.get("truth_metric_name")) == (proxy, truth)
    same_set = prod.get("eval_dataset") == candidate_tags.get("eval_dataset")
    same_scorer = _scorer_mismatch(candidate_tags, prod, proxy) is None
    if production_version is not None and same_names and same_set and same_scorer:
        values = _float(prod, "proxy_metric"), _float(prod, "truth_metric")
        if None not in values:
            return values[0], values[1], f"production v{production_version}"
    why = ("no production version yet" if production_version is None else
           f"production v{production_version}'s {proxy} was scored by another model" if not same_scorer
           else f"production v{production_version} recorded no {proxy} / {truth} on this eval set")
    return (_float(candidate_tags, "baseline_proxy_metric"), _float(candidate_tags, "baseline_truth_metric"),
            f"its pre-round baseline ({why})")


def proxy_gap_gate(candidate_tags: dict[str, str], production_version: str | None,
                   production_tags: dict[str, str] | None, limits: Any) -> GateResult:
    """Reward hacking caught: failed when the candidate's ``limits.proxy_metric`` rose while its
    ``truth_metric`` fell by more than ``max_proxy_gap`` (value: the truth's change; limit: −gap),
    against production (same metrics, same eval set) or else its pre-round baseline. Skipped when the
    two metrics are not configured or there is nothing to compare with; failed when the candidate
    carries no values for them."""
    proxy, truth = getattr(limits, "proxy_metric", None), getattr(limits, "truth_metric", None)
    if proxy is None or truth is None:
        return GateResult(PROXY_GATE, "skipped", None, None, "promotion.proxy_metric / truth_metric not set")
    limit = -float(limits.max_proxy_gap)
    names = (candidate_tags.get("proxy_metric_name"), candidate_tags.get("truth_metric_name"))
    cand_proxy, cand_truth = _float(candidate_tags, "proxy_metric"), _float(candidate_tags, "truth_metric")
    if names != (proxy, truth) or cand_proxy is None or cand_truth is None:
        return GateResult(PROXY_GATE, "failed", None, limit, f"the candidate has no {proxy} / {truth} values")
    ref_proxy, ref_truth, source = _proxy_reference(candidate_tags, production_version, production_tags or {},
                                                    proxy, truth)
    if ref_proxy is None or ref_truth is None:
        return GateResult(PROXY_GATE, "skipped", None, limit, f"nothing to compare {proxy} / {truth} with ({source})")
    d_proxy, d_truth = cand_proxy - ref_proxy, cand_truth - ref_truth
    hacked = d_proxy > 0 and d_truth < limit - 1e-9  # a drop exactly at the allowed gap passes (float noise aside)
    detail = (f"{proxy} {cand_proxy:.4f} vs {ref_proxy:.4f} ({d_proxy:+.4f}), {truth} {cand_truth:.4f} vs "
              f"{ref_truth:.4f} ({d_truth:+.4f}), against {source}")
    if hacked:
        detail = f"reward hacking: the proxy rose while the truth fell more than {limits.max_proxy_gap}: {detail}"
    return GateResult(PROXY_GATE, "failed" if hacked else "passed", d_truth, limit, detail)


def evaluate_gates(name: str, candidate_version: str, candidate_tags: dict[str, str],
                   production_version: str | None, production_tags: dict[str, str] | None, limits: Any,
                   judge_win_rate: float | None = None) -> GateReport:
    """Every gate of ``limits`` (a PromotionConfig: min_delta, max_kl, max_length_drift,
    min_judge_win_rate) on the candidate's version tags against production's."""
    prod = production_tags or {}
    reference, source = metric_reference(candidate_tags, production_version, prod)
    candidate_accuracy = metric_value(candidate_tags)
    report = GateReport(name, candidate_version, production_version, compared_with=source,
                        reference_accuracy=math.nan if reference is None else reference,
                        candidate_accuracy=math.nan if candidate_accuracy is None else candidate_accuracy,
                        metric=metric_name(candidate_tags),
                        eval_dataset=candidate_tags.get("eval_dataset", ""), min_delta=limits.min_delta)
    report.gates.append(metric_gate(candidate_tags, production_version, prod, limits.min_delta))

    kl = _float(candidate_tags, "eval_kl")
    if limits.max_kl is None:
        report.gates.append(GateResult("kl_budget", "skipped", kl, None, "promotion.max_kl not set"))
    elif kl is None:
        report.gates.append(GateResult("kl_budget", "failed", None, limits.max_kl, "the candidate has no eval_kl"))
    else:
        report.gates.append(GateResult("kl_budget", "passed" if kl <= limits.max_kl else "failed", kl, limits.max_kl,
                                       "KL(candidate ‖ its reference) on held-out prompts"))

    cand_len, prod_len = _float(candidate_tags, "eval_mean_length"), _float(prod, "eval_mean_length")
    if limits.max_length_drift is None:
        report.gates.append(GateResult("length_drift", "skipped", None, None, "promotion.max_length_drift not set"))
    elif production_version is None or not cand_len or not prod_len:
        report.gates.append(GateResult("length_drift", "skipped", None, limits.max_length_drift,
                                       "no production answer length to compare with"))
    else:
        drift = abs(cand_len / prod_len - 1)
        report.gates.append(GateResult("length_drift", "passed" if drift <= limits.max_length_drift else "failed",
                                       drift, limits.max_length_drift,
                                       f"{cand_len:.1f} vs production {prod_len:.1f} tokens"))

    if limits.min_judge_win_rate is None:
        report.gates.append(GateResult("judge_win_rate", "skipped", judge_win_rate, None,
                                       "promotion.min_judge_win_rate not set"))
    elif judge_win_rate is None:
        report.gates.append(GateResult("judge_win_rate", "skipped", None, limits.min_judge_win_rate,
                                       "no judge, or no production version to compare with"))
    else:
        ok = judge_win_rate >= limits.min_judge_win_rate
        report.gates.append(GateResult("judge_win_rate", "passed" if ok else "failed", judge_win_rate,
                                       limits.min_judge_win_rate, "candidate vs production, both orders"))
    report.gates.append(proxy_gap_gate(candidate_tags, production_version, prod, limits))
    return report


def min_metric_gate(candidate_tags: dict[str, str], minimum: float) -> GateResult:
    """The candidate's own metric (on its own eval set) is at least ``minimum``."""
    name, value = metric_name(candidate_tags), metric_value(candidate_tags)
    if value is None:
        return GateResult(MIN_GATE, "failed", None, minimum, f"the candidate has no {name}")
    return GateResult(MIN_GATE, "passed" if value >= minimum else "failed", value, minimum,
                      f"{name} on its own held-out set")


def decide_promotion(name: str, candidate_version: str, candidate_tags: dict[str, str],
                     production_version: str | None, production_tags: dict[str, str] | None, limits: Any,
                     policy_gates: bool = True, min_metric: float | None = None,
                     remeasured: Remeasured | None = None) -> GateReport:
    """The gate a pipeline, judge loop or reward-model stage applies to the version it just registered:
    the accuracy rule of `alignflow promote` (``metric_gate``) and, for a policy (``policy_gates``),
    the promotion section's KL budget, length drift and proxy gap. The judge win-rate and human
    approval only `alignflow promote` can give: when either is configured the pipeline stops at
    staging. A judge or a reward model is gated on its held-out accuracy alone: ``min_metric`` adds a
    floor on it, and ``remeasured`` (production scored on the candidate's own eval set) replaces
    production's registered value when it measured that very production version."""
    if remeasured is not None and production_version is not None and remeasured.version == str(production_version):
        production_tags = {**(production_tags or {}), **remeasured.tags()}
    report = evaluate_gates(name, candidate_version, candidate_tags, production_version, production_tags, limits)
    if remeasured is not None and remeasured.version == str(production_version):
        report.compared_with += ", scored again on the candidate's held-out set"
    keep = {GATE, "kl_budget", "length_drift", PROXY_GATE} if policy_gates else {GATE}
    report.gates = [g for g in report.gates if g.gate in keep]
    if min_metric is not None:
        report.gates.append(min_metric_gate(candidate_tags, min_metric))
    if policy_gates and limits.target_alias == "production" and (limits.require_approval
                                                                  or limits.min_judge_win_rate is not None):
        report.ceiling = "staging"
        report.note = ("; production needs `alignflow promote` (promotion.require_approval or min_judge_win_rate is "
                       "set: a human or the judge decides there)")
    return report


def win_rate(choices_straight: list[str], choices_swapped: list[str]) -> float:
    """Candidate shown as A in ``straight`` and as B in ``swapped``: a win counts 1 per order it
    is picked in, so a judge that always picks one position gives exactly 0.5."""
    if len(choices_straight) != len(choices_swapped) or not choices_straight:
        raise ValueError("win rate needs equal, non-empty lists of choices")
    wins = sum(c == "A" for c in choices_straight) + sum(c == "B" for c in choices_swapped)
    return wins / (2 * len(choices_straight))


def judge_win_rate(candidate_dir: Any, production_dir: Any, judge_dir: Any, examples: list[Any], max_new_tokens: int,
                   batch_size: int, prompt_template: str = "{prompt}", system_prompt: str | None = None) -> float:
    """Both policies answer the held-out rows (``data/formats.Example``) greedily; the judge picks the
    better answer of each pair, asked both ways round (``win_rate``)."""
    from alignflow.components.data.formats import render_prompt
    from alignflow.components.judges.pairwise import pairwise_choices
    from alignflow.components.modeling.checkpoints import load_checkpoint
    from alignflow.components.modeling.generation import generate_completions
    from alignflow.components.stages.synthesis import judge_context

    answers = []
    for directory in (candidate_dir, production_dir):
        policy = load_checkpoint(directory, merge=True)
        prompts = [render_prompt(e, policy.tokenizer, prompt_template, system_prompt) for e in examples]
        answers.append([c.text for c in generate_completions(policy.model, policy.tokenizer, prompts, k=1,
                                                             do_sample=False, max_new_tokens=max_new_tokens,
                                                             batch_size=batch_size)])
        del policy
    judge = load_checkpoint(judge_dir, merge=True)
    candidate, production = answers
    questions = [judge_context(e) for e in examples]
    straight = pairwise_choices(judge.model, judge.tokenizer, list(zip(questions, candidate, production)),
                                system_prompt, batch_size)
    swapped = pairwise_choices(judge.model, judge.tokenizer, list(zip(questions, production, candidate)),
                               system_prompt, batch_size)
    return win_rate(straight, swapped)
