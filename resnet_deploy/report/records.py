"""Results for people (aligned tables) and for programs (one JSON record)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from resnet_deploy.files import write_text_atomic


def to_record(value: Any) -> Any:
    """Dataclasses, paths, tuples and numpy scalars as plain JSON values; NaN/Inf as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_record(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_record(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_record(v) for v in value]
    if isinstance(value, (Path, Enum)):
        return str(value.value if isinstance(value, Enum) else value)
    if hasattr(value, "item") and callable(value.item):  # numpy and torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def to_json(value: Any) -> str:
    return json.dumps(to_record(value), indent=2, allow_nan=False) + "\n"


def write_json(value: Any, destination: str, *, replace: bool = False) -> str | None:
    """Write the record to a file atomically, or return it for stdout when ``destination`` is -."""
    text = to_json(value)
    if destination == "-":
        return text
    write_text_atomic(Path(destination), text, replace=replace)
    return None


def write_csv(rows: Sequence[Any], destination: Path, *, replace: bool = False) -> None:
    """Flat records (dataclasses or dicts) as one CSV row each; lists joined with "; "."""
    records = [to_record(row) for row in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]) if records else [])
    writer.writeheader()
    for record in records:
        writer.writerow({k: _csv_cell(v) for k, v in record.items()})
    write_text_atomic(Path(destination), buffer.getvalue(), replace=replace)


def _csv_cell(value: Any) -> Any:
    return "; ".join(map(str, value)) if isinstance(value, list) else value


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned table: text left-aligned, numbers right-aligned."""
    cells = [[format_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    numeric = [all(_is_number(row[i]) for row in rows) and rows for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3e}"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)
