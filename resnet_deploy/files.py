"""Output files: checked before any work starts, and written whole or not at all.

Every file or folder a command writes passes ``check_outputs`` before the work begins, and every
file is written through ``atomic_output``. The two together are why a typo on the command line
(``--json MODEL.onnx``, ``-o /dev/null``) can never cost a user a file: an input is never an
output, a device, FIFO or symlink is never replaced, and an existing file is replaced only with
``--force``, which is checked again at the moment of the rename.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from resnet_deploy.errors import InputError, OutputError

STDOUT = "-"  # where a command documents it, ``-`` means standard output, not a file


def file_kind(mode: int) -> str:
    """What ``lstat`` found, in words for an error message."""
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a regular file")


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"{path}: cannot be checked ({exc.strerror})") from None


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` names after symlinks, or None if nothing is there."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _check_folder_writable(path: Path, folder: Path) -> None:
    found = _lstat(folder)
    if found is None:
        raise InputError(f"{path}: output folder {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{path}: {folder} is {file_kind(found.st_mode)}, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{path}: no permission to write in {folder}")


def _check_not_input(path: Path, inputs: Iterable[Path | str | None], what: str) -> None:
    """Refuse, even with --force, an output that is an input: the same file (through any link),
    a folder that holds an input, or an existing file inside an input folder (a calibration or
    image folder is read whole, so each file in it is an input)."""
    target = _identity(path)
    resolved = path.resolve()
    for source in inputs:
        if source is None or str(source) == STDOUT:
            continue
        source = Path(source)
        same = (target is not None and target == _identity(source)) or source.resolve() == resolved
        if same or (what == "folder" and source.resolve().is_relative_to(resolved)):
            raise InputError(f"{path}: output would overwrite the input {source} (even --force)")
        if target is not None and source.is_dir() and resolved.is_relative_to(source.resolve()):
            raise InputError(f"{path}: output would overwrite a file of the input folder {source}")


def check_input_file(path: Path | str, what: str = "file") -> Path:
    """An input that must be a regular file: a folder, FIFO or device is named as such (a FIFO
    would block the reader forever), a missing one is "not found"."""
    path = Path(path)
    try:
        found = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise InputError(f"{path}: {what} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(found.st_mode):
        raise InputError(f"{path}: not a regular file ({file_kind(found.st_mode)})")
    return path


def check_output_path(path: Path, *, force: bool, inputs: Iterable[Path | str | None] = ()) -> Path:
    """Refuse an output file that cannot or must not be written, before anything runs."""
    path = Path(path)
    _check_folder_writable(path, path.parent)
    found = _lstat(path)
    if found is not None and not stat.S_ISREG(found.st_mode):
        raise InputError(
            f"{path}: is {file_kind(found.st_mode)}; an output must be a new or regular file"
        )
    _check_not_input(path, inputs, "file")
    if found is not None and not force:
        raise InputError(f"{path}: already exists (pass --force to overwrite it)")
    return path


def check_output_folder(folder: Path, *, inputs: Iterable[Path | str | None] = ()) -> Path:
    """A folder a command fills (a run folder, a repository): a folder or nothing yet; never
    one that holds an input, since replacing it would delete that input. Whether its contents
    may be replaced (``--force``) is the owning command's rule."""
    folder = Path(folder)
    _check_folder_writable(folder, folder.parent)
    found = _lstat(folder)
    if found is not None and not stat.S_ISDIR(found.st_mode):
        raise InputError(f"{folder}: is {file_kind(found.st_mode)}, expected a folder")
    if found is not None and not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{folder}: no permission to write in it")
    _check_not_input(folder, inputs, "folder")
    return folder


def check_outputs(
    files: Iterable[Path | str | None] = (),
    *,
    folders: Iterable[Path | str | None] = (),
    inputs: Iterable[Path | str | None] = (),
    force: bool,
) -> None:
    """Check every output of one command together: each on its own, and no two the same or one
    inside another's folder (``run --json RUN/report.json`` would race the run's own file)."""
    inputs = [i for i in inputs if i is not None]
    file_paths = [Path(f) for f in files if f is not None and str(f) != STDOUT]
    folder_paths = [Path(f) for f in folders if f is not None]
    seen: dict[Path, Path] = {}
    for path in [*file_paths, *folder_paths]:
        key = path.resolve()
        if key in seen:
            raise InputError(f"{path}: given as two outputs of the same command")
        seen[key] = path
    for path in file_paths:
        for folder in folder_paths:
            if path.resolve().is_relative_to(folder.resolve()):
                raise InputError(f"{path}: inside {folder}, which this command writes itself")
    for path in file_paths:
        check_output_path(path, force=force, inputs=inputs)
    for folder in folder_paths:
        check_output_folder(folder, inputs=inputs)


@contextmanager
def atomic_output(path: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary file lives in the target folder so the final step is atomic. Without
    ``replace``, that step is a hard link, which fails if anything appeared at ``path`` while the
    work ran; with it, only a regular file is ever replaced. On any error, Ctrl-C and SIGTERM
    included, the temporary file is removed and ``path`` keeps whatever it held before.
    """
    path = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write in {path.parent} ({exc.strerror})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; a user's output gets the usual mode
        yield tmp
        _move_into_place(tmp, path, replace=replace)
    except OSError as exc:  # a full disk, a quota, a vanished folder
        raise OutputError(
            f"{path}: writing failed, nothing written ({exc.strerror or exc})"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _move_into_place(tmp: Path, path: Path, *, replace: bool) -> None:
    found = _lstat(path)
    if found is not None and not stat.S_ISREG(found.st_mode):
        raise OutputError(f"{path}: is now {file_kind(found.st_mode)}; nothing written")
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # no-replace: fails with EEXIST if the target exists by now
    except FileExistsError:
        raise OutputError(
            f"{path}: appeared while this command ran; not replaced (pass --force to overwrite)"
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(path):  # a file system without hard links: the narrowest check left
            raise OutputError(f"{path}: appeared while this command ran; not replaced") from None
        os.rename(tmp, path)


def write_bytes_atomic(path: Path, data: bytes, *, replace: bool = False) -> None:
    with atomic_output(path, replace=replace) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path, text: str, *, replace: bool = False) -> None:
    write_bytes_atomic(path, text.encode(), replace=replace)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_of(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB chunks: records name the exact file they measured."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
