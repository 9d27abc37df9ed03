"""A user's own reward function as a scorer, with TRL's ``reward_funcs`` call convention, so an
existing reward function drops in unchanged:

    fn(prompts: list, completions: list, **columns) -> list[float | None]

``prompts`` are the rows' prompts as given (strings, or lists of ``{"role", "content"}`` messages
for conversational data); ``completions`` are the generated texts — for conversational data, each
a one-message list ``[{"role": "assistant", "content": text}]`` exactly as TRL passes them; every
other column of the rows arrives as a keyword holding one value per completion (a verifier's gold
``answer`` / ``ground_truth`` among them). ``None`` means "not applicable to this row".

``function``: ``package.module:function`` (importable, or a module in the working directory) or
``path/to/file.py:function`` (relative to the working directory). The scorer's version is the hash
of that source file, so editing the function re-scores (and re-keys every cache that depends on it).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alignflow.components.config import ConfigError, PipelineConfig, ScorerSpec
from alignflow.components.scoring.base import Scorer, ScorerError, ScoringItem


def load_function(reference: str, key: str = "scoring.scorers[].function") -> tuple[Callable[..., Any], Path]:
    """``module:function`` or ``file.py:function`` → (the callable, its source file).

    Raises:
        ValueError: the reference is malformed, the module/file or the function does not exist, or
        it is not callable (the message names ``key`` and the reference).
    """
    if ":" not in reference:
        raise ValueError(f"{key}: '{reference}' must be 'module:function' or 'path/to/file.py:function'")
    target, _, name = reference.rpartition(":")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"{key}: '{reference}': no file {path}")
        module_name = f"alignflow_user_scorer_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"{key}: '{reference}': cannot load {path} as Python")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - user code: report whatever it raised, with its type
            raise ValueError(f"{key}: '{reference}': importing {path} raised {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError:
            if str(Path.cwd()) in sys.path:
                raise ValueError(f"{key}: '{reference}': no module '{target}'") from None
            sys.path.insert(0, str(Path.cwd()))  # a module beside params.yaml, as a user would expect
            try:
                module = importlib.import_module(target)
            except ModuleNotFoundError:
                raise ValueError(f"{key}: '{reference}': no module '{target}' (looked in the working directory "
                                 f"{Path.cwd()} too)") from None
        path = Path(inspect.getsourcefile(module) or "")
    function = getattr(module, name, None)
    if function is None or not callable(function):
        raise ValueError(f"{key}: '{reference}': {path.name or target} has no callable '{name}'")
    return function, path


def check_user_functions(config: PipelineConfig) -> None:
    """Import every ``python`` scorer's function the config names (``scoring.scorers``,
    ``reward.labeller``), so a typo fails when the config is loaded, not after SFT.

    Raises:
        ConfigError: a function reference does not resolve (the message names the config key).
    """
    named = [(f"scoring.scorers[{i}].function", s) for i, s in enumerate(config.scoring.scorers)]
    if config.reward.labeller is not None:
        named.append(("reward.labeller.function", config.reward.labeller))
    for key, spec in named:
        if spec.type == "python" and spec.function:
            try:
                load_function(spec.function, key)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None


class PythonScorer(Scorer):
    """``scoring.scorers: [{type: python, function: rewards.py:my_reward}]``."""

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        self.function, self.source = load_function(spec.function or "", f"scoring.scorers '{spec.id}' function")

    def revision(self) -> str:
        return hashlib.sha256(self.source.read_bytes()).hexdigest()[:16] if self.source.is_file() else "?"

    def _call(self, items: Sequence[ScoringItem]) -> Any:
        prompts = [item.prompt for item in items]
        completions: list[Any] = [[{"role": "assistant", "content": item.completion}] if item.conversational
                                  else item.completion for item in items]
        names = sorted({k for item in items for k in item.columns})
        columns = {name: [item.columns.get(name) for item in items] for name in names}
        return self.function(prompts=prompts, completions=completions, **columns)

    def score(self, items: Sequence[ScoringItem]) -> list[float | None]:
        try:
            result = self._call(items)
        except Exception:  # noqa: BLE001 - user code: find the row that fails, then report it
            for item in items:
                try:
                    self._call([item])
                except Exception as exc:  # noqa: BLE001
                    raise ScorerError(f"scorer '{self.id}' ({self.spec.function}) raised on row {item.prompt_id} "
                                      f"(completion {item.completion[:60]!r}): {type(exc).__name__}: {exc}") from exc
            raise ScorerError(f"scorer '{self.id}' ({self.spec.function}) raised on a batch of {len(items)} rows "
                              f"but on none of them alone") from None
        return self._checked(result, items)

    def _checked(self, result: Any, items: Sequence[ScoringItem]) -> list[float | None]:
        where = f"scorer '{self.id}' ({self.spec.function})"
        if not isinstance(result, (list, tuple)):
            raise ScorerError(f"{where} returned {type(result).__name__}, expected a list of floats "
                              f"(one per completion)")
        if len(result) != len(items):
            raise ScorerError(f"{where} returned {len(result)} scores for {len(items)} completions")
        out: list[float | None] = []
        for item, value in zip(items, result, strict=True):
            if value is None:
                out.append(None)
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(float(value)):  # bool: a pass/fail
                raise ScorerError(f"{where} returned {value!r} for row {item.prompt_id}: "
                                  f"expected a finite float or None")
            out.append(float(value))
        return out


def function_source(reference: str) -> Path | None:
    """The source file a ``module:function`` / ``file.py:function`` reference points at, found
    without importing the user's module (None when it cannot be found)."""
    target = reference.rpartition(":")[0]
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser().resolve()
        return path if path.is_file() else None
    try:
        spec = importlib.util.find_spec(target)
    except (ImportError, ValueError):
        spec = None
    if spec is None and (Path.cwd() / f"{target.replace('.', '/')}.py").is_file():
        return Path.cwd() / f"{target.replace('.', '/')}.py"
    return Path(spec.origin) if spec is not None and spec.origin else None


def user_code_version(specs: Sequence[ScorerSpec]) -> str:
    """A hash of the source of every user function the scorers call: part of every cache key that
    scores (edit the function and the samples are re-scored, the rounds re-run)."""
    digest = hashlib.sha256()
    for spec in specs:
        if spec.type == "python" and spec.function:
            source = function_source(spec.function)
            digest.update(spec.function.encode())
            digest.update(source.read_bytes() if source is not None else b"?")
    return digest.hexdigest()[:12]
