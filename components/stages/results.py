"""What a stage returns: frozen, typed records instead of string-keyed dicts.

A file a stage wrote travels as an ``Artifact`` (its path and its content md5, which is also its
DVC hash), a model as a ``Checkpoint`` (its directory and its lineage id), so downstream stages,
cache keys and lineage all see content identity, and flows read attributes the type checker knows.
Pydantic models (not dataclasses) because Prefect hashes task inputs and persists results through
their JSON form, and a round's manifest is read back from ``round.json`` with validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from alignflow.components.platform.versioning import content_md5, find_repo_root


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Artifact(Record):
    """A file by path and content: ``md5`` is what DVC records for it."""

    path: str
    md5: str

    @classmethod
    def of(cls, path: Path | str) -> Artifact:
        """The artifact of a file that exists now (its md5 is read from disk).

        Raises:
            FileNotFoundError: ``path`` does not exist.
        """
        return cls(path=str(path), md5=content_md5(Path(path)))

    @property
    def file(self) -> Path:
        return Path(self.path)

    def ref(self) -> dict[str, str]:
        """How lineage names this file: by content, and by its path inside the DVC repository (never
        the producing machine's absolute path)."""
        root = find_repo_root(self.file.parent)
        path = self.file.resolve()
        return {"md5": self.md5, "path": path.relative_to(root).as_posix() if root else path.name}


class Checkpoint(Record):
    """A model directory (full weights or a LoRA adapter) and its lineage id."""

    path: str
    model_id: str

    @property
    def dir(self) -> Path:
        return Path(self.path)


class StageResult(Record):
    """Every stage reports how long its own work took (cache hits report nothing: they did none)."""

    seconds: float

    def artifacts(self) -> list[Artifact]:
        """Every file this stage wrote, for DVC: the Artifact fields, in declaration order."""
        found: list[Artifact] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, Artifact):
                found.append(value)
            elif isinstance(value, StageResult):
                found.extend(value.artifacts())
        return found


class DataResult(StageResult):
    """Each role's rows (``data/formats.Example`` JSONL) from the configured sources: demonstrations
    (``sft``), on-policy prompts, preference pairs trained on directly, held-out eval prompts. A role
    with no source is None."""

    sft: Artifact | None
    prompts: Artifact | None
    preferences: Artifact | None
    eval: Artifact
    counts: dict[str, int]
    profiles: dict[str, dict[str, Any]] = {}
    contaminated: list[str] = []  # prompt ids found in a training role and in eval

    def role(self, name: str) -> Artifact:
        """The role's file.

        Raises:
            ValueError: the role has no rows (names the config key to set).
        """
        artifact = getattr(self, name)
        if artifact is None:
            raise ValueError(f"no {name} rows: set data.sources.{name}")
        return artifact


class BaseModelResult(StageResult):
    checkpoint: Checkpoint


class RowFit(Record):
    """How a training file's rows fit its ``max_length`` (``components/modeling/logprobs.py``): rows
    seen, truncated (response cut from the right) and dropped (the prompt left no room)."""

    rows: int = 0
    truncated: int = 0
    dropped: int = 0

    def metrics(self, prefix: str) -> dict[str, float]:
        """``{prefix}/truncated_rows``, ``{prefix}/truncated_rate`` (truncated / rows), ``{prefix}/dropped_rows``."""
        return {f"{prefix}/truncated_rows": float(self.truncated),
                f"{prefix}/truncated_rate": self.truncated / self.rows if self.rows else 0.0,
                f"{prefix}/dropped_rows": float(self.dropped)}


class SFTResult(StageResult):
    checkpoint: Checkpoint
    steps: int
    first_loss: float
    final_loss: float
    resumed_from_step: int | None = None
    fit: RowFit = RowFit()


class EvalResult(StageResult):
    """Held-out metrics (``eval/…``), the predictions behind them and the metrics file."""

    metrics: dict[str, float]
    predictions: Artifact
    metrics_file: Artifact
    model_id: str
    stall_seconds: float = 0.0  # the static sampler building graphs (components/modeling/sampler.py)
    ranks: int = 1  # processes the generation was shared by (launch.nproc_per_node)
    scorer_models: dict[str, str] = {}  # id → the model id of a model-backed scorer (reward model, judge)


class SampleResult(StageResult):
    samples: Artifact
    n_samples: int
    n_prompts: int
    generated_tokens: int
    policy_model_id: str
    seed: int
    stall_seconds: float = 0.0  # the static sampler building graphs (components/modeling/sampler.py)
    ranks: int = 1  # processes the sampling was shared by (launch.nproc_per_node)


class ScoreResult(StageResult):
    scored: Artifact
    sample_accuracy: float  # the primary scorer's pass rate over the samples it applies to
    prompts_with_a_correct_sample: int
    scorers: dict[str, str]  # id → version: what scored the round
    score_means: dict[str, float]
    cache_hits: int = 0
    scorer_seconds: dict[str, float] = {}  # id → its wall seconds (a reward model's forwards are its own entry)
    scorer_models: dict[str, str] = {}  # id → the model id of a model-backed scorer (reward model, judge)

    def time_split(self) -> dict[str, float]:
        """The round's time entries of this scoring: ``reward_model_scoring`` (the reward models' batched
        forwards, when any scored) and ``scoring`` (everything else)."""
        reward_models = sum(seconds for scorer, seconds in self.scorer_seconds.items()
                            if self.scorers.get(scorer, "").startswith("reward_model@"))
        if not reward_models:
            return {"scoring": self.seconds}
        return {"scoring": max(0.0, self.seconds - reward_models), "reward_model_scoring": reward_models}


