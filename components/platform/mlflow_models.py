"""Models as MLflow 3 logged models: a pyfunc (MLflow "models from code") per model, linked to the run
that produced it and to that run's metrics, registered with a ``models:/m-<id>`` source.

Every call goes through the ``Tracker`` with explicit ids (no fluent active run, experiment or tracking
URI): safe from a Prefect worker thread. One process global remains: MLflow saves and loads a
models-from-code file by executing it and reading back the model it ``set_model``-ed, so saves are
serialised (``CODE_MODEL_LOCK``).

What MLflow itself would leak is removed: the absolute source paths it records in ``MLmodel``
(``artifacts.<name>.uri``, ``model_code_path``) and a ``file:`` artifact location. ``pip_requirements``
are pinned to the versions installed here (MLflow's inference imports the model in a subprocess, leaves
torch out and writes local wheel labels such as ``+cpu`` that no index serves).
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import LoggedModel
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from alignflow.components.platform.atomic import link_or_copy
from alignflow.components.platform.pyfunc import CHAT_MODEL_CODE, REWARD_MODEL_CODE
from alignflow.components.platform.tracking import Tracker

SERVING_PACKAGES = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "jinja2")
ADAPTER_PACKAGES = ("peft",)  # an adapter version folds itself into its base at load time
CODE_MODEL_LOCK = threading.Lock()
EXAMPLE_MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]
_LOGGED_MODEL_IN_PATH = re.compile(r"/models/(m-[0-9a-f]+)/artifacts/?$")


def pinned_requirements(packages: tuple[str, ...] = SERVING_PACKAGES) -> list[str]:
    """``name==version`` of each installed package, without a local label (``2.13.0+cpu`` → ``2.13.0``).

    Raises:
        importlib.metadata.PackageNotFoundError: a package is not installed.
    """
    return [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in packages]


def chat_signature(max_tokens: int) -> tuple[ModelSignature, tuple[dict[str, Any], dict[str, Any]]]:
    """The chat pyfunc's signature — ``messages`` in, a ``chat.completion`` out, params ``max_tokens``
    (default ``max_tokens``: the decoding the model was evaluated with), ``temperature`` (0 = greedy) and
    ``top_p`` — and its input example (data, params)."""
    example = {"messages": EXAMPLE_MESSAGES}
    output = {"object": "chat.completion", "model": "alignflow",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "5"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    params = {"max_tokens": int(max_tokens), "temperature": 0.0, "top_p": 1.0}
    return infer_signature(example, output, params=params), (example, {"max_tokens": 8})


def reward_signature() -> tuple[ModelSignature, Any]:
    """The reward pyfunc's signature: rows of (prompt, response) in, one float per row out."""
    import pandas as pd

    example = pd.DataFrame([{"prompt": "What is 2 + 3?", "response": "The answer is 5."}])
    return infer_signature(example, [0.5]), example


def scrub_mlmodel(model_dir: Path) -> None:
    """``pyfunc.save_model`` records where things came from — ``artifacts.<name>.uri`` (the source
    directory) and ``model_code_path`` (the code file) — as absolute paths of this machine; loading reads
    only the relative ``path`` and the file's name. Make both relative."""
    mlmodel = Path(model_dir) / "MLmodel"
    doc = yaml.safe_load(mlmodel.read_text())
    pyfunc = doc["flavors"]["python_function"]
    for info in (pyfunc.get("artifacts") or {}).values():
        info["uri"] = info["path"]
    if pyfunc.get("model_code_path"):
        pyfunc["model_code_path"] = Path(pyfunc["model_code_path"]).name
    mlmodel.write_text(yaml.safe_dump(doc, default_flow_style=False, sort_keys=False))



