"""Per-round results of a pipeline run, read back from MLflow, as a markdown table."""

from __future__ import annotations

from alignflow.components.platform.tracking import Tracker

COLUMNS = [
    ("eval/accuracy", "held-out acc", "{:.3f}"), ("eval/accuracy_d1", "acc 1-op", "{:.3f}"),
    ("eval/accuracy_d2", "acc 2-op", "{:.3f}"), ("eval/kl_to_reference", "KL to ref", "{:.3f}"),
    ("eval/mean_length", "mean len", "{:.1f}"), ("round/sample_accuracy", "sample acc", "{:.3f}"),
    ("round/n_pairs", "pairs", "{:.0f}"), ("time/sampling_seconds", "sampling s", "{:.0f}"),
    ("time/scoring_seconds", "scoring s", "{:.1f}"), ("time/training_seconds", "training s", "{:.0f}"),
    ("time/eval_seconds", "eval s", "{:.0f}"), ("time/tracking_overhead_seconds", "tracking+orchestration s", "{:.0f}"),
]


def latest_pipeline_run(tracker: Tracker):
    runs = tracker.search_runs("tags.`alignflow.kind` = 'pipeline'", order_by=["attributes.start_time DESC"],
                               max_results=1)
    if not runs:
        raise LookupError(f"no pipeline run in experiment {tracker.experiment_id} at {tracker.tracking_uri}")
    return runs[0]


def round_rows(tracker: Tracker, parent) -> dict[int, dict[str, float]]:
    """Round index → that round run's metrics; 0 is the baseline evaluation after SFT."""
    pid = parent.info.run_id
    children = tracker.search_runs(f"tags.mlflow.parentRunId = '{pid}'", max_results=500,
                                   experiment_ids=[parent.info.experiment_id])
    rows = {0: dict(_baseline_metrics(tracker, children))}
    for run in children:
        if run.data.tags.get("alignflow.kind") == "round":
            rows[int(run.data.tags["round"])] = dict(run.data.metrics)
    return rows


def round_table(tracker: Tracker, run_id: str | None = None) -> str:
    parent = tracker.get_run(run_id) if run_id else latest_pipeline_run(tracker)
    pid = parent.info.run_id
    rows = round_rows(tracker, parent)
    header = "| round | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for index in sorted(rows):
        cells = [fmt.format(rows[index][key]) if key in rows[index] else "–" for key, _, fmt in COLUMNS]
        lines.append(f"| {'baseline (after SFT)' if index == 0 else index} | " + " | ".join(cells) + " |")
    wall = (parent.info.end_time or parent.info.start_time) - parent.info.start_time
    lines.append("")
    lines.append(f"pipeline run `{pid}` ({parent.info.status}), tracked wall time {wall / 60000:.1f} min")
    return "\n".join(lines)


def _baseline_metrics(tracker: Tracker, children) -> dict[str, float]:
    for run in children:
        if run.info.run_name == "evaluate:baseline":
            metrics = dict(run.data.metrics)
            metrics["time/eval_seconds"] = metrics.get("time/eval_seconds", float("nan"))
            return metrics
    return {}
