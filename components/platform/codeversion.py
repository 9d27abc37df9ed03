"""The version of the code a stage runs: a hash of the source of its module and of every module of
the ``alignflow.components`` package it imports, directly or not.

Cache keys need it. A Prefect task's cache key covers its inputs and its own (thin) source, and a
workspace directory covers the config: neither changes when a loss or a trainer is edited, so a
re-run of the same config would return results the old code computed. A stage's code version
changes exactly when code it can execute changes, so an edited loss re-runs the training that
uses it while data generation, SFT and sampling stay cached.

The import graph is read from the source (``ast``, every ``import`` anywhere in a module,
function-level ones included), not from ``sys.modules``, so the answer does not depend on what
happens to be imported in this process.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "alignflow.components"
_ROOT = Path(__file__).resolve().parents[1]  # the folder alignflow.components is loaded from


def _module_file(name: str, root: Path = _ROOT) -> Path | None:
    """``alignflow.components.a.b`` → components/a/b.py or components/a/b/__init__.py; None if neither."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    parts = name.removeprefix(PACKAGE).strip(".").split(".") if name != PACKAGE else []
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py") if parts else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _imports(name: str, source: str, root: Path) -> set[str]:
    """Modules of the package that ``source`` (the module ``name``) imports; ``from p import x``
    counts ``p.x`` when that is a module, and ``p`` always."""
    found: set[str] = set()
    own = _module_file(name, root)
    package = name if own is not None and own.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{node.module}" if node.module else anchor
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if _module_file(m, root) is not None}


@lru_cache(maxsize=None)
def _closure(name: str, root: Path) -> tuple[tuple[str, str], ...]:
    """(module name, sha256 of its source) for ``name`` and everything it reaches, sorted."""
    seen: dict[str, str] = {}
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        path = _module_file(current, root)
        if path is None:
            raise ModuleNotFoundError(f"{current}: not a module of {PACKAGE} (looked under {root})")
        source = path.read_bytes()
        seen[current] = hashlib.sha256(source).hexdigest()
        # the packages a module lives in run first on import: their __init__ is code it depends on
        parents = [current.rsplit(".", i)[0] for i in range(1, current.count("."))]
        todo.extend(m for m in [*_imports(current, source.decode(), root), *parents] if m not in seen)
    return tuple(sorted(seen.items()))


def module_closure(name: str, root: Path | None = None) -> list[str]:
    """Every module of ``alignflow.components`` that ``name`` can execute (itself included), sorted.
    ``root``: the folder the package lives in (default: this installation's).

    Raises:
        ModuleNotFoundError: ``name`` is not a module of the package.
    """
    return [module for module, _ in _closure(name, Path(root or _ROOT))]


def code_version(name: str, root: Path | None = None) -> str:
    """12 hex characters identifying the source of ``name`` and its closure: equal exactly when no
    byte of any module it can execute changed. Cached per process (the source is read once).

    Raises:
        ModuleNotFoundError: ``name`` is not a module of the package.
    """
    blob = "\n".join(f"{module} {digest}" for module, digest in _closure(name, Path(root or _ROOT)))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def package_version(root: Path | None = None) -> str:
    """The code version of the whole components package: every module under it."""
    root = Path(root or _ROOT)
    digests = sorted(f"{p.relative_to(root).as_posix()} {hashlib.sha256(p.read_bytes()).hexdigest()}"
                     for p in root.rglob("*.py"))
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()[:12]
