"""Stages ``sample`` and ``evaluate`` on ``launch.nproc_per_node`` processes of this node (one per GPU):
torchrun starts the ranks, each runs the whole stage inside ``sharding.sharded_generation`` — so every
``generate_completions`` call hands each rank its share of the batches and gives every rank all the
completions back, in prompt order — and rank 0 writes the stage's files and its result. The files are
byte-for-byte those of one process: a batch is computed the same way, with the same seed, on whichever
rank runs it (tests/integration/test_distributed_sampling.py). One process: the stage itself.

Several nodes (``launch.nnodes > 1``) train across nodes, but sample and evaluate on this node's ranks.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from alignflow.components.config import PipelineConfig
from alignflow.components.platform.atomic import write_json_atomic
from alignflow.components.platform.distributed import check_local_ranks, torchrun_command
from alignflow.components.stages.common import elapsed
from alignflow.components.stages.evaluate import evaluate
from alignflow.components.stages.results import Artifact, Checkpoint, EvalResult, SampleResult
from alignflow.components.stages.sample import sample

ENTRY_MODULE = "alignflow.components.stages.sharded_entry"
R = TypeVar("R", bound=BaseModel)


def sample_launched(config: PipelineConfig, policy: Checkpoint, prompts: Artifact, round_index: int,
                    out_dir: Path) -> SampleResult:
    """``sample.sample`` with its generation shared by ``launch.nproc_per_node`` ranks."""
    if config.launch.nproc_per_node == 1:
        return sample(config, policy, prompts, round_index, out_dir)
    args = {"policy": policy.model_dump(), "prompts": prompts.model_dump(), "round_index": round_index}
    return _launch("sample", config, args, Path(out_dir), SampleResult)


def evaluate_launched(config: PipelineConfig, policy: Checkpoint, reference: Checkpoint | None,
                      eval_data: Artifact, out_dir: Path, seed: int) -> EvalResult:
    """``evaluate.evaluate`` with its generation shared by ``launch.nproc_per_node`` ranks."""
    if config.launch.nproc_per_node == 1:
        return evaluate(config, policy, reference, eval_data, out_dir, seed)
    args = {"policy": policy.model_dump(), "reference": reference.model_dump() if reference else None,
            "eval_data": eval_data.model_dump(), "seed": seed}
    return _launch("evaluate", config, args, Path(out_dir), EvalResult)


def run_stage(stage: str, config: PipelineConfig, args: dict[str, Any], out_dir: Path) -> BaseModel:
    """What each rank runs (``sharded_entry``), or one process."""
    if stage == "sample":
        return sample(config, Checkpoint(**args["policy"]), Artifact(**args["prompts"]), int(args["round_index"]),
                      out_dir)
    if stage == "evaluate":
        reference = Checkpoint(**args["reference"]) if args["reference"] else None
        return evaluate(config, Checkpoint(**args["policy"]), reference, Artifact(**args["eval_data"]), out_dir,
                        int(args["seed"]))
    raise ValueError(f"unknown sharded stage {stage!r}")


def _launch(stage: str, config: PipelineConfig, args: dict[str, Any], out_dir: Path, result_type: type[R]) -> R:
    """Run ``stage`` on the ranks and read rank 0's result back (``seconds``: the whole launch).

    Raises:
        RuntimeError: torchrun exited non-zero (its stderr's tail is in the message).
    """
    start = time.perf_counter()
    ranks = config.launch.nproc_per_node
    check_local_ranks(ranks)
    spec_dir = out_dir.with_name(f"{out_dir.name}.launch")
    spec = {"stage": stage, "config": config.model_dump(mode="json"), "args": args, "out_dir": str(out_dir),
            "result_path": str(spec_dir / "result.json")}
    write_json_atomic(spec_dir / "spec.json", spec)
    command = torchrun_command(ENTRY_MODULE, [str(spec_dir / "spec.json")], ranks)
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"torchrun ({' '.join(command)}) failed with exit {completed.returncode}:\n"
                           f"{completed.stderr[-4000:]}")
    result = result_type.model_validate_json((spec_dir / "result.json").read_text())
    return result.model_copy(update={"seconds": elapsed(start), "ranks": ranks})
