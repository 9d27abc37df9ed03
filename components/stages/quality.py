"""Stage ``quality``: the report of one pair file — margins, length bias, duplicates, degenerate
pairs, contamination with held-out prompts — written beside it (``quality.json`` with the pair
file's md5, ``quality.png``), with the ``quality:`` limits it breaks."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from alignflow.components.collection.quality import (
    PairQualityError,
    heldout_questions,
    pair_quality,
    plot_pair_quality,
    quality_failures,
    thresholds_from,
)
from alignflow.components.config import QualityConfig
from alignflow.components.data.io import read_rows
from alignflow.components.data.schemas import PairRow
from alignflow.components.platform.atomic import write_json_atomic
from alignflow.components.stages.common import elapsed
from alignflow.components.stages.results import Artifact, QualityResult


def report_pair_file(pairs: Artifact, heldout: Artifact, limits: QualityConfig, out_dir: Path,
                     title: str) -> QualityResult:
    """``heldout``: the file whose questions (eval problems) or contexts (held-out judge rows) must
    not be trained on. The limits are evaluated, not enforced: the caller logs the report first,
    then raises with ``QualityResult.raise_on_failures``.

    Raises:
        PairQualityError: the pair file is empty (names what to change).
    """
    start = time.perf_counter()
    rows = read_rows(pairs.file, PairRow)
    if not rows:
        raise PairQualityError(f"{pairs.path}: no pairs — nothing to train on (on-policy: every prompt's samples "
                               f"were all correct or all wrong, raise sampling.k or sampling.prompts_per_round; "
                               f"MCTS: no tree ended correct, raise mcts.n_iters)")
    report = pair_quality(rows, heldout_questions(heldout.file))
    out_dir = Path(out_dir)
    json_path = write_json_atomic(out_dir / "quality.json", {"pairs": pairs.ref(), **asdict(report)})
    png_path = plot_pair_quality(rows, out_dir / "quality.png", title)
    failures = quality_failures(report, thresholds_from(limits)) if limits.enabled else []
    return QualityResult(metrics=report.as_metrics(), report_json=Artifact.of(json_path), plot=str(png_path),
                         failures=failures, source=pairs.path, seconds=elapsed(start))
