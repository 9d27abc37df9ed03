"""Several pipeline runs side by side: held-out accuracy per round, and what each round's data
collection cost — the question "was MCTS worth its compute, compared with on-policy sampling?"
answered from MLflow alone, as a markdown table and a plot.

The runs are the pipeline parents (tag ``alignflow.kind = pipeline``); a run is labelled by its
round kind and the params that set its collection budget, read from the run's own params.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from alignflow.components.evaluation.report import round_rows
from alignflow.components.platform.figures import write_png_atomic
from alignflow.components.platform.tracking import Tracker

# per round kind: the params that size its data collection, shown in the label
BUDGET_PARAMS = {
    "on_policy": ["sampling.prompts_per_round", "sampling.k", "sampling.max_new_tokens"],
    "mcts": ["sampling.prompts_per_round", "mcts.n_iters", "mcts.n_init_actions", "mcts.n_actions",
             "mcts.depth_limit", "mcts.max_new_tokens_per_step"],
}
COLLECTION_SECONDS = ("time/sampling_seconds", "time/search_seconds")


def is_rate(metric: str) -> bool:
    """Whether an eval metric is a share of prompts (binomial standard error applies): accuracies,
    pass rates, per-kind pass rates; not means."""
    last = metric.rsplit("/", 1)[-1]
    return last.startswith("accuracy") or last == "pass_rate" or "/kind/" in metric


@dataclass
class RunSeries:
    run_id: str
    label: str
    status: str
    rounds: dict[int, dict[str, float]]  # 0 = baseline after SFT
    metric: str = "eval/accuracy"  # what is compared per round

    def accuracy(self) -> dict[int, float]:
        """``metric`` per round (eval/accuracy unless another was asked for)."""
        return {i: m[self.metric] for i, m in sorted(self.rounds.items()) if self.metric in m}

    def standard_error(self) -> dict[int, float]:
        """Binomial standard error of each value of a rate metric (0 where the eval size was not logged,
        and for a mean, whose spread the rounds do not log)."""
        return {i: (a * (1 - a) / self.rounds[i]["eval/n"]) ** 0.5
                if self.rounds[i].get("eval/n") and is_rate(self.metric) else 0.0
                for i, a in self.accuracy().items()}

    @property
    def short_label(self) -> str:
        return f"{self.label.split(' ', 1)[0]} {self.run_id[:8]}"

    def collection_seconds(self, index: int) -> float | None:
        found = [self.rounds[index][k] for k in COLLECTION_SECONDS if k in self.rounds.get(index, {})]
        return sum(found) if found else None


def pipeline_runs(tracker: Tracker, run_ids: list[str] | None = None) -> list:
    """The listed pipeline runs, or every finished one in the tracker's experiment (oldest first)."""
    if run_ids:
        return [tracker.get_run(run_id) for run_id in run_ids]
    runs = tracker.search_runs("tags.`alignflow.kind` = 'pipeline' and attributes.status = 'FINISHED'",
                               order_by=["attributes.start_time ASC"], max_results=100)
    if not runs:
        raise LookupError(f"no finished pipeline run in experiment {tracker.experiment_id} at {tracker.tracking_uri}")
    return runs


def scorers_label(logged: str | None) -> str:
    """The ``scoring.scorers`` param as a label: ids, a weight ≠ 1 after ×
    (``reward_model, constraints×0``); empty when it was not logged or does not parse."""
    try:
        scorers = ast.literal_eval(logged) if logged else []
    except (ValueError, SyntaxError):
        return ""
    if not isinstance(scorers, list):
        return ""
    parts = []
    for spec in scorers:
        if isinstance(spec, dict):
            weight = spec.get("weight", 1.0)
            parts.append(f"{spec.get('name') or spec.get('type')}" + (f"×{weight:g}" if weight != 1.0 else ""))
    return ", ".join(parts)


def lineage_series(tracker: Tracker, lineage_id: str,
                   metric: str = "eval/accuracy") -> tuple[RunSeries, dict[int, str]]:
    """Every round a lineage ever ran, as one series: its pipeline's rounds (and baseline), then each
    continuing run's round (``alignflow continue``, tag ``lineage.id``); a round run twice (a crash, a
    re-run) keeps its last measurement — a run that crashed after its round's eval counts (its numbers
    are real; a re-run that only gated the version it registered measures nothing). Also round → the
    gate's verdict on the version it registered (``vN promoted`` / ``vN blocked``), for the runs that
    gated one.

    Raises:
        LookupError: no finished run of the experiment carries that lineage id.
    """
    runs = tracker.search_runs(f"tags.`lineage.id` = '{lineage_id}'", order_by=["attributes.start_time ASC"],
                               max_results=1000)
    runs = [r for r in runs if r.data.tags.get("alignflow.kind") in ("pipeline", "continue")
            and r.info.status in ("FINISHED", "FAILED")]
    if not any(r.info.status == "FINISHED" for r in runs):
        raise LookupError(f"no finished run of lineage '{lineage_id}' in experiment {tracker.experiment_id} at "
                          f"{tracker.tracking_uri} (its id is the lineage.id tag of its registered versions)")
    rounds: dict[int, dict[str, float]] = {}
    verdicts: dict[int, str] = {}
    for run in runs:
        rows = round_rows(tracker, run)
        if run.data.tags.get("alignflow.kind") == "continue":
            rows.pop(0, None)  # its baseline is the policy in: the previous round's model
        rounds.update(rows)
        tags = run.data.tags
        gated_round = max(rows) if rows else int(tags.get("lineage.round", -1))
        if "promotion.version" in tags and gated_round >= 0:
            verdict = "promoted" if tags.get("promotion.passed") == "True" else "blocked"
            verdicts[gated_round] = f"v{tags['promotion.version']} {verdict}"
    runs = [r for r in runs if r.info.status == "FINISHED"]
    return RunSeries(runs[0].info.run_id, f"lineage {lineage_id}", "FINISHED", rounds, metric), verdicts


