"""How long work reports progress: named steps, and counts where a step knows its total.

The library never prints progress; it calls a ``Progress`` callback, and the caller decides how
to show it (the CLI: a line per step on stderr, and a bar on a terminal).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Progress(Protocol):
    """``progress("step")`` announces a step; ``progress("step", done, total)`` advances it."""

    def __call__(self, step: str, done: int | None = None, total: int | None = None) -> None: ...


def no_progress(step: str, done: int | None = None, total: int | None = None) -> None:
    """The default callback of every library function: report nothing."""


def prefixed(progress: Progress, stage: str) -> Progress:
    """``progress`` with each step named after the stage it belongs to (``verify: ...``)."""

    def report(step: str, done: int | None = None, total: int | None = None) -> None:
        progress(f"{stage}: {step}", done, total)

    return report


class Steps:
    """``with steps("name"): ...`` announces the step and records its seconds in ``seconds``."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.progress(name)
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started
