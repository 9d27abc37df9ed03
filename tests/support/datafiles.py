"""Files in every format a data source may come in, written by tests (never a public dataset)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_jsonl(path: Path, rows: list[dict[str, Any]], bom: bool = False) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def write_json(path: Path, rows: list[dict[str, Any]], bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + json.dumps(rows, ensure_ascii=False).encode("utf-8"))
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_arrow(path: Path, rows: list[dict[str, Any]]) -> Path:
    """An Arrow IPC stream file, the layout ``datasets`` itself writes (``data-*.arrow``)."""
    import pyarrow as pa

    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_saved(path: Path, rows: list[dict[str, Any]] | dict[str, list[dict[str, Any]]]) -> Path:
    from datasets import Dataset, DatasetDict

    if isinstance(rows, dict):
        DatasetDict({k: Dataset.from_list(v) for k, v in rows.items()}).save_to_disk(str(path))
    else:
        Dataset.from_list(rows).save_to_disk(str(path))
    return path


WRITERS = {"jsonl": write_jsonl, "json": write_json, "parquet": write_parquet, "arrow": write_arrow,
           "csv": write_csv}