def label_of(run) -> str:
    params = run.data.params
    kind = params.get("rounds.kind", "on_policy")
    budget = ", ".join(f"{name.split('.', 1)[1]}={params[name]}" for name in BUDGET_PARAMS.get(kind, [])
                       if name in params)
    scored = scorers_label(params.get("scoring.scorers"))
    label = f"{kind} ({budget})" if budget else kind
    return f"{label} scored by {scored}" if scored else label


def collect(tracker: Tracker, run_ids: list[str] | None = None, metric: str = "eval/accuracy") -> list[RunSeries]:
    """Every pipeline run (``pipeline_runs``) as a series of ``metric`` per round."""
    return [RunSeries(run.info.run_id, label_of(run), run.info.status, round_rows(tracker, run), metric)
            for run in pipeline_runs(tracker, run_ids)]


def comparison_table(series: list[RunSeries]) -> str:
    """One row per (run, round): accuracy, pairs, collection seconds, and for MCTS its node count."""
    metric = series[0].metric if series else "eval/accuracy"
    shown = "held-out acc" if metric == "eval/accuracy" else metric
    lines = [f"| run | round | {shown} | pairs | collection s | search nodes | training s |",
             "|---|---|---|---|---|---|---|"]

    def cell(value, fmt):
        return "–" if value is None else fmt.format(value)

    for s in series:
        for index, metrics in sorted(s.rounds.items()):
            lines.append(f"| {s.label} `{s.run_id[:8]}` | {'baseline' if index == 0 else index} | "
                         f"{cell(metrics.get(s.metric), '{:.3f}')} | "
                         f"{cell(metrics.get('round/n_pairs'), '{:.0f}')} | "
                         f"{cell(s.collection_seconds(index), '{:.0f}')} | "
                         f"{cell(metrics.get('round/search_nodes'), '{:.0f}')} | "
                         f"{cell(metrics.get('time/training_seconds'), '{:.0f}')} |")
    return "\n".join(lines)


def plot_comparison(series: list[RunSeries], out: Path, title: str = "held-out accuracy per round") -> Path:
    """Accuracy against round (left) and against cumulative collection seconds (right), one line
    per run: the second panel is the equal-budget view."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on CI or servers
    import matplotlib.pyplot as plt

    plotted = [s for s in series if s.accuracy()]
    fig, (by_round, by_cost) = plt.subplots(1, 2, figsize=(11, 4.2 + 0.25 * len(plotted)))
    for s in plotted:
        acc = s.accuracy()
        rounds, error = list(acc), list(s.standard_error().values())
        by_round.errorbar(rounds, list(acc.values()), yerr=error, marker="o", capsize=3, label=s.label)
        spent, cumulative = 0.0, []
        for index in rounds:
            spent += s.collection_seconds(index) or 0.0
            cumulative.append(spent)
        by_cost.errorbar(cumulative, list(acc.values()), yerr=error, marker="o", capsize=3, label=s.short_label)
    by_round.set_xlabel("round (0 = after SFT)")
    metric = plotted[0].metric if plotted else "eval/accuracy"
    by_round.set_ylabel("held-out accuracy" if metric == "eval/accuracy" else metric)
    by_round.set_xticks(sorted({i for s in series for i in s.accuracy()}))
    by_cost.set_xlabel("cumulative data-collection seconds (sampling or search)")
    for ax in (by_round, by_cost):
        ax.grid(alpha=0.3)
    by_cost.legend(fontsize=8, loc="lower right")
    handles, labels = by_round.get_legend_handles_labels()  # full labels (budgets) under both panels
    fig.legend(handles, [f"{label} {s.run_id[:8]}" for label, s in zip(labels, plotted, strict=True)],
               loc="lower center", fontsize=7, ncol=1, frameon=False)
    fig.suptitle(f"{title} (bars: ±1 standard error)")
    fig.tight_layout(rect=(0, 0.06 * len(plotted) + 0.02, 1, 1))
    return write_png_atomic(fig, out, dpi=120)
