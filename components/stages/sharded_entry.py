"""What torchrun starts on every rank of a sharded ``sample`` or ``evaluate`` stage.

``python -m torch.distributed.run --nproc-per-node=N -m alignflow.components.stages.sharded_entry
<spec.json>``; the spec is written by ``stages.sharded``. Every rank runs the whole stage with its
generation shared (``sharding.sharded_generation``); rank 0 writes into the stage's directory and the
result file, the others into a scratch directory removed at the end.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch

from alignflow.components.config import PipelineConfig
from alignflow.components.modeling.sharding import sharded_generation
from alignflow.components.platform.atomic import write_text_atomic
from alignflow.components.platform.distributed import init_from_launcher


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m alignflow.components.stages.sharded_entry <spec.json>", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    world = init_from_launcher()
    result_path = Path(spec["result_path"])
    out_dir = Path(spec["out_dir"]) if world.is_main else result_path.parent / f"rank{world.rank}"
    try:
        from alignflow.components.stages.sharded import run_stage

        with sharded_generation(world):
            result = run_stage(spec["stage"], PipelineConfig.model_validate(spec["config"]), spec["args"], out_dir)
        torch.distributed.barrier()  # every rank finished before rank 0 reports success
        if world.is_main:
            write_text_atomic(result_path, result.model_dump_json())
        else:
            shutil.rmtree(out_dir, ignore_errors=True)
    finally:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
