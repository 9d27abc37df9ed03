"""What torchrun starts on every rank: one share of a round's preference training.

``python -m torch.distributed.run --nproc-per-node=N -m alignflow.components.stages.train_entry
<spec.json>``; the spec is written by ``stages.launch.train_round_launched``. Rank 0 writes the
result file it reads back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from alignflow.components.config import PipelineConfig
from alignflow.components.platform.atomic import write_text_atomic
from alignflow.components.platform.distributed import init_from_launcher
from alignflow.components.stages.results import Artifact, Checkpoint


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m alignflow.components.stages.train_entry <spec.json>", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    world = init_from_launcher()
    try:
        from alignflow.components.stages.train import train_round

        result = train_round(PipelineConfig.model_validate(spec["config"]), Checkpoint(**spec["policy"]),
                             Checkpoint(**spec["reference"]), Artifact(**spec["pairs"]), int(spec["round_index"]),
                             Path(spec["out_dir"]), Path(spec["ref_cache_dir"]))
        torch.distributed.barrier()  # rank 0's checkpoint is complete before anyone reports success
        if world.is_main:
            write_text_atomic(Path(spec["result_path"]), result.model_dump_json())
    finally:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
