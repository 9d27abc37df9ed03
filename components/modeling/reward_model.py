"""Reward models on a causal-LM backbone (ALGORITHMS.md §7): one module, three heads.

- ``scalar``: r = w·h_last — Bradley-Terry, margin BT, scaled BT and Eurus train this.
- ``multi_attribute``: a linear head to Likert attributes (helpfulness, correctness, …), trained
  by regression; ``scalar_head_from_attribute`` starts a BT head from one attribute's row
  (the HelpSteer2 recipe: regression → initialise BT → scaled BT).
- ``gpm``: the General Preference Model. Each response is embedded to an L2-normalised
  v ∈ R^{2k}; the preference score s(i≻j) = Σ_l λ_l(x)(v_i^{2l−1}v_j^{2l} − v_i^{2l}v_j^{2l−1}) is
  skew-symmetric, so it can represent cyclic preferences that no scalar reward can.

Every head reads the backbone's last hidden state at the final token. Batches are left-padded
(``components.logprobs``), so that token is always the last column, and the prompt's last token
sits ``response_length`` columns before it — that is what the GPM gate reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignflow.components.config import ConfigError, RewardHead
from alignflow.components.modeling.logprobs import TokenBatch, position_ids_for

HeadType = RewardHead
HEADS: tuple[str, ...] = get_args(RewardHead)
LIKERT_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


def decoder_layers(causal_lm: PreTrainedModel) -> nn.ModuleList:
    """The causal LM's stack of transformer blocks (``config.num_hidden_layers`` of them), bottom first.

    Raises:
        ValueError: the backbone holds no module list of that length (an architecture this does not know).
    """
    n_layers = int(getattr(causal_lm.config, "num_hidden_layers", 0) or 0)
    for module in causal_lm.base_model.modules():
        if isinstance(module, nn.ModuleList) and n_layers and len(module) == n_layers:
            return module
    raise ConfigError(f"{type(causal_lm).__name__} has no list of its {n_layers} transformer blocks to freeze; "
                      f"set reward.trainable_layers to null (train the whole backbone)")


def freeze_below_top_layers(model: RewardModel, trainable_layers: int) -> int:
    """Train only the top ``trainable_layers`` transformer blocks of ``model``'s backbone, whatever follows
    them (the final norm) and the head; freeze the embeddings and every block below. Autograd then records
    no graph for the frozen bottom, so a backward pass stops at the lowest trainable block: a cheaper step
    (on CPU, what makes a reward model affordable) at the price of capacity (the top blocks adapt; the
    features below are the policy's). A common choice for small reward models (e.g. "last-layers" tuning
    in ULMFiT-style transfer, Howard & Ruder 2018).

    Returns:
        The number of trainable parameters left.

    Raises:
        ConfigError: ``trainable_layers`` < 1 or more than the model has, or the blocks cannot be found (a
            ValueError; not retried).
    """
    layers = decoder_layers(model.causal_lm)
    if not 1 <= trainable_layers <= len(layers):
        raise ConfigError(f"reward.trainable_layers {trainable_layers} is not between 1 and the model's "
                          f"{len(layers)} transformer blocks")
    model.causal_lm.get_input_embeddings().requires_grad_(False)
    for block in list(layers)[:len(layers) - trainable_layers]:
        block.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def gpm_score(v_i: torch.Tensor, v_j: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """s(i≻j) = Σ_l λ_l (v_i[2l]·v_j[2l+1] − v_i[2l+1]·v_j[2l]) (0-based); skew-symmetric in (i, j)."""
    a_i, b_i = v_i[..., 0::2], v_i[..., 1::2]
    a_j, b_j = v_j[..., 0::2], v_j[..., 1::2]
    return (gate * (a_i * b_j - b_i * a_j)).sum(-1)


def gpm_loss(score: torch.Tensor, tau: float) -> torch.Tensor:
    """−log σ(s(c≻r)/τ): the chosen response should be preferred."""
    return -F.logsigmoid(score / tau)


class RewardModel(nn.Module):
    """A backbone (the causal LM's base transformer) plus one reward head."""

    def __init__(self, causal_lm: PreTrainedModel, head: HeadType = "scalar",
                 n_attributes: int = len(LIKERT_ATTRIBUTES),
                 gpm_k: int = 2) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown reward head '{head}'; expected one of {HEADS}")
        self._causal_lm = (causal_lm,)  # for saving only; a tuple keeps it (and its LM head) out of parameters()
        self.backbone = causal_lm.base_model  # a reward model never needs vocab logits
        self.head_type = head
        hidden = causal_lm.config.hidden_size
        dtype = next(self.backbone.parameters()).dtype
        if head == "scalar":
            self.head = nn.Linear(hidden, 1, dtype=dtype)
        elif head == "multi_attribute":
            self.head = nn.Linear(hidden, n_attributes, dtype=dtype)
        else:
            self.head = nn.Linear(hidden, 2 * gpm_k, dtype=dtype)
            self.gate = nn.Linear(hidden, gpm_k, dtype=dtype)
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    @property
    def causal_lm(self) -> PreTrainedModel:
        """The whole causal LM the backbone came from (saved as the reward model's base directory)."""
        return self._causal_lm[0]

    def hidden_states(self, batch: TokenBatch) -> torch.Tensor:
        out = self.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                            position_ids=position_ids_for(batch.attention_mask), use_cache=False)
        return out.last_hidden_state

    def forward(self, batch: TokenBatch) -> dict[str, torch.Tensor]:
        """Head outputs for each row: ``reward`` [B] (scalar), ``attributes`` [B, A], or
        ``embedding`` [B, 2k] and ``gate`` [B, k] (GPM)."""
        hidden = self.hidden_states(batch)
        last = hidden[:, -1, :]
        if self.head_type == "scalar":
            return {"reward": self.head(last).squeeze(-1)}
        if self.head_type == "multi_attribute":
            return {"attributes": self.head(last)}
        prompt_end = hidden.shape[1] - 1 - batch.response_lengths.to(hidden.device)
        prompt_hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), prompt_end]
        return {"embedding": F.normalize(self.head(last), dim=-1),
                "gate": torch.softmax(self.gate(prompt_hidden), dim=-1)}