class PairsResult(StageResult):
    """A pair file ready for the quality report and the trainer."""

    pairs: Artifact
    n_pairs: int


class MCTSResult(PairsResult):
    trees: Artifact
    tree_html: str
    n_trees: int
    trees_kept: int
    n_nodes: int
    final_accuracy: float
    nodes_per_second: float
    search_seconds: float
    tokens_encoded: int
    policy_model_id: str
    seed: int


class StrengthResult(PairsResult):
    n_flipped: int
    n_smoothed: int
    strength_mean: float
    strength_std: float
    ensemble_agreement: float
    fit: RowFit = RowFit()  # the pairs against reward.max_length (a dropped pair gets no strength)


class QualityResult(StageResult):
    """A pair file's quality measures and the ``quality:`` limits it breaks (empty: none)."""

    metrics: dict[str, float]
    report_json: Artifact
    plot: str
    failures: list[str] = []
    source: str = ""

    def table(self) -> dict[str, list]:
        """measure/value columns for MLflow's table view."""
        return {"measure": [k.removeprefix("quality/") for k in self.metrics], "value": list(self.metrics.values())}

    def raise_on_failures(self) -> None:
        """Raises:
            PairQualityError: naming the pair file and every broken limit."""
        from alignflow.components.collection.quality import raise_on_failures

        raise_on_failures(self.failures, self.source)


class ReferenceLogprobs(Record):
    """The reference log-probs a training used: where they are cached, and whether this run computed them."""

    cache_file: str
    lineage_file: str
    cached: bool
    seconds: float


class PreferenceTrainResult(StageResult):
    checkpoint: Checkpoint
    n_pairs: int
    steps: int
    final_metrics: dict[str, float]
    history: list[dict[str, float]]
    resumed_from_step: int | None = None
    reference: ReferenceLogprobs
    world_size: int = 1
    fit: RowFit = RowFit()  # the pairs against preference.max_length, as both the reference and the policy saw them


class JudgeDataResult(StageResult):
    train: Artifact
    heldout: Artifact
    counts: dict[str, int]
    policy_model_id: str | None


class JudgmentsResult(StageResult):
    judgments: Artifact
    judge_model_id: str
    template_hash: str
    seed: int
    n_inputs: int
    n_judgments: int
    malformed_rate: float
    cache_hits: int


class JudgePairsResult(PairsResult):
    n_inputs: int


class JudgeTrainResult(StageResult):
    checkpoint: Checkpoint
    n_pairs: int
    steps: int
    final_metrics: dict[str, float]
    reference_model_id: str
    fit: RowFit = RowFit()


class PoolSampleResult(StageResult):
    completions: Artifact
    n_completions: int
    n_prompts: int
    generated_tokens: int
    seed: int


class RatingsResult(StageResult):
    ratings: Artifact
    judge_model_id: str
    template_hash: str
    n_judgments: int
    malformed_rate: float
    cache_hits: int


class SynthesisPairsResult(PairsResult):
    n_prompts: int
    prompts_with_a_pair: int
    n_with_rationale: int | None = None


class ResolvedModel(Record):
    """A model named in the config (a directory or ``models:/name@alias``) as the checkpoint it resolved to."""

    checkpoint: Checkpoint
    source: str  # what the config said, and the registry version it meant
    version: str | None = None  # the registry version number, for a models:/ URI


class RewardPairsResult(StageResult):
    """The reward model's training and held-out pairs (PairRow JSONL, split by a stable prompt hash),
    what they came from, and the labelled samples they were built from (None: a preferences source)."""

    train: Artifact
    heldout: Artifact
    samples: Artifact | None = None
    n_train: int
    n_heldout: int
    source: str  # "preferences" or "labeller:<scorer id>"
    labeller: dict[str, str] = {}  # the labeller's id and version
    policy_model_id: str


class RewardModelResult(StageResult):
    """A trained reward model, its held-out metrics (``reward/…``) and per-step history."""

    checkpoint: Checkpoint
    metrics: dict[str, float]
    steps: int
    history: list[dict[str, float]]
    calibration_plot: str
    metrics_file: Artifact
    fit: RowFit = RowFit()


class RewardEvalResult(StageResult):
    """A saved reward model's ``reward/…`` metrics on held-out pairs."""

    model_id: str
    metrics: dict[str, float]
    metrics_file: Artifact
    calibration_plot: str


class PositionBiasResult(StageResult):
    flip_rate: float
    first_position_rate: float
    probed_pairs: int


class RoundResult(Record):
    """A finished round, as ``round.json`` keeps it: what went in (``key``), what came out."""

    round: int
    kind: str
    key: str  # hash of the policy and reference in, the data and the code of the round's stages
    policy: Checkpoint
    metrics: dict[str, float]
    pairs: Artifact
    training_pairs: Artifact
    quality: QualityResult
    collected: dict[str, Artifact] = {}  # samples, trees or ratings, by name
    judge: str | None = None
    code_versions: dict[str, str] = {}

    def metric(self, name: str) -> float:
        """Raises KeyError naming the metrics that exist."""
        if name not in self.metrics:
            raise KeyError(f"round {self.round} logged no metric '{name}' (it has: {', '.join(sorted(self.metrics))})")
        return self.metrics[name]


def jsonable(record: BaseModel) -> dict[str, Any]:
    return record.model_dump(mode="json")
