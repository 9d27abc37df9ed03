"""Reward hacking measured: the metric the rounds optimize (the proxy — a reward model's mean score on
held-out prompts) against a ground truth they never see (the truth — a verifier's pass rate on the
same prompts), per round, as version tags for the ``proxy_gap`` gate (``gates.py``) and as a plot.

The two are ``promotion.proxy_metric`` / ``promotion.truth_metric`` when set; otherwise, when the
scorers hold a reward model and a verifier (the verifier may have weight 0: eval-only, it never
moves the combined score the pairs are built from), the first of each — ``eval/<id>/mean`` of the
reward model and ``eval/<id>/pass_rate`` of the verifier — for the plot (the gate needs them set).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from alignflow.components.config import PipelineConfig
from alignflow.components.platform.figures import write_png_atomic


def proxy_and_truth(config: PipelineConfig, eval_metrics: Mapping[str, float] | None = None) -> tuple[str, str] | None:
    """(proxy metric, truth metric) of this pipeline (see the module docstring), or None.

    ``eval_metrics``: an eval's metrics (the baseline's) to check the names against.

    Raises:
        ValueError: a configured name is not among ``eval_metrics`` (naming the key and what exists).
    """
    from alignflow.components.scoring.verifiers import VERIFIERS

    p = config.promotion
    if p.proxy_metric is not None and p.truth_metric is not None:
        if eval_metrics is not None:
            for key, name in (("proxy_metric", p.proxy_metric), ("truth_metric", p.truth_metric)):
                if name not in eval_metrics:
                    raise ValueError(f"promotion.{key} '{name}' is not an eval metric of this pipeline (it has: "
                                     f"{', '.join(sorted(k for k in eval_metrics if k.startswith('eval/')))})")
        return p.proxy_metric, p.truth_metric
    reward_model = next((s for s in config.scoring.scorers if s.type == "reward_model"), None)
    verifier = next((s for s in config.scoring.scorers if s.type in VERIFIERS), None)
    if reward_model is None or verifier is None:
        return None
    return f"eval/{reward_model.id}/mean", f"eval/{verifier.id}/pass_rate"


def proxy_truth_tags(names: tuple[str, str] | None, final: Mapping[str, float], baseline: Mapping[str, float]
                     ) -> dict[str, str | float]:
    """The registered policy's tags the ``proxy_gap`` gate reads: both metrics' names and values after
    the last round and before the first (``baseline_*``); empty when there is no such pair."""
    if names is None:
        return {}
    proxy, truth = names
    return {"proxy_metric_name": proxy, "proxy_metric": final.get(proxy, math.nan),
            "truth_metric_name": truth, "truth_metric": final.get(truth, math.nan),
            "baseline_proxy_metric": baseline.get(proxy, math.nan),
            "baseline_truth_metric": baseline.get(truth, math.nan)}


def plot_proxy_truth(evals: Mapping[int, Mapping[str, float]], proxy: str, truth: str, out: Path,
                     title: str = "reward hacking: proxy vs truth on held-out prompts") -> Path:
    """Both metrics per round (round 0: after SFT), on two y axes — a proxy that climbs while the truth
    stays or falls is the picture of reward hacking. Written atomically; returns ``out``.

    Raises:
        ValueError: no round has both metrics.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on CI or servers
    import matplotlib.pyplot as plt

    rounds = sorted(r for r, m in evals.items() if proxy in m and truth in m)
    if not rounds:
        raise ValueError(f"no round logged both {proxy} and {truth}")
    fig, left = plt.subplots(figsize=(7, 4.2))
    right = left.twinx()
    left.plot(rounds, [evals[r][proxy] for r in rounds], marker="o", color="tab:orange", label=f"proxy: {proxy}")
    right.plot(rounds, [evals[r][truth] for r in rounds], marker="s", color="tab:blue", label=f"truth: {truth}")
    left.set_xlabel("round (0 = after SFT)")
    left.set_xticks(rounds)
    left.set_ylabel(proxy, color="tab:orange")
    right.set_ylabel(truth, color="tab:blue")
    left.grid(alpha=0.3)
    lines = left.get_lines() + right.get_lines()
    left.legend(lines, [str(line.get_label()) for line in lines], fontsize=8, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    return write_png_atomic(fig, out)
