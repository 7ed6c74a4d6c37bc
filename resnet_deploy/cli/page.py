"""``resnet-deploy page``: a run folder's page, rendered again from its records."""

from __future__ import annotations

from pathlib import Path

import click

from resnet_deploy.cli.options import force_option, output_option
from resnet_deploy.cli.output import finish


@click.command("page")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@output_option("Page [default: FOLDER/report.html].")
@force_option("Overwrite an existing page.")
def command(folder: Path, output: Path | None, force: bool) -> None:
    """Render a run folder's page again, from its report.json and any profile or tune records.

    \b
    Examples:
      resnet-deploy page resnet-deploy-run --force
      resnet-deploy page resnet-deploy-run -o team-report.html
    """
    from resnet_deploy.report.page import write_page

    finish(None, None, force, wrote=[write_page(folder, output=output, force=force)])
