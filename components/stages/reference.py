"""Reference log-probs of a pair file: computed once per (reference model, pair file content,
scoring options) and cached on disk, with a lineage record beside the tensor."""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import torch

from alignflow.components.config import PreferenceConfig
from alignflow.components.modeling.checkpoints import load_checkpoint, read_metadata
from alignflow.components.platform.atomic import write_bytes_atomic, write_json_atomic
from alignflow.components.platform.codeversion import code_version
from alignflow.components.platform.lineage import lineage_record
from alignflow.components.platform.progress import progress_bar
from alignflow.components.stages.common import elapsed
from alignflow.components.stages.results import Artifact, Checkpoint, ReferenceLogprobs
from alignflow.components.trainers.preference import PreferenceExample, reference_logprobs


def reference_cache_path(cache_dir: Path, reference_id: str, pairs_md5: str, settings: PreferenceConfig) -> Path:
    """The cache file of (reference model, pair file content, scoring options, the code that scores)."""
    normalized = settings.loss_type == "ipo" and settings.length_normalize
    key = f"{reference_id}|{pairs_md5}|{normalized}|{settings.max_length}|{code_version(__name__)}"
    return Path(cache_dir) / f"ref-logps-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def cached_reference_logprobs(reference: Checkpoint, examples: list[PreferenceExample], pairs: Artifact,
                              settings: PreferenceConfig, cache_dir: Path, config_hash: str, seed: int,
                              label: str) -> tuple[torch.Tensor, ReferenceLogprobs]:
    """Reference log-probs of ``examples`` ([N, 2]: chosen, rejected): from the cache, or computed
    with the reference model and cached (lineage first, tensor last: an entry exists only once
    both are complete)."""
    start = time.perf_counter()
    reference_id = read_metadata(reference.dir).get("model_id", reference.model_id)
    cache_file = reference_cache_path(cache_dir, reference_id, pairs.md5, settings)
    lineage_file = cache_file.with_suffix(".json")
    if cache_file.exists():
        return torch.load(cache_file), ReferenceLogprobs(cache_file=str(cache_file), lineage_file=str(lineage_file),
                                                         cached=True, seconds=elapsed(start))
    model = load_checkpoint(reference.dir, merge=True)
    with progress_bar(f"{label}: reference log-probs", len(examples)) as advance:
        logps = reference_logprobs(model, examples, settings, on_batch=advance)
    del model
    buffer = io.BytesIO()
    torch.save(logps, buffer)
    write_json_atomic(lineage_file, lineage_record(
        "reference-logprobs", config_hash, seed, parent_model=reference_id, inputs={"pairs": pairs.ref()},
        length_normalized=settings.loss_type == "ipo" and settings.length_normalize,
        max_length=settings.max_length, shape=list(logps.shape)))
    write_bytes_atomic(cache_file, buffer.getvalue())
    return logps, ReferenceLogprobs(cache_file=str(cache_file), lineage_file=str(lineage_file), cached=False,
                                    seconds=elapsed(start))
