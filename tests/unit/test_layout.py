"""The layout's rules, checked on the tree itself: components never import Prefect, every package
is installed, nothing imports the folders by their bare (site-packages-squatting) names."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAPPED = {"components": "alignflow.components", "tasks": "alignflow.tasks", "flows": "alignflow.flows"}


def _modules(folder: str) -> list[str]:
    root = REPO / folder
    names = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        names.append(".".join([MAPPED[folder], *parts]))
    return names


def test_every_components_module_imports_with_prefect_unimportable():
    """A finder that refuses `prefect` sits first on sys.meta_path, then every module under
    components/ is imported: one that reaches Prefect, even indirectly, fails with its name."""
    modules = _modules("components")
    code = f"""
import importlib, sys
class NoPrefect:
    def find_spec(self, name, path=None, target=None):
        if name == "prefect" or name.startswith("prefect.") or name.startswith("prefect_"):
            raise ImportError(f"components must not import prefect (asked for {{name}})")
        return None
sys.meta_path.insert(0, NoPrefect())
failed = []
for name in {modules!r}:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        failed.append(f"{{name}}: {{exc}}")
assert not failed, "\\n".join(failed)
print(len({modules!r}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.strip()) == len(modules) > 40


def test_every_package_is_listed_for_installation():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {"alignflow"}
    for folder, package in MAPPED.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            on_disk.add(".".join([package, *rel.parts]))
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk == set(), "listed but not on disk"


def test_nothing_imports_the_bare_folder_names():
    """`import components` would load a second copy of a module beside alignflow.components.*"""
    offenders = []
    for folder in ("alignflow", "components", "tasks", "flows", "tests", "bench"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                offenders += [f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)} {n}" for n in names
                              if n.split(".")[0] in MAPPED]
    assert offenders == []


def test_a_stage_code_version_changes_exactly_with_the_code_it_can_run(tmp_path):
    """Edit a loss in a copy of the package: the stages that train with it get a new code version (so new
    cache keys and output directories), the stages that never import it keep theirs."""
    import shutil

    from alignflow.components.platform import codeversion
    from alignflow.components.platform.codeversion import code_version, module_closure

    root = tmp_path / "components"
    shutil.copytree(REPO / "components", root, ignore=shutil.ignore_patterns("__pycache__"))
    stages = {name: f"alignflow.components.stages.{name}" for name in ("data", "sample", "train", "launch", "judge")}
    assert "alignflow.components.objectives.preference" in module_closure(stages["train"], root)
    assert "alignflow.components.objectives.preference" not in module_closure(stages["data"], root)
    before = {name: code_version(module, root) for name, module in stages.items()}
    assert before == {name: code_version(module) for name, module in stages.items()}  # a copy is the same code
    loss = root / "objectives" / "preference.py"
    loss.write_text(loss.read_text() + "\n# edited\n")
    codeversion._closure.cache_clear()  # the sources are read once per process
    after = {name: code_version(module, root) for name, module in stages.items()}
    assert {n for n in stages if after[n] != before[n]} == {"train", "launch", "judge"}
