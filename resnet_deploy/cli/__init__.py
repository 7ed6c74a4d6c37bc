"""The ``resnet-deploy`` command line: the only package that imports click, and one nothing imports.

``group`` holds the group and its error handling; each command lives in the module of its name
(``export``, ``bench``, ...), and reads top to bottom: parse, call one library function, print.
``options`` defines every shared option and parameter type once; ``output`` is the one path from
a result to JSON, text and an exit code. Library imports stay inside the command functions, so
``resnet-deploy --help`` loads neither torch nor onnxruntime.
"""

from resnet_deploy.cli.group import main

__all__ = ["main"]
