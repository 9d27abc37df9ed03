"""``scoring.scorers`` → scorer objects, and completions → ``ScoringItem``s.

Model-backed scorers name their model by directory or ``models:/name@alias``; a registry URI is
resolved by the caller's ``resolve`` (it needs the MLflow registry), so this module stays free of
tracking code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignflow.components.config import PipelineConfig, ScorerSpec
from alignflow.components.data.formats import Example, prompt_messages
from alignflow.components.modeling.checkpoints import read_metadata
from alignflow.components.scoring.base import Scorer, ScoringItem
from alignflow.components.scoring.python import PythonScorer
from alignflow.components.scoring.verifiers import VERIFIERS

# (the model a config names, the config key) → (its local directory, its lineage id)
ResolveModel = Callable[[str, str], tuple[Path, str]]


def local_model(spec: str, key: str) -> tuple[Path, str]:
    """Resolve a model named by a local directory (what runs without a registry).

    Raises:
        ValueError: ``spec`` is a ``models:/`` URI (it needs the registry) or not a directory.
    """
    if spec.startswith("models:/"):
        raise ValueError(f"{key}: '{spec}' names a registered model: resolve it through the MLflow registry")
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ValueError(f"{key}: '{spec}' is not a model directory")
    return path, read_metadata(path).get("model_id", f"local:{path.name}")


def build_scorers(config: PipelineConfig, resolve: ResolveModel = local_model) -> list[Scorer]:
    """One scorer per ``scoring.scorers`` entry, in order (the first is the primary one).

    Raises:
        ValueError: a scorer cannot be built (a user function that does not load, a model that is not
        there), naming ``scoring.scorers[i]``.
    """
    scorers: list[Scorer] = []
    for i, spec in enumerate(config.scoring.scorers):
        key = f"scoring.scorers[{i}] ({spec.id})"
        scorers.append(build_scorer(spec, config, resolve, key))
    return scorers


def build_scorer(spec: ScorerSpec, config: PipelineConfig, resolve: ResolveModel = local_model,
                 key: str = "scorer") -> Scorer:
    """The scorer of one spec (a ``scoring.scorers`` entry, or ``reward.labeller``); ``key`` is its
    config key, for errors.

    Raises:
        ValueError: the scorer cannot be built (see ``build_scorers``); a reward_model scorer without a
        model outside the pipeline (only the pipeline's reward_model stage gives it one).
    """
    if spec.type in VERIFIERS:
        return VERIFIERS[spec.type](spec)
    if spec.type == "python":
        return PythonScorer(spec)
    from alignflow.components.scoring.models import JudgeScorer, RewardModelScorer

    d = config.data

    def messages(item: ScoringItem) -> list[dict[str, Any]]:
        return [dict(m) for m in prompt_messages(item.prompt, item.columns, d.prompt_template, d.system_prompt)]

    if spec.type == "reward_model":
        if spec.model is None:
            raise ValueError(f"{key}.model: unset means the reward model of the pipeline's reward_model stage "
                             f"(reward.enabled), which only `alignflow run` binds; here name a directory or "
                             f"models:/name@alias")
        directory, model_id = resolve(spec.model, f"{key}.model")
        return RewardModelScorer(spec, directory, model_id, messages, config.reward.max_length)
    directory, model_id = resolve(spec.model or config.promotion.judge, f"{key}.model")
    return JudgeScorer(spec, config, directory, model_id, lambda item: "\n".join(m["content"] for m in messages(item)
                                                                                if m["role"] != "system"))


def scoring_item(example: Example, completion: str) -> ScoringItem:
    """What a scorer sees of one completion of ``example``."""
    prompt = [dict(m) for m in example.prompt] if isinstance(example.prompt, list) else example.prompt
    return ScoringItem(prompt_id=example.id, prompt=prompt, completion=completion, columns=example.columns)
