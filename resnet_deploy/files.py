"""Output files: checked before any work starts, and written whole or not at all.

Every file or folder a command writes passes ``check_outputs`` before the work begins, every
file is written through ``atomic_output`` and every folder through ``staged_folder``. Together
they are why a typo on the command line (``--json MODEL.onnx``, ``-o /dev/null``) can never
cost a user a file: an input is never an output, a device, FIFO or symlink is never replaced,
and an existing file or folder is replaced only with ``--force``, which is checked again at the
moment of the rename.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
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


@contextmanager
def staged_folder(target: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``target``; rename it onto ``target`` only if the
    block succeeds, so a reader sees the old folder or the whole new one, never a mix.

    Without ``replace`` the rename succeeds only onto nothing (an empty folder left there is
    removed first, which the system does only while it is empty): of two commands writing one
    folder at once, exactly one wins and the other is refused. With it, an existing folder is
    moved aside and removed once the new one is in place. On any error, Ctrl-C and SIGTERM
    included, the temporary folder is removed.
    """
    target = Path(target)
    try:
        staging = Path(
            tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        )
    except OSError as exc:
        raise OutputError(f"{target}: cannot write in {target.parent} ({exc.strerror})") from None
    try:
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; a user's output gets the usual mode
        yield staging
        _commit_folder(staging, target, replace=replace)
    except OSError as exc:
        raise OutputError(
            f"{target}: writing failed, nothing written ({exc.strerror or exc})"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _commit_folder(staging: Path, target: Path, *, replace: bool) -> None:
    found = _lstat(target)
    if found is not None and not stat.S_ISDIR(found.st_mode):
        raise OutputError(f"{target}: is now {file_kind(found.st_mode)}; nothing written")
    aside = None
    try:
        if found is not None and replace:
            aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.rename(target, aside / target.name)
        elif found is not None:
            try:
                os.rmdir(target)  # only while empty: nobody's files are ever removed here
            except FileNotFoundError:
                pass
            except OSError:
                raise _appeared(target) from None
        try:
            rename_noreplace(staging, target)
        except FileExistsError:
            raise _appeared(target) from None
    except BaseException:
        if aside is not None and not os.path.lexists(target):
            os.rename(aside / target.name, target)
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


def _appeared(target: Path) -> OutputError:
    return OutputError(
        f"{target}: was written by another command while this one ran; not replaced "
        "(pass --force to replace it)"
    )


def rename_noreplace(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target`` only if nothing is at ``target`` (FileExistsError if
    something is), as one step of the file system where it has one.

    Linux has renameat2(RENAME_NOREPLACE) (reached through libc, which Python does not wrap).
    Elsewhere, or on a file system without it, rename(2) is used after a check: it refuses a
    non-empty folder as target by itself, so only an empty folder created in the instant
    between the check and the rename could be replaced.
    """
    renameat2 = _renameat2()
    if renameat2 is not None:
        at_fdcwd, rename_noreplace_flag = -100, 1
        done = renameat2(
            at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), rename_noreplace_flag
        )
        if done == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), str(target))
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(target))
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
        raise


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc older than glibc 2.28, or a static build
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


def read_text_file(path: Path | str, what: str = "file") -> str:
    """A text file the user gave, decoded as UTF-8: a file in another encoding (or a binary
    one) is one line naming it and where decoding failed, never a UnicodeDecodeError."""
    path = check_input_file(path, what)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: {what} cannot be read ({exc.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None


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
