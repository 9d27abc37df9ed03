"""Portable model directories: what a registry version holds and what ``alignflow export`` writes.

A checkpoint on the producing machine names its base by a local path (``base_path``) and may be a
LoRA adapter. A portable directory names nothing on that machine: it is a plain Hugging Face model
(weights, tokenizer with its chat template, generation config) — full weights, or an adapter whose
base is named by ``models:/`` URI and the sha256 of its weights — and its ``alignflow_model.json``
keeps only identities (model ids, content hashes, DVC paths relative to the repository, git commit,
config hash).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from transformers import GenerationConfig

from alignflow.components.modeling.checkpoints import (
    METADATA_FILE,
    is_adapter,
    load_checkpoint,
    load_tokenizer,
    read_metadata,
)
from alignflow.components.platform.atomic import atomic_directory, link_or_copy, write_json_atomic, write_text_atomic
from alignflow.components.platform.versioning import weights_sha256

StoredFormat = Literal["full", "merged", "adapter"]
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
# metadata keys that name places on the producing machine
LOCAL_KEYS = frozenset({"base_path", "gguf_path", "checkpoint_dir", "source_path"})
# a value that is an absolute path or a file: URI (POSIX, Windows drive, file:)
_ABSOLUTE = re.compile(r"^(/|~/|[A-Za-z]:[\\/]|file:)")
# an id that embeds a path: ``local:/home/me/model`` (load_from_directory's id for a directory without one)
_PREFIXED_PATH = re.compile(r"^(?P<prefix>local):(?P<path>/.+)$")
# files of a checkpoint that are not part of a portable model: ours (rewritten), PEFT's empty card
_NOT_COPIED = frozenset({METADATA_FILE, "README.md"})


@dataclass(frozen=True)
class ExportedModel:
    """A portable directory and what it holds."""

    path: Path
    format: StoredFormat  # full weights as trained, an adapter folded into its base, or the adapter itself
    dtype: str
    weights_sha256: str  # of its *.safetensors files (weights_sha256)
    size_bytes: int  # of every file in it


def directory_bytes(directory: Path) -> int:
    """Bytes of every file under ``directory``."""
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


def portable_value(value: Any) -> Any | None:
    """``value`` without the producing machine's filesystem: None for an absolute path or file: URI,
    ``local:<name>`` for an id like ``local:/abs/dir/<name>``; containers recursively."""
    if isinstance(value, dict):
        return portable_metadata(value)
    if isinstance(value, list):
        return [v for v in (portable_value(item) for item in value) if v is not None]
    if isinstance(value, str):
        if _ABSOLUTE.match(value):
            return None
        if found := _PREFIXED_PATH.match(value):
            return f"{found['prefix']}:{Path(found['path']).name}"
    return value


def portable_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """``alignflow_model.json`` without anything that names the producing machine: the keys of
    ``LOCAL_KEYS`` and every value that is (or embeds) an absolute path are dropped."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if key in LOCAL_KEYS:
            continue
        portable = portable_value(value)
        if portable is not None or value is None:
            out[key] = portable
    return out


