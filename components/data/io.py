"""JSONL reading with row-level validation errors, and atomic JSONL writing. Every JSONL file the
platform reads goes through ``read_jsonl``: one place that knows about blank lines, byte-order
marks and how to name a bad row."""

from __future__ import annotations

import codecs
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from alignflow.components.platform.atomic import write_jsonl_atomic

RowT = TypeVar("RowT", bound=BaseModel)


class DataValidationError(ValueError):
    """A data row is malformed; the message names the file, the 1-based row and the field."""


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for every non-blank line. UTF-8, and a file an editor saved with
    a byte-order mark reads like one without (whatever the locale).

    Raises:
        DataValidationError: the file is missing, a line is not UTF-8 or not JSON, or not a JSON object.
    """
    path = Path(path)
    if not path.exists():
        raise DataValidationError(f"{path}: file not found")
    rows: list[tuple[int, dict[str, Any]]] = []
    data = path.read_bytes()
    # decoded line by line, so an undecodable byte is named with its row
    for number, raw in enumerate(data.removeprefix(codecs.BOM_UTF8).split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataValidationError(f"{path}: row {number}: not UTF-8 text (byte {exc.start + 1} of the row); "
                                      f"save the file as UTF-8") from None
        if not line.strip():
            continue
        try:
            payload = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataValidationError(f"{path}: row {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(payload, dict):
            raise DataValidationError(f"{path}: row {number}: expected a JSON object")
        rows.append((number, payload))
    return rows


def read_rows(path: Path, schema: type[RowT]) -> list[RowT]:
    """Every row of a JSONL file validated against ``schema``.

    Raises:
        DataValidationError: naming the file, row and field of the first bad row.
    """
    rows: list[RowT] = []
    for number, payload in read_jsonl(path):
        try:
            rows.append(schema.model_validate(payload))
        except ValidationError as exc:
            problem = exc.errors()[0]
            field = ".".join(str(p) for p in problem["loc"]) or "<row>"
            kind = "unknown field" if problem["type"] == "extra_forbidden" else problem["msg"]
            raise DataValidationError(f"{path}: row {number}: field '{field}': {kind} ({schema.__name__})") from None
    return rows


def write_rows(path: Path, rows: Sequence[BaseModel]) -> Path:
    return write_jsonl_atomic(Path(path), (row.model_dump(mode="json") for row in rows))
