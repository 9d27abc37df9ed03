"""MLflow "models from code": a chat pyfunc over a Hugging Face causal-LM directory.

MLflow copies this file into the logged model and executes it at load time, so it is self-contained:
it imports only mlflow, torch and transformers (peft for an adapter version) — never alignflow — and
reads the weights from ``context.artifacts["hf_model"]``, a folder inside the logged model:

- full weights (the default format): loaded as they are, in float32;
- a LoRA adapter (format ``adapter``): its ``alignflow_model.json`` names the base by ``models:/`` URI and
  the sha256 of its weights; the base is downloaded from the registry the process is pointed at
  (``MLFLOW_TRACKING_URI``), its hash checked, and the adapter folded in in float32 — exactly as the
  pipeline's evaluation loads a checkpoint.

Request (``pyfunc.predict`` or ``POST /invocations``)::

    {"messages": [{"role": "user", "content": "..."}, ...]}
    params (optional): max_tokens (int), temperature (float, 0 = greedy), top_p (float)

Response (OpenAI ``chat.completion``-like)::

    {"object": "chat.completion", "model": ..., "choices": [{"index": 0, "message": {"role": "assistant",
     "content": "..."}, "finish_reason": "stop" | "length"}], "usage": {...}}

Decoding is the pipeline's (``components/modeling/generation.py``): the chat template with its generation
prompt, no special tokens added, generation up to the first EOS, decoded without special tokens and
stripped — so a greedy answer here is the pipeline's evaluation answer for the same prompt.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mlflow.models import set_model
from mlflow.pyfunc.model import PythonModel

DEFAULT_PARAMS: dict[str, Any] = {"max_tokens": 64, "temperature": 0.0, "top_p": 1.0}
METADATA_FILE = "alignflow_model.json"


def weights_sha256(directory: Path) -> str:
    """sha256 over a model directory's ``*.safetensors`` files, by name then content (the identity
    alignflow records for a base; ``components/modeling/export.py`` computes the same)."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).glob("*.safetensors")):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def requests_of(model_input: Any) -> list[list[dict[str, str]]]:
    """Whatever pyfunc's schema enforcement hands over, as a list of message lists: a dict
    ``{"messages": [...]}`` (direct predict), a DataFrame with a ``messages`` column (served payloads
    become rows), or a list of such dicts."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        rows = model_input.to_dict(orient="records")
    elif isinstance(model_input, dict):
        rows = [model_input]
    elif isinstance(model_input, list):
        rows = model_input
    else:
        raise TypeError(f"expected {{'messages': [...]}}, got {type(model_input).__name__}")
    out = []
    for row in rows:
        if "messages" not in row:
            raise ValueError(f"a chat request needs 'messages', got keys {sorted(row)}")
        messages = row["messages"]
        if hasattr(messages, "tolist"):  # a numpy array of dicts from a DataFrame cell
            messages = messages.tolist()
        out.append([{"role": str(m["role"]), "content": str(m["content"])} for m in messages])
    return out


def _download_base(uri: str, into: Path) -> Path:
    """The base's Hugging Face directory, downloaded into ``into`` from the registry ``MLFLOW_TRACKING_URI``
    names."""
    from mlflow.artifacts import download_artifacts

    root = Path(download_artifacts(uri, dst_path=str(into)))
    found = [p.parent for p in root.rglob("MLmodel")]
    hf = [m / "artifacts" / "hf_model" for m in found if (m / "artifacts" / "hf_model").is_dir()]
    if not hf:
        raise RuntimeError(f"base {uri}: downloaded, but it holds no artifacts/hf_model (not an alignflow model)")
    return hf[0]


def load_causal_lm(path: Path) -> Any:
    """The float32 model in ``path``: full weights, or a LoRA adapter folded into the base its metadata
    names (by ``models:/`` URI, checked against the recorded sha256 of the base's weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "adapter_config.json").exists():
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    meta = json.loads((path / METADATA_FILE).read_text()) if (path / METADATA_FILE).exists() else {}
    base = meta.get("base") or {}
    if not base.get("uri"):
        raise RuntimeError(f"{path}: a LoRA adapter whose {METADATA_FILE} names no base models:/ URI")
    from peft import PeftModel

    with tempfile.TemporaryDirectory(prefix="alignflow-base-") as tmp:  # in memory once loaded: not kept
        base_dir = _download_base(base["uri"], Path(tmp))
        got = weights_sha256(base_dir)
        if base.get("sha256") and got != base["sha256"]:
            raise RuntimeError(f"base {base['uri']}: its weights hash to {got}, the adapter was trained on "
                               f"{base['sha256']} — the registry's base is not the one this adapter needs")
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    return PeftModel.from_pretrained(model, str(path)).merge_and_unload()


def bad_request(message: str) -> Exception:
    """An error MLflow's scoring server answers with HTTP 400 (INVALID_PARAMETER_VALUE), not 500."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def sampling_params(params: dict[str, Any]) -> tuple[int, float, float]:
    """(max_tokens, temperature, top_p) of a request, checked.

    Raises:
        MlflowException (INVALID_PARAMETER_VALUE): max_tokens not a positive integer, temperature
            negative, top_p outside (0, 1].
    """
    try:
        max_tokens, temperature, top_p = (float(params[k]) for k in ("max_tokens", "temperature", "top_p"))
    except (TypeError, ValueError):
        raise bad_request(f"max_tokens, temperature and top_p are numbers; got {params}") from None
    if max_tokens != int(max_tokens) or max_tokens < 1:
        raise bad_request(f"max_tokens must be a positive integer, got {params['max_tokens']!r}")
    if not temperature >= 0:
        raise bad_request(f"temperature must be >= 0 (0 = greedy), got {params['temperature']!r}")
    if not 0 < top_p <= 1:
        raise bad_request(f"top_p must be in (0, 1], got {params['top_p']!r}")
    return int(max_tokens), temperature, top_p


class HFChatModel(PythonModel):
    """Chat completions from a causal LM, decoded as alignflow's evaluation decodes."""

    def load_context(self, context: Any) -> None:
        """Load the weights and tokenizer from the model's artifacts."""
        import torch
        from transformers import AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is inside the model: never reach a hub
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = Path(context.artifacts["hf_model"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        # float32 whatever the storage dtype: the pipeline evaluates in float32
        self.model = load_causal_lm(path).to(self.device).eval()
        self.model_name = (getattr(context, "model_config", None) or {}).get("model_name", "alignflow")

    # no annotations: MLflow reads predict's type hints as an input schema (the signature is the schema)
    def predict(self, context, model_input, params=None):
        """One ``chat.completion`` per request (a list for several); see the module docstring."""
        import torch

        max_tokens, temperature, top_p = sampling_params({**DEFAULT_PARAMS, **(params or {})})
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        # the model's context: a request may not ask for more than its prompt leaves of it
        context_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        answers = []
        for messages in requests_of(model_input):
            prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            encoded = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
            room = context_length - int(encoded["input_ids"].shape[1])
            if context_length and max_tokens > room:
                raise bad_request(f"max_tokens {max_tokens} does not fit: the model's context is {context_length} "
                                  f"tokens and the prompt takes {context_length - room}, leaving {max(room, 0)}")
            sampling: dict[str, Any] = ({"do_sample": True, "temperature": temperature, "top_p": top_p}
                                        if temperature > 0 else {"do_sample": False})
            with torch.inference_mode():
                output = self.model.generate(**encoded, max_new_tokens=max_tokens, pad_token_id=pad,
                                             eos_token_id=eos, **sampling)
            generated = output[0, encoded["input_ids"].shape[1]:].tolist()
            finished = eos in generated
            tokens = generated[:generated.index(eos)] if finished else generated
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            n_prompt = int(encoded["input_ids"].shape[1])
            answers.append({
                "object": "chat.completion", "model": self.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop" if finished else "length"}],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(generated),
                          "total_tokens": n_prompt + len(generated)},
            })
        return answers[0] if len(answers) == 1 else answers


set_model(HFChatModel())
