"""MLflow "models from code": a sequence-scoring reward model — a backbone plus a scalar head.

Self-contained like ``chat_model.py`` (mlflow, torch, transformers, safetensors; never alignflow).
Artifacts inside the logged model:

- ``backbone``: the reward model's base transformer (``AutoModel``: no LM head) and its tokenizer;
- ``head``: ``head.safetensors`` (``weight`` [1, hidden], ``bias`` [1]) and ``head.json``
  (``{"head_type": "scalar", "max_length": N, "append_eos": true}``);
- or ``reward_model``: alignflow's own reward-model directory (``save_reward_model``: the causal LM whose
  base transformer is the backbone, ``reward_head.safetensors``, ``alignflow_reward.json``), as the
  pipeline registers it, with ``max_length`` in the model config.

Input: rows with ``prompt`` (the rendered prompt, as in a pair file) and ``response`` — a DataFrame, a
list of dicts or one dict; served, use ``dataframe_records`` / ``dataframe_split`` / ``inputs`` (an
unwrapped ``{"prompt": …}`` is MLflow's LLM-completions format). Output: one float per row, higher =
preferred. Scores are ``components/modeling/reward_model.py``'s: the prompt and ``response + EOS``
tokenised separately without special tokens, fitted to ``max_length`` (a response that alone fills it
keeps its first half, the prompt loses tokens from the left), left-padded, position ids
``cumsum(mask) - 1``, the head on the last column's hidden state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlflow.models import set_model
from mlflow.pyfunc.model import PythonModel


def rows_of(model_input: Any) -> list[dict[str, Any]]:
    """A DataFrame, a list of row dicts, one row dict or a column-wise dict, as row dicts."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        return model_input.to_dict(orient="records")
    if isinstance(model_input, dict):
        if isinstance(model_input.get("prompt"), list):  # column-wise
            return [dict(zip(model_input, values, strict=True)) for values in zip(*model_input.values(), strict=True)]
        return [model_input]
    return list(model_input)


def fit(prompt_ids: list[int], response_ids: list[int], max_length: int) -> list[int]:
    """prompt + response in ``max_length`` tokens, as ``components.modeling.logprobs._fit`` fits them."""
    if len(response_ids) >= max_length:
        response_ids = response_ids[: max(1, max_length // 2)]
    budget = max_length - len(response_ids)
    return (prompt_ids[-budget:] if budget > 0 else []) + response_ids


class RewardPyfunc(PythonModel):
    """Scalar rewards for (prompt, response) rows."""

    def load_context(self, context: Any) -> None:
        """Load the weights and tokenizer from the model's artifacts."""
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        if "reward_model" in context.artifacts:  # alignflow's reward-model directory, as the pipeline registers it
            root = Path(context.artifacts["reward_model"])
            saved = json.loads((root / "alignflow_reward.json").read_text())
            if saved.get("head") != "scalar":
                raise ValueError(f"only a scalar reward head is served, this model has '{saved.get('head')}': "
                                 f"load it with alignflow (components/modeling/reward_model.py)")
            config = dict(getattr(context, "model_config", None) or {})
            self.meta = {"head_type": "scalar", "max_length": int(config.get("max_length", 1024)), "append_eos": True}
            backbone = str(root)
            weights = {k.removeprefix("head."): v for k, v in load_file(str(root / "reward_head.safetensors")).items()
                       if k.startswith("head.")}
        else:
            head_dir = Path(context.artifacts["head"])
            self.meta = json.loads((head_dir / "head.json").read_text())
            if self.meta.get("head_type") != "scalar":
                raise ValueError(f"only a scalar reward head is served, this model has '{self.meta.get('head_type')}'")
            backbone = context.artifacts["backbone"]
            weights = load_file(str(head_dir / "head.safetensors"))
        self.tokenizer = AutoTokenizer.from_pretrained(backbone)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.backbone = AutoModel.from_pretrained(backbone, dtype=torch.float32).to(self.device).eval()
        self.head = torch.nn.Linear(weights["weight"].shape[1], 1).to(self.device)
        self.head.load_state_dict({k: v.float() for k, v in weights.items()})
        self.head.eval()

    # no annotations: MLflow reads predict's type hints as an input schema (the signature is the schema)
    def predict(self, context, model_input, params=None):
        """One score per (prompt, response) row; see the module docstring."""
        import torch

        rows = rows_of(model_input)
        if not rows:
            return []
        for number, row in enumerate(rows):
            for field in ("prompt", "response"):
                if not isinstance(row.get(field), str):
                    from mlflow.exceptions import MlflowException
                    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

                    raise MlflowException(f"row {number}: '{field}' must be text, got "
                                          f"{type(row.get(field)).__name__} (rows need 'prompt' and 'response')",
                                          error_code=INVALID_PARAMETER_VALUE)
        max_length = int(self.meta["max_length"])
        eos = self.tokenizer.eos_token if self.meta.get("append_eos", True) else ""
        ids = [fit(self.tokenizer(str(r["prompt"]), add_special_tokens=False)["input_ids"],
                   self.tokenizer(str(r["response"]) + eos, add_special_tokens=False)["input_ids"], max_length)
               for r in rows]
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
            mask[i, width - len(x):] = 1
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            hidden = self.backbone(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                   position_ids=position_ids.to(self.device), use_cache=False).last_hidden_state
            scores = self.head(hidden[:, -1, :]).squeeze(-1)
        return [float(s) for s in scores]


set_model(RewardPyfunc())
