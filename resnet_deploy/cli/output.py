"""The one way a command reports: progress on stderr, the result as JSON and text, the exit code.

``reporting`` gives the library its progress callback: a ``... step`` line on stderr per step,
and on a terminal a status line under them with the running step's seconds and, where the library
counts (calibration images, batch sizes, candidates), a bar: a long step visibly runs rather than
hangs.

``writes`` checks every output of a command against its inputs and each other before the command
does any work; ``finish`` then writes the JSON record, prints the text (unless stdout holds the
JSON record alone) and exits non-zero when the result failed.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.files import STDOUT, check_outputs
from resnet_deploy.report.records import write_json
from resnet_deploy.steps import Progress


def progress(step: str, done: int | None = None, total: int | None = None) -> None:
    """The library's progress callback: a line per step on stderr, so stdout stays clean.

    A counted step is announced once, with its total, not once per item: a log file gets one
    line for a calibration of 300 images, not 300."""
    if done is None:
        click.echo(f"... {step}", err=True)
    elif done == 0:
        click.echo(f"... {step} ({total} in all)" if total else f"... {step}", err=True)


class StatusLine:
    """``progress`` plus one line under it, redrawn in place: the running step, its seconds and,
    for a counted step, a bar with ``done/total``."""

    TICK_S = 0.25
    SPINNER = "|/-\\"
    BAR_WIDTH = 24

    def __init__(self) -> None:
        self.step: str | None = None
        self.count: tuple[int, int | None] | None = None
        self.started = 0.0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.spinner = itertools.cycle(self.SPINNER)
        self.ticker = threading.Thread(target=self.tick, daemon=True)

    def __call__(self, step: str, done: int | None = None, total: int | None = None) -> None:
        with self.lock:
            if step != self.step or done is None or done == 0:
                self.clear()
                progress(step, done, total)
                self.step, self.started = step, time.monotonic()
            self.count = None if done is None else (done, total)
            self.draw()

    def tick(self) -> None:
        while not self.done.wait(self.TICK_S):
            with self.lock:
                self.draw()

    def draw(self) -> None:
        if self.step is None:
            return
        seconds = time.monotonic() - self.started
        line = f"{next(self.spinner)} {seconds:3.0f} s  {self.step}"
        if self.count is not None:
            done, total = self.count
            if total:
                filled = round(self.BAR_WIDTH * min(done, total) / total)
                bar = "#" * filled + "-" * (self.BAR_WIDTH - filled)
                line += f"  [{bar}] {done}/{total}"
            else:
                line += f"  {done}"
        width = shutil.get_terminal_size().columns
        click.echo("\r\033[K" + line[: max(width - 1, 0)], err=True, nl=False)

    def clear(self) -> None:
        click.echo("\r\033[K", err=True, nl=False)

    def close(self) -> None:
        self.done.set()
        if self.ticker.is_alive():
            self.ticker.join()
        self.clear()


@contextmanager
def reporting(json_out: str | None) -> Iterator[Progress]:
    """The progress callback for one library call: plain ``progress`` lines, with a status line
    when stderr is a terminal and stdout does not carry the JSON record. The status line is
    cleared on the way out, error or not, before the command prints its result."""
    if json_out == STDOUT or not sys.stderr.isatty():
        yield progress
        return
    status = StatusLine()
    status.ticker.start()
    try:
        yield status
    finally:
        status.close()


def writes(
    files: Iterable[str] = (),
    *,
    folders: Iterable[str] = (),
    inputs: Iterable[str] = (),
    defaults: dict[str, Callable[[dict[str, Any]], Any]] | None = None,
) -> Callable:
    """Check the named output parameters against the named inputs and each other, before the
    command runs: an input is never overwritten, even with --force (see files.check_outputs).
    ``defaults`` fills an output the user left out (``ARCH.onnx``) so that it is checked too."""

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def checked(**kwargs: Any) -> Any:
            for name, default in (defaults or {}).items():
                if kwargs.get(name) is None:
                    kwargs[name] = default(kwargs)

            def values(names: Iterable[str]) -> list[Any]:
                found = []
                for name in names:
                    value = kwargs.get(name)
                    found += list(value) if isinstance(value, (tuple, list)) else [value]
                return found

            sources = [v for v in values(inputs) if v is not None and os.path.lexists(str(v))]
            check_outputs(
                values(files),
                folders=values(folders),
                inputs=sources,
                force=kwargs.get("force", False),
            )
            return command(**kwargs)

        return checked

    return decorate


def finish(
    result: Any,
    json_out: str | None,
    force: bool,
    *,
    text: Callable[[Any], str | None] | None = None,
    err: bool = False,
    files: Iterable[tuple[Path | None, Callable[[Any, Path], Any]]] = (),
    wrote: Iterable[Path | str | None] = (),
    notes: Iterable[str] = (),
    failed: bool = False,
    exit_code: int = 1,
    error: ResnetDeployError | None = None,
) -> None:
    """Report ``result`` and end the command.

    In order: the JSON record to ``json_out`` (a file already checked by ``writes``, or ``-``
    for stdout); each of ``files`` given a path, as ``write(result, path)``; unless stdout holds
    the JSON record, ``text(result)`` (to stderr with ``err``) and a ``wrote PATH`` line for each
    of ``wrote`` given; ``notes`` on stderr whatever the output. Then ``error`` is raised (a
    one-line message with its own exit code), or the command exits with ``exit_code`` when
    ``failed``.
    """
    if json_out is not None:
        record = write_json(result, json_out, replace=force)
        if record is not None:
            click.echo(record, nl=False)
    for path, write in files:
        if path is not None:
            write(result, path)
    if json_out != STDOUT:
        shown = text(result) if text is not None else None
        if shown is not None:
            click.echo(shown, err=err)
        for path in wrote:
            if path is not None:
                click.echo(f"wrote {path}")
    for note in notes:
        click.echo(note, err=True)
    if error is not None:
        raise error
    if failed:
        sys.exit(exit_code)
