"""Local data sources for a role: load, normalize, validate, mix by fraction, split, profile.

A source is a local file (``.jsonl``, ``.json``, ``.parquet``, ``.csv``, ``.arrow``), a
``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` directory, or ``builtin:<name>``
resolved through a registry of generator callables the caller passes in. Files are read with
the ``datasets`` library from local paths only (``load_dataset("json" | "parquet" | "csv" |
"arrow", data_files=...)``, ``load_from_disk``) into a ``cache_dir`` the caller chooses; nothing
is fetched from the Hugging Face hub.

Row numbers are 1-based records: for JSONL the line number (blank lines are skipped but still
counted), for JSON the array index + 1, for CSV the data row (the header is not row 1), for
Arrow/Parquet/saved datasets the record index + 1.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from alignflow.components.data.formats import (
    FORMATS,
    ROLES,
    DataFormatError,
    Example,
    detect_format,
    normalize,
    render_prompt,
    render_response,
    tokenize_pair,
)

logger = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
MAX_CHECK_ERRORS = 20
_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}

# A builtin generator: called as ``generator(seed=seed, **spec.params)``; yields raw rows
# (mappings, or pydantic models that are dumped), which are then detected and normalized like a
# file's rows.
BuiltinGenerator = Callable[..., Iterable[Mapping[str, Any] | BaseModel]]


class SourceSpec(BaseModel):
    """One entry of ``data.sources.<role>``.

    ``source``: a local path or ``builtin:<name>``. ``format``: ``"auto"`` or one of
    ``formats.FORMATS``. ``columns``: ``{their_name: our_name}`` renames applied before anything
    else. ``fraction``: the share of this source's rows kept, in (0, 1] (a seeded random subset).
    ``split``: which split of a ``DatasetDict.save_to_disk`` directory. ``params``: keyword
    arguments for a builtin generator.
    """

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1)
    format: str = "auto"
    columns: dict[str, str] = Field(default_factory=dict)
    fraction: float = Field(default=1.0, gt=0, le=1)
    split: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value != "auto" and value not in FORMATS:
            raise ValueError(f"unknown format {value!r} (expected auto or one of {', '.join(FORMATS)})")
        return value


def as_spec(item: SourceSpec | Mapping[str, Any], key: str) -> SourceSpec:
    """A ``SourceSpec`` from a spec or its config dict; an invalid dict raises
    ``DataFormatError`` under its config key: ``<key>: invalid source spec: fraction: ...``."""
    if isinstance(item, SourceSpec):
        return item
    try:
        return SourceSpec.model_validate(item)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise DataFormatError(key, f"invalid source spec: {problems}") from None


class RawSource(BaseModel):
    """A source's rows as loaded, before normalization."""

    name: str  # how errors and origins name the source: the path as configured, or builtin:<name>
    column_names: list[str]
    rows: list[dict[str, Any]]
    row_numbers: list[int]  # the 1-based row number of each row (JSONL: its line)


class SourceReport(BaseModel):
    """What ``check_sources`` saw of one source."""

    key: str
    role: str
    source: str
    format: str | None = None
    rows: int = 0
    errors: int = 0