def log_pyfunc_model(tracker: Tracker, run_id: str | None, code_file: Path, artifacts: dict[str, Path], *,
                     name: str, model_type: str, signature: ModelSignature, input_example: Any,
                     requirements: list[str], model_config: dict[str, Any] | None = None,
                     tags: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
                     metadata: dict[str, Any] | None = None, step: int | None = None,
                     extra_files: dict[str, str] | None = None) -> LoggedModel:
    """Log a models-from-code pyfunc as a READY logged model of the tracker's experiment, produced by
    ``run_id``; with ``step``, also an output of that run at ``step`` with the run's metrics at that step
    linked to it. ``artifacts``: name → directory (copied into ``artifacts/<name>``); ``extra_files``:
    file name → text written at the model's root (e.g. ``README.md``). A failure marks the logged model
    FAILED and raises."""
    logged = tracker.create_logged_model(name, run_id, model_type, tags or {}, params or {})
    try:
        first = Path(next(iter(artifacts.values())))
        with tempfile.TemporaryDirectory(prefix=".mlflow-model-", dir=first.parent) as tmp:
            stage = Path(tmp) / "stage"
            stage.mkdir()
            code = Path(shutil.copy(code_file, stage / Path(code_file).name))
            staged = {}
            for key, src in artifacts.items():  # save_model refuses symlinks: hard links (same filesystem) or copies
                staged[key] = str(shutil.copytree(src, stage / key, copy_function=link_or_copy))
            local = Path(tmp) / "model"
            # MLmodel's artifact_path is informational; a file: store's location is a local path: leave it out
            location = None if logged.artifact_location.startswith("file:") else logged.artifact_location
            mlflow_model = Model(artifact_path=location, model_uuid=logged.model_id, run_id=run_id,
                                 model_id=logged.model_id)
            with CODE_MODEL_LOCK, warnings.catch_warnings():
                # MLflow suggests type hints on predict for validation: the explicit signature already is the schema
                warnings.filterwarnings("ignore", message="Add type hints to the `predict` method")
                mlflow.pyfunc.save_model(str(local), python_model=str(code), artifacts=staged, signature=signature,
                                         input_example=input_example, pip_requirements=requirements,
                                         model_config=model_config, metadata=metadata, mlflow_model=mlflow_model)
            scrub_mlmodel(local)
            for filename, text in (extra_files or {}).items():
                (local / filename).write_text(text)
            tracker.log_model_artifacts(logged.model_id, local)
        tracker.finalize_logged_model(logged.model_id, ready=True)
    except BaseException:
        tracker.finalize_logged_model(logged.model_id, ready=False)
        raise
    if run_id is not None and step is not None:
        tracker.link_model_to_run(run_id, logged.model_id, step)
    return tracker.get_logged_model(logged.model_id)


def log_chat_model(tracker: Tracker, run_id: str | None, hf_dir: Path, *, name: str, max_tokens: int,
                   step: int | None = None, tags: dict[str, Any] | None = None,
                   params: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
                   readme: str | None = None) -> LoggedModel:
    """A causal LM directory (full weights, or an adapter whose metadata names its base by ``models:/``
    URI) as a chat pyfunc (``pyfunc/chat_model.py``); see ``log_pyfunc_model``."""
    adapter = (Path(hf_dir) / "adapter_config.json").exists()
    signature, example = chat_signature(max_tokens)
    return log_pyfunc_model(
        tracker, run_id, CHAT_MODEL_CODE, {"hf_model": Path(hf_dir)}, name=name, model_type="chat",
        signature=signature, input_example=example,
        requirements=pinned_requirements(SERVING_PACKAGES + (ADAPTER_PACKAGES if adapter else ())),
        model_config={"model_name": name}, tags=tags, params=params, metadata=metadata, step=step,
        extra_files={"README.md": readme} if readme else None)


def save_reward_artifacts(reward_model: Any, tokenizer: Any, out_dir: Path, max_length: int) -> dict[str, Path]:
    """A scalar ``RewardModel``'s backbone (its base transformer and the tokenizer) and head, as the reward
    pyfunc reads them: ``{"backbone": dir, "head": dir}`` under ``out_dir``.

    Raises:
        ValueError: the head is not scalar, or the backbone is still a PEFT wrapper (merge it first).
    """
    from safetensors.torch import save_file

    if reward_model.head_type != "scalar":
        raise ValueError(f"only a scalar reward head can be logged as a pyfunc, this model has "
                         f"'{reward_model.head_type}'")
    if hasattr(reward_model.backbone, "peft_config"):
        raise ValueError("the reward model's backbone is a PEFT model: merge its adapter (merge_and_unload) "
                         "before logging")
    backbone, head = Path(out_dir) / "backbone", Path(out_dir) / "head"
    backbone.mkdir(parents=True)
    head.mkdir(parents=True)
    reward_model.backbone.save_pretrained(str(backbone), safe_serialization=True)
    tokenizer.save_pretrained(str(backbone))
    for key in ("_name_or_path", "name_or_path"):  # the producing machine's paths, if transformers wrote them
        for file in (backbone / "config.json", backbone / "tokenizer_config.json"):
            doc = json.loads(file.read_text())
            if doc.pop(key, None) is not None:
                file.write_text(json.dumps(doc, indent=2))
    state = {k: v.detach().float().contiguous().cpu() for k, v in reward_model.head.state_dict().items()}
    save_file(state, str(head / "head.safetensors"))
    (head / "head.json").write_text(json.dumps({"head_type": "scalar", "max_length": int(max_length),
                                                "append_eos": True}))
    return {"backbone": backbone, "head": head}


