"""The ``resnet-deploy`` group: its error handling, and the commands it holds.

Library errors become one ``Error:`` line with the error's own exit code, Ctrl-C and SIGTERM a
clean exit; ``--debug`` shows tracebacks instead. Each command lives in the module of its name.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any

import click

from resnet_deploy import __version__
from resnet_deploy.errors import ResnetDeployError, Terminated

EXIT_SIGINT = 130  # 128 + SIGINT, as shells report it
EXIT_SIGTERM = 143  # 128 + SIGTERM


class ToolError(click.ClickException):
    """A library error as a one-line message with the error's own exit code, led by the flags
    of the option fields it names (``slo_p99_ms`` -> ``--slo-p99-ms``)."""

    def __init__(self, error: ResnetDeployError, command: click.Command | None = None) -> None:
        flags = {param.name: param.opts[0] for param in command.params} if command else {}
        named = [flags[option] for option in error.options if option in flags]
        message = str(error)
        super().__init__(f"{', '.join(named)}: {message}" if named else message)
        self.exit_code = error.exit_code


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


class Group(click.Group):
    """Turns library and OS errors, Ctrl-C and SIGTERM into clean exits; ``--debug`` shows
    tracebacks. SIGTERM raises where the program is, like Ctrl-C, so every ``finally`` and
    context manager removes its temporary files on the way out."""

    def invoke(self, ctx: click.Context) -> Any:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return super().invoke(ctx)
        except ResnetDeployError as exc:
            if ctx.meta.get("debug"):
                raise
            name = ctx.invoked_subcommand
            raise ToolError(exc, self.get_command(ctx, name) if name else None) from None
        except MemoryError:
            if ctx.meta.get("debug"):
                raise
            raise ToolError(
                ResnetDeployError("out of memory: try a smaller batch size or image size")
            ) from None
        except OSError as exc:  # a file the library did not expect to be unreadable
            if ctx.meta.get("debug"):
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            raise ToolError(ResnetDeployError(f"{where}{exc.strerror or exc}")) from None
        except KeyboardInterrupt as exc:
            if ctx.meta.get("debug"):
                raise
            terminated = isinstance(exc, Terminated)
            code = EXIT_SIGTERM if terminated else EXIT_SIGINT
            click.echo(
                f"\n{'Terminated' if terminated else 'Interrupted'}; nothing was written.",
                err=True,
            )
            if getattr(exc, "native_work_running", False):
                # Native threads that cannot be stopped (LoadGen's) would call into an
                # interpreter shutting down; our files are already removed, so end here.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            sys.exit(code)
        finally:
            signal.signal(signal.SIGTERM, previous)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="resnet-deploy")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """PyTorch ResNet to production through ONNX: export, verify, benchmark.

    \b
    Example:
      resnet-deploy export -o resnet50.onnx
    """
    ctx.meta["debug"] = debug


COMMANDS = (
    "bench",
    "doctor",
    "export",
    "optimize",
    "page",
    "predict",
    "profile",
    "run",
    "serve",
    "triton",
    "tune",
    "verify",
)
for name in COMMANDS:  # each command is the ``command`` of the module of its name
    main.add_command(importlib.import_module(f"resnet_deploy.cli.{name}").command)
