"""DVC: track generated files, push them to the remote, and read their hashes for lineage.

Calls go through the ``dvc`` CLI in a subprocess: DVC's Python API touches process-wide state
(signal handlers, cwd) that is unsafe inside Prefect's worker threads, and the CLI is the
interface users script against anyway.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import yaml


class VersioningError(RuntimeError):
    """A DVC command failed; the message carries DVC's own output."""


def find_repo_root(start: Path) -> Path | None:
    for candidate in [Path(start).resolve(), *Path(start).resolve().parents]:
        if (candidate / ".dvc").is_dir():
            return candidate
    return None


def _dvc(args: list[str], cwd: Path, timeout: float = 600) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        output = f"{result.stderr}\n{result.stdout}"
        # DVC's own ERROR lines say what broke (the endpoint, the credentials); the rest is its banner
        errors = [line.strip() for line in output.splitlines() if line.strip().startswith("ERROR")]
        raise VersioningError(f"dvc {' '.join(args)} failed in {cwd} (exit {result.returncode}):\n"
                              + ("\n".join(errors) or output.strip()))
    return result.stdout


def init_repo(root: Path, no_scm: bool = False) -> None:
    if not (Path(root) / ".dvc").is_dir():
        _dvc(["init", "--quiet", *(["--no-scm"] if no_scm else [])], cwd=Path(root))


def add_remote(root: Path, name: str, url: str, default: bool = True, options: dict[str, str] | None = None) -> None:
    _dvc(["remote", "add", "--force", *(["--default"] if default else []), name, url], cwd=root)
    for key, value in (options or {}).items():
        _dvc(["remote", "modify", name, key, value], cwd=root)


def dvc_file_hash(target: Path) -> str:
    """The md5 DVC recorded for a tracked file or directory (from its .dvc file)."""
    dvc_file = Path(f"{target}.dvc")
    if not dvc_file.exists():
        raise VersioningError(f"{target}: not tracked by DVC (no {dvc_file.name})")
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
    if not outs or "md5" not in outs[0]:
        raise VersioningError(f"{dvc_file}: no md5 recorded")
    return outs[0]["md5"]


def track(paths: list[Path], root: Path) -> dict[str, str]:
    """``dvc add`` the paths (one call) and return {path: md5}."""
    if not paths:
        return {}
    rel = [str(Path(p).resolve().relative_to(Path(root).resolve())) for p in paths]
    _dvc(["add", *rel], cwd=root)  # not --quiet: it silences the ERROR line that names the cause
    return {str(p): dvc_file_hash(Path(p)) for p in paths}


def push(paths: list[Path], root: Path, remote: str | None = None) -> None:
    targets = [str(Path(f"{p}.dvc").resolve().relative_to(Path(root).resolve())) for p in paths]
    # not --quiet: it also silences the ERROR line that names the cause of a failed push
    _dvc(["push", *(["--remote", remote] if remote else []), *targets], cwd=root)


def content_md5(path: Path) -> str:
    """DVC-compatible md5 of a file, for lineage when DVC tracking is switched off."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(directory: Path) -> str:
    """sha256 over a model directory's ``*.safetensors`` files, by name then content: the identity of its
    weights, recorded for a registered base (``components/platform/pyfunc/chat_model.py`` checks it too)."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).glob("*.safetensors")):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()
