"""One exception family; the CLI turns each into a one-line message and an exit code."""

from __future__ import annotations


class ResnetDeployError(Exception):
    """Base of every error this toolkit raises on purpose. Exit code 2: bad usage or input."""

    exit_code = 2


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
