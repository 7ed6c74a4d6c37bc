"""``python -m resnet_deploy``: the same command as ``resnet-deploy``."""

from resnet_deploy.cli import main

main(prog_name="resnet-deploy")
