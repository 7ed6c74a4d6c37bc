"""``resnet-deploy doctor``: what really works on this machine."""

from __future__ import annotations

import click

from resnet_deploy.cli.options import force_option, json_option
from resnet_deploy.cli.output import finish, writes


@click.command("doctor")
@json_option()
@force_option("Overwrite an existing JSON file.")
@writes(["json_out"])
def command(json_out: str | None, force: bool) -> None:
    """Say what really works here: providers tried, CUDA libraries, GPUs, versions.

    Exits 0 whatever it finds: it is a report.

    \b
    Examples:
      resnet-deploy doctor
      resnet-deploy doctor --json doctor.json
    """
    from resnet_deploy.doctor import diagnose, format_report

    finish(diagnose(), json_out, force, text=format_report)
