"""A machine that never ran the pipeline, simulated on loopback: subprocesses with another HOME, empty
caches, offline hubs, the working directory elsewhere, and alignflow not importable (a sitecustomize
on PYTHONPATH makes ``import alignflow`` — and the bare folder names — fail), pointed at the registry by
``MLFLOW_TRACKING_URI`` (plus whatever credentials a test passes) and nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from alignflow.components.platform.services import free_port

BLOCKED = ("alignflow", "components", "tasks", "flows")
SITECUSTOMIZE = ("import sys\n"
                 f"for _name in {BLOCKED!r}:\n"
                 "    sys.modules[_name] = None  # import fails: this machine has no alignflow\n")


def clean_env(home: Path, tracking_uri: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process on the other machine (``home`` is created, with the sitecustomize)."""
    site = Path(home) / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "HF_", "TRANSFORMERS_", "MLFLOW_", "PREFECT_", "ALIGNFLOW_", "AWS_"))}
    (Path(home) / "tmp").mkdir(exist_ok=True)  # MLflow downloads models:/ URIs into temp dirs it never removes
    env.update(HOME=str(home), XDG_CACHE_HOME=str(Path(home) / ".cache"), PYTHONPATH=str(site),
               TMPDIR=str(Path(home) / "tmp"),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONNOUSERSITE="1",
               # `mlflow models serve --env-manager local` execs uvicorn through bash: the venv's bin on PATH
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.update(extra or {})
    return env


_PYFUNC = textwrap.dedent("""
    import json, sys
    try:
        import alignflow  # noqa: F401
        importable = True
    except ImportError:
        importable = False
    import mlflow
    uri, requests = sys.argv[1], json.loads(sys.argv[2])
    model = mlflow.pyfunc.load_model(uri)
    outputs = [model.predict(r["input"], params=r.get("params")) for r in requests]
    print(json.dumps({"alignflow_importable": importable, "outputs": outputs, "model_id": model.metadata.model_id}))
""")


def pyfunc_predict(uri: str, requests: list[dict[str, Any]], home: Path, tracking_uri: str,
                   extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """``mlflow.pyfunc.load_model(uri)`` and ``predict`` of each request ({"input", "params"}) on the other
    machine: {"alignflow_importable", "outputs", "model_id"}."""
    done = subprocess.run([sys.executable, "-c", _PYFUNC, uri, json.dumps(requests)], cwd=home,
                          env=clean_env(home, tracking_uri, extra_env), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def serve_and_ask(uri: str, payload: dict[str, Any], home: Path, tracking_uri: str,
                  extra_env: dict[str, str] | None = None, timeout: float = 300) -> tuple[int, Any]:
    """``mlflow models serve -m uri --env-manager local`` on a free loopback port of the other machine;
    one POST /invocations with ``payload``; returns (HTTP status, parsed body). The server is stopped."""
    port = free_port()
    log = Path(home) / "serve.log"
    Path(home).mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as handle:
        server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", uri,
                                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-t", "300"],
                                  cwd=home, env=clean_env(home, tracking_uri, extra_env), stdout=handle,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert server.poll() is None, f"mlflow models serve exited {server.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"mlflow models serve never answered /ping:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=300) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)


_TRANSFORMERS = textwrap.dedent("""
    import json, sys
    try:
        import alignflow  # noqa: F401
        importable = True
    except ImportError:
        importable = False
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path, messages, max_tokens = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
    with torch.inference_mode():
        out = model.generate(**encoded, max_new_tokens=max_tokens, do_sample=False)
    tokens = out[0, encoded["input_ids"].shape[1]:].tolist()
    eos = tokenizer.eos_token_id
    tokens = tokens[:tokens.index(eos)] if eos in tokens else tokens
    text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    print(json.dumps({"alignflow_importable": importable, "text": text,
                      "generation_config": model.generation_config.to_dict()}))
""")


def transformers_generate(model_dir: Path, messages: list[dict[str, str]], max_tokens: int,
                          home: Path) -> dict[str, Any]:
    """Plain ``transformers`` on the other machine: ``AutoModelForCausalLM.from_pretrained(model_dir)``, the
    directory's chat template, greedy; {"alignflow_importable", "text", "generation_config"}."""
    done = subprocess.run([sys.executable, "-c", _TRANSFORMERS, str(model_dir), json.dumps(messages), str(max_tokens)],
                          cwd=home, env=clean_env(home), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def files_naming(directory: Path, needles: list[str]) -> list[str]:
    """'<file>: <needle>' for every file under ``directory`` whose bytes contain a needle (weights too)."""
    hits = []
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file():
            content = path.read_bytes()
            hits += [f"{path.relative_to(directory)}: {n}" for n in needles if n.encode() in content]
    return hits