class CheckReport(BaseModel):
    """``check_sources``' verdict: ``errors`` holds up to ``MAX_CHECK_ERRORS`` messages."""

    ok: bool
    errors: list[str]
    truncated: bool = False  # the check stopped at the cap: there may be more errors
    sources: list[SourceReport]

    @property
    def exit_code(self) -> int:
        """What ``alignflow data check`` exits with: 1 on any bad row or source, else 0."""
        return 0 if self.ok else 1

    def render(self) -> str:
        """Human-readable report: one line per source, then the errors."""
        lines = [f"{s.key}: {s.source} ({s.format or '?'}): {s.rows} rows, {s.errors} errors" for s in self.sources]
        lines += self.errors
        if self.truncated:
            lines.append(f"... stopped after {len(self.errors)} errors")
        lines.append("OK" if self.ok else f"FAILED: {len(self.errors)}{'+' if self.truncated else ''} errors")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# reading


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    import datasets

    was_enabled = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _read_json_yourself(path: Path, name: str) -> tuple[list[dict[str, Any]], list[int]]:
    """Fallback JSON/JSONL reader (BOM tolerated), with row-level errors."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".json":
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataFormatError(name, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(payload, dict):
            payload = [payload]
        if not isinstance(payload, list):
            raise DataFormatError(name, f"expected a JSON array of objects, got {type(payload).__name__}")
        numbers = list(range(1, len(payload) + 1))
    else:
        payload, numbers = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                payload.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataFormatError(name, f"not valid JSON ({exc.msg})", row=number) from None
            numbers.append(number)
    for item, number in zip(payload, numbers, strict=True):
        if not isinstance(item, dict):
            raise DataFormatError(name, f"expected a JSON object, got {type(item).__name__}", row=number)
    return payload, numbers


def _jsonl_line_numbers(path: Path, n_rows: int) -> list[int]:
    with path.open(encoding="utf-8-sig") as handle:
        numbers = [number for number, line in enumerate(handle, start=1) if line.strip()]
    return numbers if len(numbers) == n_rows else list(range(1, n_rows + 1))


def read_source(spec: SourceSpec, *, key: str, cache_dir: str | Path, seed: int = 0,
                builtins: Mapping[str, BuiltinGenerator] | None = None) -> RawSource:
    """Load one source's raw rows (no normalization).

    ``key`` is the config path of ``spec`` (``data.sources.prompts[1]``) for source-level errors.
    Builtins are called as ``builtins[name](seed=seed, **spec.params)``.

    Raises ``DataFormatError``: ``<key>.source: file not found: <path>``, unknown builtin,
    unsupported file type, a directory that is no saved dataset, ``<key>.split`` problems
    (missing/unknown split of a DatasetDict, a split on a non-DatasetDict), an unreadable file,
    invalid JSON (with its row), and a source with no rows.
    """
    if spec.source.startswith(BUILTIN_PREFIX):
        name = spec.source[len(BUILTIN_PREFIX):]
        registry = builtins or {}
        if name not in registry:
            known = ", ".join(sorted(registry)) or "none"
            raise DataFormatError(f"{key}.source", f"unknown builtin '{name}' (known: {known})")
        params = {"seed": seed, **spec.params}
        try:
            generated = list(registry[name](**params))
        except (TypeError, ValueError) as exc:  # a misspelled or out-of-range param: name the entry, not a traceback
            raise DataFormatError(f"{key}.params", f"{spec.source} refused {spec.params}: {exc}") from None
        rows = [r.model_dump(mode="json") if isinstance(r, BaseModel) else dict(r) for r in generated]
        if not rows:
            raise DataFormatError(f"{key}.source", f"{spec.source} produced no rows")
        return RawSource(name=spec.source, column_names=list(rows[0]), rows=rows,
                         row_numbers=list(range(1, len(rows) + 1)))

    path = Path(spec.source).expanduser()
    name = spec.source
    if not path.exists():
        raise DataFormatError(f"{key}.source", f"file not found: {path}")
    if path.is_dir():
        from datasets import Dataset, DatasetDict, load_from_disk

        try:
            loaded = load_from_disk(str(path))
        except FileNotFoundError:
            raise DataFormatError(f"{key}.source", f"{path} is a directory but not a Dataset/DatasetDict "
                                  "save_to_disk directory") from None
        if isinstance(loaded, DatasetDict):
            splits = [str(split) for split in loaded]
            if spec.split is None:
                if len(splits) != 1:
                    raise DataFormatError(f"{key}.split", f"{path} is a DatasetDict with splits "
                                          f"[{', '.join(splits)}]: choose one with split:")
                dataset = loaded[splits[0]]
            elif spec.split not in loaded:
                raise DataFormatError(f"{key}.split", f"no split '{spec.split}' in {path} "
                                      f"(available: {', '.join(splits)})")
            else:
                dataset = loaded[spec.split]
        else:
            assert isinstance(loaded, Dataset)
            if spec.split is not None:
                raise DataFormatError(f"{key}.split", f"{path} is a single Dataset, not a DatasetDict: drop split:")
            dataset = loaded
        rows = dataset.to_list()
        numbers = list(range(1, len(rows) + 1))
        columns = list(dataset.column_names)
    else:
        builder = _BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DataFormatError(f"{key}.source", f"unsupported file type '{path.suffix}' for {path} (expected "
                                  ".jsonl, .json, .parquet, .csv, .arrow or a save_to_disk directory)")
        if spec.split is not None:
            raise DataFormatError(f"{key}.split", f"{path} is a file: split: only selects a DatasetDict directory's "
                                  "split")
        from datasets import load_dataset

        dataset = None
        # a CSV cell is text: read every column as a string, or pandas' type inference turns a numeric
        # completion ("5") into an int and a column with one empty cell into floats
        features = _csv_string_features(path, key, name) if builder == "csv" else None
        with _quiet_datasets():
            try:
                dataset = load_dataset(builder, data_files=str(path), split="train", cache_dir=str(cache_dir),
                                       features=features)
            except Exception as exc:  # noqa: BLE001 - any reader failure becomes a DataFormatError
                if builder != "json":
                    raise DataFormatError(f"{key}.source", f"cannot read {path}: {type(exc).__name__}: {exc}") from None
                logger.debug("datasets could not read %s (%s); reading it directly", path, exc)
        try:
            if dataset is None:
                # e.g. invalid JSON or a row that is not an object: re-read it ourselves (utf-8-sig:
                # a BOM is fine) for a row-level error, or for the rows if only datasets' reader failed
                rows, numbers = _read_json_yourself(path, name)
                columns = list(dict.fromkeys(k for r in rows for k in r))
            else:
                rows = dataset.to_list()
                columns = list(dataset.column_names)
        except UnicodeDecodeError:
            raise _not_utf8(path, name) from None
        if dataset is not None:
            numbers = (_jsonl_line_numbers(path, len(rows)) if path.suffix.lower() == ".jsonl"
                       else list(range(1, len(rows) + 1)))
    if not rows:
        raise DataFormatError(f"{key}.source", f"no rows in {path}")
    return RawSource(name=name, column_names=columns, rows=rows, row_numbers=numbers)


def _csv_string_features(path: Path, key: str, name: str) -> Any:
    """``datasets.Features`` reading every column of the CSV file ``path`` (its header row) as a string.

    Raises:
        DataFormatError: the file is not UTF-8, has no header row, or names a column twice.
    """
    import csv

    from datasets import Features, Value

    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), None)
    except UnicodeDecodeError:
        raise _not_utf8(path, name) from None
    if not header or not any(c.strip() for c in header):
        raise DataFormatError(f"{key}.source", f"{path} has no header row (a CSV source names its columns in "
                                               f"its first line)")
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise DataFormatError(name, f"the header names column(s) {repeated} more than once", row=1)
    return Features({column: Value("string") for column in header})


_FILE_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: hash each file once


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def sources_fingerprint(specs: Iterable[SourceSpec]) -> str:
    """One hash of the content of every local source in ``specs`` (a file; a directory: every file under
    it, by relative path), so anything keyed by it changes when a row is appended or edited — the config
    only names the path. Builtin sources and paths that do not exist add their name only (loading them
    fails with its own error). Each file is read once per process for a given size and mtime."""
    digest = hashlib.sha256()
    for spec in specs:
        digest.update(spec.source.encode())
        path = Path(spec.source).expanduser()
        if spec.source.startswith(BUILTIN_PREFIX) or not path.exists():
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(f"{file.relative_to(path) if path.is_dir() else ''}:{_file_sha256(file)}".encode())
    return digest.hexdigest()[:16]


def _not_utf8(path: Path, name: str) -> DataFormatError:
    """The error for a text file that is not UTF-8, naming its first such line (a row of a JSONL/CSV file)."""
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return DataFormatError(name, f"not UTF-8 text (byte 0x{line[exc.start]:02x} at column {exc.start + 1}): "
                                         f"save the file as UTF-8", row=number)
    return DataFormatError(name, "not UTF-8 text: save the file as UTF-8")


def source_format(raw: RawSource, spec: SourceSpec) -> str:
    """The source's format: ``spec.format``, or ``detect_format`` on its renamed columns and first
    row. Raises ``DataFormatError`` naming the source when a mapped column is absent or nothing
    matches."""
    for theirs, ours in spec.columns.items():
        if theirs not in raw.column_names:
            raise DataFormatError(raw.name, f"missing column (columns: [{', '.join(raw.column_names)}])",
                                  field=theirs, mapped_to=ours)
    if spec.format != "auto":
        return spec.format
    renamed_cols = [spec.columns.get(c, c) for c in raw.column_names]
    first = {spec.columns.get(k, k): v for k, v in raw.rows[0].items()}
    try:
        return detect_format(renamed_cols, first)
    except DataFormatError as exc:
        raise DataFormatError(raw.name, exc.problem) from None


# a forced format that fails this many first rows in the same field, the same way, does not fit the source
SAME_ERROR_ROWS = 3


def _normalize_source(raw: RawSource, spec: SourceSpec, role: str, errors: list[str] | None = None,
                      max_errors: int = MAX_CHECK_ERRORS) -> tuple[str, list[Example]]:
    fmt = source_format(raw, spec)
    examples: list[Example] = []
    held: list[DataFormatError] = []  # a forced format's first failures, while they could all be one misfit
    misfit_possible = spec.format != "auto"
    for row, number in zip(raw.rows, raw.row_numbers, strict=True):
        try:
            examples.append(normalize(row, fmt, f"{raw.name}:row {number}", role=role, columns=spec.columns))
        except DataFormatError as exc:
            if errors is None:
                raise
            held.append(exc)
            if misfit_possible and len({(f.field, f.problem) for f in held}) == 1:
                if len(held) < SAME_ERROR_ROWS:
                    continue
                # one line, not one per row: the forced format does not fit this file
                errors.append(f"{exc.file}: rows {held[0].row}–{exc.row}: {str(exc).split(f'row {exc.row}: ', 1)[-1]}"
                              f" — format {fmt} (forced) does not fit this source (columns: "
                              f"[{', '.join(raw.column_names)}]); remove format: to detect it")
                return fmt, examples
            misfit_possible = False
            errors.extend(str(f) for f in held)
            held = []
            if len(errors) >= max_errors:
                break
        else:
            misfit_possible = False
            if held and errors is not None:
                errors.extend(str(f) for f in held)
                held = []
    if errors is not None:
        errors.extend(str(f) for f in held)
    return fmt, examples


def load_source(spec: SourceSpec, role: str, *, key: str, cache_dir: str | Path, seed: int = 0,
                builtins: Mapping[str, BuiltinGenerator] | None = None) -> list[Example]:
    """Every row of one source, normalized and validated for ``role`` (no fraction applied).
    Raises ``DataFormatError`` at the first bad row (file, row, field) or source problem."""
    raw = read_source(spec, key=key, cache_dir=cache_dir, seed=seed, builtins=builtins)
    return _normalize_source(raw, spec, role)[1]


# --------------------------------------------------------------------------------------------
# mixing


def fraction_count(n_rows: int, fraction: float) -> int:
    """Rows kept from ``n_rows`` at ``fraction``: ``floor(fraction · n)`` as alignment-handbook's
    ``dataset_mixer`` (``int(frac * len(ds))``), robust to float error (0.29 · 100 → 29, not 28),
    and at least 1 from a non-empty source (a positive fraction never silently empties one)."""
    if n_rows <= 0:
        return 0
    return min(n_rows, max(1, math.floor(fraction * n_rows + 1e-9)))


def _source_rng(seed: int, spec: SourceSpec) -> random.Random:
    material = json.dumps([seed, spec.source, spec.split, spec.format, spec.columns, spec.params], sort_keys=True,
                          default=str)
    return random.Random(int(hashlib.sha256(material.encode()).hexdigest()[:16], 16))


def take_fraction(examples: Sequence[Example], spec: SourceSpec, seed: int) -> list[Example]:
    """A seeded random subset of ``fraction_count(len, spec.fraction)`` rows, in file order.

    The RNG is keyed by ``seed`` and the spec itself (source, split, format, columns, params), not
    by the source's position, so a source's subset does not change when other sources are added
    or reordered. Subsets are nested: a larger fraction keeps every row a smaller one kept.
    """
    n = len(examples)
    k = fraction_count(n, spec.fraction)
    if k == n:
        return list(examples)
    order = list(range(n))
    _source_rng(seed, spec).shuffle(order)
    return [examples[i] for i in sorted(order[:k])]


def load_role(specs: Sequence[SourceSpec | Mapping[str, Any]], role: str, seed: int,
              builtins: Mapping[str, BuiltinGenerator] | None = None, *, cache_dir: str | Path,
              key_prefix: str | None = None) -> list[Example]:
    """Every source of one role, validated, subset by fraction, concatenated in spec order.

    ``role``: one of ``formats.ROLES``. ``specs``: ``SourceSpec``s (or their dicts, validated).
    Every row of every source is normalized and validated before anything is returned; the
    first bad row raises ``DataFormatError`` with file, row and field, and a source problem names
    the config key (``<key_prefix>[i].source``, ``key_prefix`` defaulting to
    ``data.sources.<role>``). Each source's ``fraction`` is then applied (``take_fraction``:
    deterministic under ``seed``, independent of the other sources). No shuffle of the
    concatenation: the trainer's sampler shuffles.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
    prefix = key_prefix or f"data.sources.{role}"
    loaded: list[tuple[SourceSpec, list[Example]]] = []
    for i, item in enumerate(specs):
        spec = as_spec(item, f"{prefix}[{i}]")
        loaded.append((spec, load_source(spec, role, key=f"{prefix}[{i}]", cache_dir=cache_dir, seed=seed,
                                         builtins=builtins)))
    out: list[Example] = []
    for spec, examples in loaded:
        out.extend(take_fraction(examples, spec, seed))
    return out


