"""What several stages share, written once: timing, the trainable policy, checkpoint metadata,
resume states, a round's prompts, progress for trainings, and model ids that carry the code
version of the stage that produced them."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from alignflow.components.config import PipelineConfig
from alignflow.components.data.formats import Example, render_prompt
from alignflow.components.data.io import read_rows
from alignflow.components.modeling.checkpoints import (
    LoadedModel,
    attach_lora,
    is_adapter,
    load_checkpoint,
    read_metadata,
)
from alignflow.components.modeling.logprobs import FitStats
from alignflow.components.platform.codeversion import code_version
from alignflow.components.platform.lineage import lineage_record
from alignflow.components.platform.progress import progress_bar
from alignflow.components.scoring.base import ScoreCache, Scorer
from alignflow.components.stages.results import Artifact, RowFit
from alignflow.components.trainers.resume import TrainingCheckpointer

StepHook = Callable[[int, dict[str, float]], None]
T = TypeVar("T")
logger = logging.getLogger("alignflow.stages")


def elapsed(start: float) -> float:
    """Seconds since ``start`` (a ``time.perf_counter()`` reading), to the millisecond."""
    return round(time.perf_counter() - start, 3)


def stage_model_id(label: str, config_hash: str, stage_module: str) -> str:
    """``<label>@<config hash>.<code version of the producing stage>``: a checkpoint made by other
    code is another model, so everything keyed by model id (evaluations, reference log-probs,
    judgments) is recomputed for it."""
    return f"{label}@{config_hash}.{code_version(stage_module)}"


def trainable_policy(config: PipelineConfig, policy_dir: Path, lora_seed: int | None = None) -> LoadedModel:
    """Continue the policy's adapter if it has one; otherwise start a fresh LoRA (seeded with
    ``lora_seed``, default the config's seed) or train every weight (``lora.enabled: false``)."""
    if is_adapter(policy_dir):
        return load_checkpoint(policy_dir, trainable=True)
    loaded = load_checkpoint(policy_dir, trainable=not config.lora.enabled)
    if not config.lora.enabled:
        return loaded
    return attach_lora(loaded, config.lora, seed=config.seed if lora_seed is None else lora_seed)


def base_path_of(policy_dir: Path) -> str:
    """The base weights an adapter builds on (a full checkpoint is its own base)."""
    return read_metadata(policy_dir).get("base_path") or str(policy_dir)


def checkpoint_metadata(config_hash: str, model_id: str, parent: LoadedModel | str, produced_by: str,
                        base_path: str, inputs: dict[str, Any], seed: int, **extra: Any) -> dict[str, Any]:
    """What a saved checkpoint records about itself (``alignflow_model.json``)."""
    parent_id = parent.model_id if isinstance(parent, LoadedModel) else parent
    return {"model_id": model_id, "base_path": base_path, "parent": parent_id, **extra,
            **lineage_record(produced_by, config_hash, seed, parent_id, inputs)}


def resume_checkpointer(config: PipelineConfig, out_dir: Path, *inputs: str) -> TrainingCheckpointer:
    """The resume state of the training that writes ``out_dir`` lives beside it (not inside: the
    checkpoint directory only ever holds a finished checkpoint), fingerprinted by its inputs."""
    fingerprint = hashlib.sha256("\n".join([config.content_hash(), *inputs]).encode()).hexdigest()
    return TrainingCheckpointer(Path(out_dir).with_name(f"{Path(out_dir).name}.resume-state"),
                                config.resume_every_steps, fingerprint)


def round_prompts(train: list[T], round_index: int, per_round: int) -> list[T]:
    """Round r takes the next ``per_round`` training prompts, wrapping around: fresh prompts each round."""
    start = ((round_index - 1) * per_round) % len(train)
    return [train[(start + i) % len(train)] for i in range(min(per_round, len(train)))]


@contextlib.contextmanager
def training_progress(description: str, total_steps: int, on_step: StepHook | None = None,
                      metric_prefix: str = "") -> Iterator[StepHook]:
    """A progress bar over a training's optimizer steps, yielding the trainer's ``on_step`` hook:
    it advances the bar and forwards (step, metrics) — names prefixed — to ``on_step``."""
    with progress_bar(description, total_steps) as advance:
        def hook(step: int, metrics: dict[str, float]) -> None:
            advance(1)
            if on_step:
                on_step(step, {f"{metric_prefix}{k}": v for k, v in metrics.items()})
        yield hook


def read_examples(file: Artifact) -> list[Example]:
    """The canonical rows (``data/formats.Example``) the data stage wrote for one role."""
    return read_rows(file.file, Example)


def render(config: PipelineConfig, tokenizer: Any, example: Example) -> str:
    """``example``'s prompt as the model sees it (``data.prompt_template``, ``data.system_prompt``)."""
    return render_prompt(example, tokenizer, config.data.prompt_template, config.data.system_prompt)


def open_scorers(config: PipelineConfig) -> tuple[list[Scorer], ScoreCache | None]:
    """The configured scorers (models:/ URIs resolved through the registry) and the score cache."""
    from alignflow.components.scoring.build import build_scorers
    from alignflow.components.stages.resolve import model_resolver

    cache = ScoreCache(Path(config.state_dir) / "scores.sqlite") if config.scoring.cache else None
    return build_scorers(config, model_resolver(config)), cache


def report_fit(stats: FitStats | RowFit, data_file: str | Path, section: str, max_length: int,
               max_rate: float) -> RowFit:
    """The fit counts of a training file as a stage records them, with a ``logging.warning`` naming the
    file when any row was dropped or more than ``max_rate`` of its rows were truncated.

    Args:
        stats: the trainer's counts (``FitStats``, or a ``RowFit`` a torchrun rank sent back).
        data_file: the file the rows came from (named in the warning).
        section: the config section whose ``max_length`` applies (``sft``, ``preference``, ``reward``,
            ``judge.sft``...), named with the keys to change.
        max_length: that section's max_length.
        max_rate: that section's ``max_truncation_rate_warning``.
    """
    fit = RowFit(rows=stats.rows, truncated=stats.truncated, dropped=stats.dropped)
    rate = stats.truncated / stats.rows if stats.rows else 0.0
    if stats.dropped or rate > max_rate:
        logger.warning("%s: %d of %d rows had a response cut to %s.max_length=%d (%.1f%%, warning above %.1f%%) and "
                       "%d were dropped because their prompt left no room: raise %s.max_length, or shorten the "
                       "prompts (%s.max_truncation_rate_warning sets the warning threshold)",
                       data_file, stats.truncated, stats.rows, section, max_length, 100 * rate,
                       100 * max_rate, stats.dropped, section, section)
    return fit
