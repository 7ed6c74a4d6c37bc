"""LoadGen's own logs, read back: the detail log's records, and the accuracy log.

We report LoadGen's verdict and figures as LoadGen wrote them, so they are read from its files
rather than recomputed; from ``mlperf_log_detail.txt`` alone, whose ``:::MLLOG`` lines are JSON
records with typed values (the summary text states the same numbers for people).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.errors import ResnetDeployError

DETAIL_LOG = "mlperf_log_detail.txt"
# The detail log's checks, named as LoadGen's summary names them, in its order.
CHECKS = {
    "result_perf_constraints_met": "Performance constraints satisfied",
    "result_min_duration_met": "Min duration satisfied",
    "result_min_queries_met": "Min queries satisfied",
    "early_stopping_met": "Early stopping satisfied",
}


@dataclass
class DetailLog:
    """``mlperf_log_detail.txt``: the last value of each key, and the errors and warnings."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def number(self, key: str) -> float | None:
        value = self.values.get(key)
        return float(value) if isinstance(value, int | float) else None

    def checks(self) -> dict[str, bool]:
        """Each check LoadGen made: "Min duration satisfied": True."""
        return {name: bool(self.values[key]) for key, name in CHECKS.items() if key in self.values}

    def recommendations(self) -> list[str]:
        """LoadGen's advice on an INVALID run, one sentence each (it logs them run together)."""
        text = str(self.values.get("result_invalid_reason") or "")
        return [part for part in re.split(r"(?<=\.)\s+", text.strip()) if part]

    def early_stopping(self) -> list[str]:
        """The early-stopping result's bullets, each on one line (LoadGen wraps some)."""
        text = str(self.values.get("early_stopping_result") or "")
        return [" ".join(part.split()) for part in text.split(" * ") if part.strip()]


def parse_detail(text: str) -> DetailLog:
    log = DetailLog()
    for line in text.splitlines():
        if not line.startswith(":::MLLOG "):
            continue
        try:
            record = json.loads(line[len(":::MLLOG ") :])
        except json.JSONDecodeError:
            continue
        log.values[record.get("key")] = record.get("value")
        meta = record.get("metadata", {})
        if meta.get("is_error"):
            log.errors.append(str(record.get("value")))
        elif meta.get("is_warning"):
            log.warnings.append(str(record.get("value")))
    return log


def read_detail(logs: Path) -> DetailLog:
    """The detail log LoadGen wrote into ``logs``."""
    path = Path(logs) / DETAIL_LOG
    if not path.is_file():
        raise ResnetDeployError(f"LoadGen wrote no {DETAIL_LOG} into {logs}")
    return parse_detail(path.read_text())


def read_accuracy_log(path: Path) -> dict[int, int]:
    """``mlperf_log_accuracy.json``: the top-1 class LoadGen logged for each sample index."""
    entries = json.loads(Path(path).read_text() or "[]")
    return {
        int(e["qsl_idx"]): int(np.frombuffer(bytes.fromhex(e["data"]), np.int32)[0])
        for e in entries
    }