# --------------------------------------------------------------------------------------------
# held-out split and contamination


def _unit_hash(seed: int, example_id: str) -> float:
    return int(hashlib.sha1(f"{seed}:{example_id}".encode()).hexdigest()[:15], 16) / 16**15


def in_heldout(example_id: str, fraction: float, seed: int) -> bool:
    """Whether the prompt ``example_id`` falls in the held-out ``fraction`` (``split_heldout``'s rule:
    ``sha1(f"{seed}:{id}")`` as a number in [0, 1) below ``fraction``): the same prompt always lands on
    the same side, whatever else is split with it."""
    return _unit_hash(seed, example_id) < fraction


def split_heldout(examples: Sequence[Example], eval_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Split by a stable hash of the prompt, never by position: a row goes to eval when
    ``sha1(f"{seed}:{example.id}")`` as a number in [0, 1) is below ``eval_fraction``.

    The same prompt (same ``id``) always lands on the same side, whatever the file order or the
    other rows, and all rows sharing a prompt land together — so the split itself never
    contaminates. The eval share is ``eval_fraction`` in expectation over distinct prompts (not
    exactly); an empty side is logged as a warning. Order within each side is the input order.
    Raises ``ValueError`` unless ``0 <= eval_fraction < 1``.
    """
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    train, held = [], []
    for example in examples:
        (held if in_heldout(example.id, eval_fraction, seed) else train).append(example)
    if examples and eval_fraction > 0 and not held:
        logger.warning("split_heldout: no prompt fell in the %.3f eval share of %d rows", eval_fraction,
                       len(examples))
    return train, held


def contamination(train: Iterable[Example], eval: Iterable[Example]) -> list[str]:
    """Prompt ids present in both sides (sorted), e.g. an eval file that repeats training
    prompts."""
    train_ids = {e.id for e in train}
    return sorted({e.id for e in eval} & train_ids)


# --------------------------------------------------------------------------------------------
# profile


def _responses(example: Example) -> list[Any]:
    return [r for r in (example.completion, example.chosen, example.rejected) if r is not None]


def profile(examples: Sequence[Example], tokenizer: Any, max_length: int, *, prompt_template: str = "{prompt}",
            system_prompt: str | None = None) -> dict[str, Any]:
    """Token statistics of rows as the model will see them (``render_prompt`` /
    ``render_response`` / ``tokenize_pair``).

    Returns ``{"rows", "mean_prompt_tokens", "responses", "mean_response_tokens" (over every
    completion, chosen and rejected; 0.0 when none), "truncated_rows", "truncation_rate" (rows
    whose prompt + longest response exceeds ``max_length``, or whose prompt alone does),
    "max_length", "formats" ({"conversational/preference": n, ...})}``.
    """
    prompt_tokens, response_tokens, truncated = [], [], 0
    kinds: Counter[str] = Counter()
    for example in examples:
        kinds[example.kind] += 1
        prompt_text = render_prompt(example, tokenizer, prompt_template, system_prompt)
        lengths = []
        context = example.prompt if isinstance(example.prompt, list) else None
        for response in _responses(example):
            p_ids, r_ids = tokenize_pair(prompt_text, render_response(response, tokenizer, context), tokenizer)
            lengths.append(len(r_ids))
        n_prompt = len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
        prompt_tokens.append(n_prompt)
        response_tokens.extend(lengths)
        if n_prompt + max(lengths, default=0) > max_length:
            truncated += 1
    n = len(prompt_tokens)
    return {
        "rows": n,
        "mean_prompt_tokens": sum(prompt_tokens) / n if n else 0.0,
        "responses": len(response_tokens),
        "mean_response_tokens": sum(response_tokens) / len(response_tokens) if response_tokens else 0.0,
        "truncated_rows": truncated,
        "truncation_rate": truncated / n if n else 0.0,
        "max_length": max_length,
        "formats": dict(sorted(kinds.items())),
    }


# --------------------------------------------------------------------------------------------
# check


def check_sources(specs_by_role: Mapping[str, Sequence[SourceSpec | Mapping[str, Any]]], *, cache_dir: str | Path,
                  seed: int = 0, builtins: Mapping[str, BuiltinGenerator] | None = None,
                  max_errors: int = MAX_CHECK_ERRORS, key_prefix: str = "data.sources") -> CheckReport:
    """Validate every source of every role, collecting up to ``max_errors`` errors across files
    instead of stopping at the first (for ``alignflow data check``; exit with
    ``report.exit_code``: 1 on any bad row or source).

    ``specs_by_role``: ``{"sft": [...], "preferences": [...], ...}`` — keys are ``formats.ROLES``.
    Every error is the same message ``load_role`` would raise. Never raises for bad data; an
    invalid spec dict or unknown role is reported as an error under its config key.
    """
    errors: list[str] = []
    reports: list[SourceReport] = []
    for role, specs in specs_by_role.items():
        if role not in ROLES:
            errors.append(f"{key_prefix}.{role}: unknown role '{role}' (expected one of {', '.join(ROLES)})")
            continue
        for i, item in enumerate(specs):
            if len(errors) >= max_errors:
                break
            key = f"{key_prefix}.{role}[{i}]"
            source = item.source if isinstance(item, SourceSpec) else str(dict(item).get("source", "?"))
            report = SourceReport(key=key, role=role, source=source)
            reports.append(report)
            before = len(errors)
            try:
                spec = as_spec(item, key)
                raw = read_source(spec, key=key, cache_dir=cache_dir, seed=seed, builtins=builtins)
                report.rows = len(raw.rows)
                report.format, _ = _normalize_source(raw, spec, role, errors, max_errors)
            except DataFormatError as exc:
                errors.append(str(exc))
            report.errors = len(errors) - before
    return CheckReport(ok=not errors, errors=errors[:max_errors], truncated=len(errors) >= max_errors,
                       sources=reports)