def scalar_head_from_attribute(model: RewardModel, attribute_index: int = 0) -> RewardModel:
    """Turn a trained multi-attribute model into a scalar one that starts at that attribute's score."""
    if model.head_type != "multi_attribute":
        raise ValueError(f"need a multi_attribute reward model, got '{model.head_type}'")
    source = model.head
    scalar = nn.Linear(source.in_features, 1, dtype=source.weight.dtype, device=source.weight.device)
    with torch.no_grad():
        scalar.weight.copy_(source.weight[attribute_index : attribute_index + 1])
        scalar.bias.copy_(source.bias[attribute_index : attribute_index + 1])
    model.head = scalar
    model.head_type = "scalar"
    return model


REWARD_META_FILE = "alignflow_reward.json"
REWARD_HEAD_FILE = "reward_head.safetensors"


def save_reward_model(model: RewardModel, tokenizer: PreTrainedTokenizerBase, target: Path,
                      metadata: dict[str, Any]) -> Path:
    """A reward model as a directory that loads without its training code: the backbone as a Hugging
    Face model directory (its LM head untouched), the head's weights, and ``alignflow_reward.json``
    (head type, sizes, lineage); ``metadata`` is also the directory's ``alignflow_model.json``, where
    every alignflow model directory keeps its ``model_id`` and lineage (``checkpoints.read_metadata``).
    Written atomically: complete or absent."""
    from safetensors.torch import save_file

    from alignflow.components.modeling.checkpoints import METADATA_FILE
    from alignflow.components.platform.atomic import atomic_directory, write_json_atomic

    with atomic_directory(Path(target)) as tmp:
        model.causal_lm.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        heads = {f"head.{k}": v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
        if model.head_type == "gpm":
            heads.update({f"gate.{k}": v.detach().cpu().contiguous() for k, v in model.gate.state_dict().items()})
        save_file(heads, str(tmp / REWARD_HEAD_FILE))
        write_json_atomic(tmp / REWARD_META_FILE, {"head": model.head_type, "n_outputs": model.head.out_features,
                                                   **metadata})
        write_json_atomic(tmp / METADATA_FILE, {"reward_head": model.head_type, **metadata})
    return Path(target)


def is_reward_model(path: Path) -> bool:
    return (Path(path) / REWARD_META_FILE).exists()


def is_sequence_classifier(path: Path) -> bool:
    """Whether ``path`` is a Hugging Face directory whose ``config.json`` names a
    ``…ForSequenceClassification`` architecture (a trained score head): a causal LM directory is not —
    loaded as a classifier, its score head would be freshly random."""
    config = Path(path) / "config.json"
    if not config.exists():
        return False
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (ValueError, AttributeError):
        return False
    return any(str(a).endswith("ForSequenceClassification") for a in architectures)


def load_reward_model(path: Path) -> tuple[RewardModel, PreTrainedTokenizerBase, dict[str, Any]]:
    """The reward model ``save_reward_model`` wrote: (model in eval mode, its tokenizer, its metadata).

    Raises:
        FileNotFoundError: ``path`` is not a saved alignflow reward model.
    """
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not is_reward_model(path):
        raise FileNotFoundError(f"{path}: no {REWARD_META_FILE} — not an alignflow reward model directory")
    meta = json.loads((path / REWARD_META_FILE).read_text())
    causal_lm = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    head: HeadType = meta["head"]
    n = int(meta["n_outputs"])
    model = RewardModel(causal_lm, head=head, n_attributes=n, gpm_k=max(1, n // 2))
    weights = load_file(str(path / REWARD_HEAD_FILE))
    model.head.load_state_dict({k.removeprefix("head."): v for k, v in weights.items() if k.startswith("head.")})
    if head == "gpm":
        model.gate.load_state_dict({k.removeprefix("gate."): v for k, v in weights.items() if k.startswith("gate.")})
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model.eval(), tokenizer, meta
