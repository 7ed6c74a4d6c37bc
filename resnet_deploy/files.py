"""Output files: checked before any work starts, and written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from resnet_deploy.errors import InputError, OutputError


def check_output_path(path: Path, *, force: bool, inputs: Iterable[Path] = ()) -> Path:
    """Refuse an output that cannot or must not be written, before anything expensive runs."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: output folder {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a file name")
    for source in inputs:
        if path.exists() and Path(source).exists() and path.samefile(source):
            raise InputError(f"{path}: output would overwrite the input file")
    if path.exists() and not force:
        raise InputError(f"{path}: already exists (pass --force to overwrite it)")
    return path


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    The temporary file lives in the target folder so the final rename is atomic. On any error,
    Ctrl-C included, it is removed and ``path`` keeps whatever it held before.
    """
    path = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write in {path.parent} ({exc.strerror})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; a user's output gets the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a quota, a vanished folder
        tmp.unlink(missing_ok=True)
        raise OutputError(
            f"{path}: writing failed, nothing written ({exc.strerror or exc})"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
