"""Start and stop the local stack: a real `mlflow server` and `prefect server` on loopback.

Used by `alignflow up` and by the tests. Each service writes its pid, URL and log under the
state directory, so `alignflow down` and a later `alignflow run` find it again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from alignflow.components.platform.atomic import write_json_atomic


class ServiceError(RuntimeError):
    """A service failed to start; the message includes the tail of its log."""


@dataclass
class Service:
    name: str
    url: str
    pid: int
    log: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceError(f"{url}: process exited with {process.returncode}\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    raise ServiceError(f"{url}: not answering after {timeout:.0f}s\n{_tail(log)}")


def _tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not Path(log).exists():
        return ""
    return "\n".join(Path(log).read_text(errors="replace").splitlines()[-lines:])


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def start_mlflow(state_dir: Path, port: int | None = None, backend_uri: str | None = None,
                 artifacts_destination: str | None = None, extra_env: dict[str, str] | None = None,
                 timeout: float = 90, app_name: str | None = None) -> tuple[Service, subprocess.Popen]:
    """``app_name="basic-auth"`` turns on MLflow's basic auth (its config from MLFLOW_AUTH_CONFIG_PATH
    and MLFLOW_AUTH_ADMIN_PASSWORD in ``extra_env``); the health endpoint stays open either way."""
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    backend_uri = backend_uri or f"sqlite:///{state_dir / 'mlflow-server.db'}"
    artifacts_destination = artifacts_destination or str(state_dir / "mlflow-artifacts")
    log = state_dir / "mlflow-server.log"
    cmd = [_bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", backend_uri, "--artifacts-destination", artifacts_destination]
    if app_name:
        cmd += ["--app-name", app_name]
    env = {**os.environ, **(extra_env or {})}
    with open(log, "ab") as handle:
        process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", timeout, process, log)
    return Service("mlflow", url, process.pid, log), process


def start_prefect(state_dir: Path, port: int | None = None, timeout: float = 120,
                  extra_env: dict[str, str] | None = None) -> tuple[Service, subprocess.Popen]:
    """``extra_env``: e.g. PREFECT_API_DATABASE_CONNECTION_URL for a PostgreSQL backend."""
    state_dir = Path(state_dir).resolve()
    port = port or free_port()
    log = state_dir / "prefect-server.log"
    # the UI's browser code calls the API at PREFECT_UI_API_URL, which defaults to port 4200 whatever --port says:
    # without it a server on any other port serves a UI that cannot reach its own API
    env = {**os.environ, "PREFECT_HOME": str(state_dir / "prefect-home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "true",
           "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api", **(extra_env or {})}
    cmd = [_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "ab") as handle:
        process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/api/health", timeout, process, log)
    return Service("prefect", url, process.pid, log), process


def _exited(pid: int) -> bool:
    """Reap it if it is our child: an exited child stays a zombie, which ``kill(pid, 0)`` still finds."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:  # not our child: its parent reaps it
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop_process(pid: int, timeout: float = 15) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _exited(pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stack_file(state_dir: Path) -> Path:
    return Path(state_dir) / "stack.json"


def save_stack(state_dir: Path, services: list[Service]) -> None:
    write_json_atomic(stack_file(state_dir),
                      {s.name: {"url": s.url, "pid": s.pid, "log": str(s.log)} for s in services})


def load_stack(state_dir: Path) -> dict[str, dict]:
    """Services recorded by `alignflow up` that are still alive."""
    path = stack_file(state_dir)
    if not path.exists():
        return {}
    alive = {}
    for name, info in json.loads(path.read_text()).items():
        try:
            os.kill(info["pid"], 0)
            alive[name] = info
        except ProcessLookupError:
            continue
    return alive