def log_reward_model(tracker: Tracker, run_id: str | None, reward_model: Any, tokenizer: Any, *, name: str,
                     max_length: int, step: int | None = None, tags: dict[str, Any] | None = None,
                     params: dict[str, Any] | None = None, readme: str | None = None,
                     work_dir: Path | None = None) -> LoggedModel:
    """A scalar ``RewardModel`` (``components/modeling/reward_model.py``) as a reward pyfunc
    (``pyfunc/reward_model.py``): (prompt, response) rows in, one score per row out — the scores the
    model gives in alignflow (``encode_pairs`` of the prompt and ``response + EOS``, ``max_length``);
    see ``log_pyfunc_model``. ``work_dir``: where the files are staged (default: a temp dir)."""
    signature, example = reward_signature()
    with tempfile.TemporaryDirectory(prefix=".reward-model-", dir=work_dir) as tmp:
        artifacts = save_reward_artifacts(reward_model, tokenizer, Path(tmp), max_length)
        return log_pyfunc_model(tracker, run_id, REWARD_MODEL_CODE, artifacts, name=name, model_type="reward",
                                signature=signature, input_example=example,
                                requirements=pinned_requirements(SERVING_PACKAGES), tags=tags, params=params,
                                step=step, extra_files={"README.md": readme} if readme else None)


def register_logged_model(tracker: Tracker, registered_name: str, logged: LoggedModel, run_id: str | None,
                          tags: dict[str, Any], description: str | None = None) -> str:
    """A new version of ``registered_name`` whose source is the logged model; returns its number.

    Through a tracking server the source is ``models:/m-<id>``. A direct database store looks a logged model
    up with the process-global tracking URI (``Logged model … not found`` otherwise) — for such a source,
    and for ``model_id`` without a run — so there the source is the logged model's artifact location (the
    same files, found without global state) and the id travels as the ``logged_model_id`` tag only (the
    OSS registry does not keep ``ModelVersion.model_id`` anyway)."""
    tracker.ensure_registered_model(registered_name, "Models produced by alignflow.")
    server = tracker.is_server
    version = tracker.create_model_version(registered_name,
                                           f"models:/{logged.model_id}" if server else logged.artifact_location,
                                           run_id, {**tags, "logged_model_id": logged.model_id},
                                           description=description, model_id=logged.model_id if server else None)
    # the logged model's "mlflow.modelVersions" tag is what the UI reads to show its registered versions:
    # a tracking server sets it inside create_model_version, a direct store does not
    existing = tracker.get_logged_model(logged.model_id).tags.get(MLFLOW_MODEL_VERSIONS)
    links = json.loads(existing) if existing else []
    if not any(link.get("name") == registered_name and str(link.get("version")) == version for link in links):
        links.append({"name": registered_name, "version": int(version)})
        tracker.set_logged_model_tags(logged.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(links)})
    return version


def logged_model_id_of(version: Any) -> str | None:
    """The logged model a registry version is, or None for a version registered from run artifacts
    (before alignflow logged models). ``ModelVersion.model_id`` comes back None from the OSS registry:
    the id is read off the version's tag or its source."""
    tags = dict(version.tags or {})
    if tags.get("logged_model_id"):
        return tags["logged_model_id"]
    if getattr(version, "model_id", None):
        return version.model_id
    source = version.source or ""
    if source.startswith("models:/m-"):
        return source.removeprefix("models:/").split("/", 1)[0]
    found = _LOGGED_MODEL_IN_PATH.search(source)
    return found.group(1) if found else None


def download_logged_model(tracker: Tracker, model_id: str, target: Path) -> Path:
    """Every file of a logged model into ``target`` (created; the model's root: ``MLmodel``, ``artifacts/``).

    ``mlflow.artifacts.download_artifacts("models:/…")`` resolves names through the process-global
    registry URI whatever it is given; this resolves the logged model's artifact location through the
    tracker and downloads that."""
    import mlflow.artifacts

    location = tracker.get_logged_model(model_id).artifact_location
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=target) as tmp:
        got = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp,
                                                       tracking_uri=tracker.tracking_uri))
        for child in got.iterdir():
            child.replace(target / child.name)
    return target