def scrub_hf_json(path: Path, overrides: dict[str, Any] | None = None) -> None:
    """Drop top-level keys of a Hugging Face JSON file whose value is a local path (``_name_or_path``,
    ``name_or_path``, a base's path), then apply ``overrides``."""
    if not path.exists():
        return
    doc = json.loads(path.read_text())
    doc = {k: v for k, v in doc.items()
           if not (isinstance(v, str) and (_ABSOLUTE.match(v) or k in ("_name_or_path", "name_or_path") and v))}
    doc.update(overrides or {})
    write_text_atomic(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")


def _stored_dtype(directory: Path) -> str | None:
    config = json.loads((Path(directory) / "config.json").read_text())
    value = config.get("dtype") or config.get("torch_dtype")
    return str(value) if value else None


def _copy_files(source: Path, target: Path, names: list[str] | None = None) -> None:
    for path in sorted(Path(source).iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name not in _NOT_COPIED \
                and (names is None or path.name in names):
            link_or_copy(str(path), str(target / path.name))


def _write_generation_config(directory: Path, source: Path | None, generation: dict[str, Any]) -> None:
    """``generation_config.json``: the model's own (or ``source``'s), with ``generation`` on top."""
    origin = directory if (directory / "generation_config.json").exists() else source
    config = (GenerationConfig.from_pretrained(str(origin)) if origin and (origin / "generation_config.json").exists()
              else GenerationConfig())
    config.update(**generation)
    (directory / "generation_config.json").unlink(missing_ok=True)  # may be a hard link to the checkpoint's
    config.save_pretrained(str(directory))


def write_model_directory(checkpoint_dir: Path, out_dir: Path, *, merge: bool = True, dtype: str | None = "float32",
                          metadata: dict[str, Any] | None = None, readme: str | None = None,
                          generation: dict[str, Any] | None = None, base_reference: str | None = None,
                          bundle_base: bool = False) -> ExportedModel:
    """Write ``checkpoint_dir`` as a portable Hugging Face directory at ``out_dir`` (atomically).

    Full weights are copied (converted when ``dtype`` is given and differs from how they are stored); a LoRA
    adapter is folded into its base (``merge``, the result stored in ``dtype``, default float32) or kept as an
    adapter whose ``adapter_config.json`` names its base by ``base_reference`` (a ``models:/`` URI) — or, with
    ``bundle_base``, by the absolute path of a copy of the base in ``out_dir/base`` (an export on the
    machine that reads it). ``metadata`` (default: the checkpoint's) is written made portable, with the
    stored format, dtype and weights hash; ``readme`` becomes ``README.md`` (PEFT's empty template never
    is); ``generation`` updates the generation config.

    Raises:
        ValueError: an unknown ``dtype``.
        ModelSourceError: the checkpoint (or an adapter's base) cannot be loaded.
    """
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype '{dtype}': expected one of {sorted(DTYPES)}")
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    meta = dict(read_metadata(checkpoint_dir) if metadata is None else metadata)
    adapter = is_adapter(checkpoint_dir)
    base_dir = Path(read_metadata(checkpoint_dir)["base_path"]) if adapter else None
    with atomic_directory(out_dir) as tmp:
        stored: StoredFormat
        if adapter and not merge:
            _copy_files(checkpoint_dir, tmp, list(ADAPTER_FILES))
            load_tokenizer(checkpoint_dir).save_pretrained(str(tmp))
            if bundle_base:
                assert base_dir is not None
                (tmp / "base").mkdir()
                _copy_files(base_dir, tmp / "base")
                base_reference = str((out_dir / "base").resolve())
            scrub_hf_json(tmp / "adapter_config.json", {"base_model_name_or_path": base_reference or ""})
            stored, dtype = "adapter", "float32"
        elif not adapter and dtype in (None, _stored_dtype(checkpoint_dir)):
            _copy_files(checkpoint_dir, tmp)
            stored = "merged" if meta.get("format") == "merged" else "full"  # a registered merge stays one
            dtype = _stored_dtype(checkpoint_dir) or "as stored"
        else:
            dtype = dtype or "float32"
            loaded = load_checkpoint(checkpoint_dir, merge=True)
            # in place; seen as an nn.Module for the type checker (see load_from_directory)
            cast(torch.nn.Module, loaded.model).to(device="cpu", dtype=DTYPES[dtype])
            loaded.model.save_pretrained(str(tmp), safe_serialization=True)
            loaded.tokenizer.save_pretrained(str(tmp))
            stored = "merged" if adapter else "full"
            del loaded
        if not (tmp / "generation_config.json").exists() or generation:
            _write_generation_config(tmp, base_dir, generation or {})
        for name in ("config.json", "tokenizer_config.json", "generation_config.json"):
            scrub_hf_json(tmp / name)
        sha = weights_sha256(tmp)
        write_json_atomic(tmp / METADATA_FILE, {**portable_metadata(meta), "format": stored, "dtype": dtype,
                                                "weights_sha256": sha})
        if readme is not None:
            write_text_atomic(tmp / "README.md", readme)
        size = directory_bytes(tmp)
    return ExportedModel(path=out_dir, format=stored, dtype=dtype, weights_sha256=sha, size_bytes=size)
