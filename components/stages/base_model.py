"""Stage ``base``: the directory holding the base weights every checkpoint of a run builds on."""

from __future__ import annotations

import time

from alignflow.components.config import PipelineConfig
from alignflow.components.modeling.checkpoints import materialize_base, read_metadata
from alignflow.components.stages.common import elapsed
from alignflow.components.stages.results import BaseModelResult, Checkpoint


def prepare_base(config: PipelineConfig) -> BaseModelResult:
    """De-quantize the embedded GGUF once (cached), save the tiny model, or check a local directory."""
    start = time.perf_counter()
    base = materialize_base(config.model, config.seed, config.state_dir)
    model_id = read_metadata(base).get("model_id", f"local:{base}")
    return BaseModelResult(checkpoint=Checkpoint(path=str(base), model_id=model_id), seconds=elapsed(start))
