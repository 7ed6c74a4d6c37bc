"""One exception family; the CLI turns each into a one-line message and an exit code.

The library speaks in its own terms: a message names the concept ("the p99 bound"), and
``options`` names the option fields it concerns (``slo_p99_ms``), as the options dataclasses
spell them. A front end maps those to its own spelling: the CLI to its flags, a Python caller
to the keyword arguments it passed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager


class ResnetDeployError(Exception):
    """Base of every error this toolkit raises on purpose. Exit code 2: bad usage or input."""

    exit_code = 2

    def __init__(self, message: str = "", *, options: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.options = tuple(options)


class InputError(ResnetDeployError):
    """A file, flag or value the user gave cannot be used."""


class OutputError(ResnetDeployError):
    """An output could not be written (a full disk, no permission); nothing was left behind."""


class CheckpointError(InputError):
    """A weights file cannot be loaded safely or does not fit the model."""


class ProviderError(ResnetDeployError):
    """An execution provider was asked for and cannot run here."""


class NumericsError(ResnetDeployError):
    """The ONNX model does not compute what the PyTorch model computes."""

    exit_code = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so cleanup runs exactly as for Ctrl-C."""


class ToolFailure(ResnetDeployError):
    """A tool we call (the exporter, onnxsim, ONNX Runtime's quantizer, LoadGen) failed on input
    we had accepted: not the user's mistake, so not exit 2."""

    exit_code = 3


@contextmanager
def failures_of(tool: str) -> Iterator[None]:
    """Turn an unexpected exception from ``tool`` into a one-line ToolFailure naming it."""
    try:
        yield
    except (ResnetDeployError, MemoryError):
        raise
    except Exception as exc:
        first_line = str(exc).strip().partition("\n")[0][:300]
        raise ToolFailure(f"{tool} failed: {type(exc).__name__}: {first_line}") from exc
