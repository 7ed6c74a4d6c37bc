"""Named steps of long work: announced to a progress callback as they start, timed as they run."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Steps:
    """``with steps("name"): ...`` announces the step and records its seconds in ``seconds``."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.progress(name)
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started
