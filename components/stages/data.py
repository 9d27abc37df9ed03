"""Stage ``data``: the task's splits (SFT targets, on-policy prompts, held-out eval), generated
deterministically from the config's seed and written as validated JSONL."""

from __future__ import annotations

import time
from pathlib import Path

from alignflow.components.config import PipelineConfig
from alignflow.components.data.arithmetic import generate_dataset
from alignflow.components.data.io import write_rows
from alignflow.components.stages.common import elapsed
from alignflow.components.stages.results import Artifact, DataResult


def prepare_data(config: PipelineConfig, out_dir: Path) -> DataResult:
    """Write ``sft.jsonl``, ``train.jsonl`` and ``eval.jsonl`` (ProblemRow) under ``out_dir``;
    eval questions never occur in the other splits."""
    start = time.perf_counter()
    d = config.data
    splits = generate_dataset(d.seed, d.n_sft, d.n_train_prompts, d.n_eval, d.difficulties, d.max_operand)
    files = {name: Artifact.of(write_rows(Path(out_dir) / f"{name}.jsonl", rows)) for name, rows in splits.items()}
    return DataResult(sft=files["sft"], train=files["train"], eval=files["eval"],
                      counts={k: len(v) for k, v in splits.items()}, seconds=elapsed(start))
