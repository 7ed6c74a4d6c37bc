"""LoadGen's own logs, read back: the summary, the detail records, the accuracy log.

We report LoadGen's verdict and figures as LoadGen wrote them, so they are parsed from its
files rather than recomputed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Summary:
    """``mlperf_log_summary.txt``: its "key : value" lines, Yes/NO checks and bullet lists."""

    values: dict[str, str] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)  # "Min duration satisfied": True
    recommendations: list[str] = field(default_factory=list)
    early_stopping: list[str] = field(default_factory=list)


def parse_summary(text: str) -> Summary:
    summary = Summary()
    section: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or set(line) == {"="}:
            section = None
            continue
        if line == "Recommendations:":
            section = summary.recommendations
        elif line == "Early Stopping Result:":
            section = summary.early_stopping
        elif section is not None and line.startswith("* "):
            section.append(line[2:])
        elif section is not None and raw.startswith(" ") and section:
            section[-1] += " " + line  # a bullet LoadGen wrapped onto several lines
        else:
            section = None
            key, sep, value = line.partition(":")
            if not sep:
                continue
            key, value = key.strip(), value.strip()
            if key.endswith("satisfied") and value in ("Yes", "NO"):
                summary.checks[key] = value == "Yes"
            else:
                summary.values.setdefault(key, value)
    return summary


def parse_detail(text: str) -> dict[str, Any]:
    """``mlperf_log_detail.txt``'s MLLOG records: the last value of each key, errors, warnings."""
    values: dict[str, Any] = {}
    errors: list[str] = []
    warnings: list[str] = []
    for line in text.splitlines():
        if not line.startswith(":::MLLOG "):
            continue
        try:
            record = json.loads(line[len(":::MLLOG ") :])
        except json.JSONDecodeError:
            continue
        values[record.get("key")] = record.get("value")
        meta = record.get("metadata", {})
        if meta.get("is_error"):
            errors.append(str(record.get("value")))
        elif meta.get("is_warning"):
            warnings.append(str(record.get("value")))
    return {"values": values, "errors": errors, "warnings": warnings}


def read_accuracy_log(path: Path) -> dict[int, int]:
    """``mlperf_log_accuracy.json``: the top-1 class LoadGen logged for each sample index."""
    entries = json.loads(Path(path).read_text() or "[]")
    return {
        int(e["qsl_idx"]): int(np.frombuffer(bytes.fromhex(e["data"]), np.int32)[0])
        for e in entries
    }


def parse_number(text: str | None, kind: type = float) -> Any:
    try:
        return kind(text) if text is not None else None
    except ValueError:
        return None
