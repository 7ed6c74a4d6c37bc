"""The tool as users run it: a console script by its full path, from a shell without the venv.

A service, a cron job or a container's CMD starts ``<venv>/bin/resnet-deploy`` without
activating the venv, so the first ``python3`` on PATH is some other interpreter with other
package versions. ``foreign_python`` makes such an interpreter (a venv with numpy 2, where ours
has what PyTriton pins); ``user_environment`` is the shell that puts it first; ``run_cli`` runs a
command through the console script; ``install_as_users_do`` builds the wheel and installs it in
a fresh venv as the README does.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

FOREIGN_NUMPY = "numpy>=2,<3"  # ours is pinned below 2 by PyTriton: a different major version
INSTALL_TIMEOUT_S = 900.0  # a cold pip cache downloads torch and Triton's wheel
COMMAND_TIMEOUT_S = 600.0
SCRIPT = "resnet-deploy"


@dataclass(frozen=True)
class ForeignPython:
    """Another interpreter's venv, with other package versions than the one under test."""

    prefix: Path
    numpy_version: str

    @property
    def bin(self) -> Path:
        return self.prefix / "bin"

    @property
    def site_packages(self) -> Path:
        return Path(sysconfig.get_paths(vars={"base": str(self.prefix)})["purelib"])


def make_foreign_python(folder: Path) -> ForeignPython:
    """A venv in ``folder`` holding numpy 2; pip's output in the error if it cannot be made."""
    call([sys.executable, "-m", "venv", "--without-pip", str(folder)])
    python = folder / "bin" / "python3"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    call([*pip, FOREIGN_NUMPY], timeout_s=INSTALL_TIMEOUT_S)
    return ForeignPython(folder, package_version(python, "numpy"))


def package_version(python: Path, name: str) -> str:
    """The version of package ``name`` that interpreter ``python`` has."""
    code = f"import importlib.metadata as m; print(m.version({name!r}))"
    return call([str(python), "-c", code]).stdout.strip()


def user_environment(foreign: ForeignPython, **variables: str) -> dict[str, str]:
    """This environment as a service gives it: no venv activated (VIRTUAL_ENV unset, this
    venv's bin off PATH), ``foreign``'s bin first on PATH, none of the PYTHON* variables this
    shell may hold; then ``variables`` (e.g. PYTHONPATH) on top."""
    venvs = {Path(sys.executable).parent, Path(sys.prefix, "bin")}
    if os.environ.get("VIRTUAL_ENV"):
        venvs.add(Path(os.environ["VIRTUAL_ENV"], "bin"))
    own = {os.path.realpath(p) for p in venvs}
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    path = [str(foreign.bin), *(p for p in path if os.path.realpath(p) not in own)]
    environment = {
        name: value
        for name, value in os.environ.items()
        if name != "VIRTUAL_ENV" and not name.startswith("PYTHON")
    }
    return {**environment, "PATH": os.pathsep.join(path), **variables}


def dev_script() -> Path:
    """The console script of the venv running these tests (pip's editable install)."""
    script = Path(sys.executable).parent / SCRIPT
    assert script.is_file(), f"{script} missing: install the project (pip install -e .)"
    return script


def run_cli(
    script: Path,
    *args: object,
    env: dict[str, str],
    cwd: Path,
    timeout_s: float = COMMAND_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """``SCRIPT ARGS`` in ``env`` from ``cwd``, to its end; exit 0, or AssertionError with the
    end of its stderr."""
    return call([str(script), *(str(a) for a in args)], env=env, cwd=cwd, timeout_s=timeout_s)


def install_as_users_do(repo: Path, folder: Path, env: dict[str, str]) -> Path:
    """The wheel of ``repo`` with its serve extra in a fresh venv under ``folder``, installed
    as the README does (torch's CPU build first, the version these tests run on); returns the
    venv's bin.

    The wheel is built from a copy of what it is made of, so that setuptools writes no
    ``build/`` into the checkout and no stale file from an earlier build gets into the wheel.
    """
    source = folder / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(repo / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(repo / "resnet_deploy", source / "resnet_deploy", ignore=ignore)
    dist = folder / "dist"
    call([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)])
    (wheel,) = dist.glob("*.whl")
    venv = folder / "venv"
    call([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    torch = importlib.metadata.version("torch").split("+")[0]
    call([*pip, f"torch=={torch}"], env=env, timeout_s=INSTALL_TIMEOUT_S)
    call([*pip, f"{wheel}[serve]"], env=env, timeout_s=INSTALL_TIMEOUT_S)
    return venv / "bin"


def call(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = COMMAND_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """``command`` to its end (killed past ``timeout_s``); exit 0, or AssertionError with the
    end of its stderr."""
    done = subprocess.run(
        command,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    shown = " ".join(Path(command[0]).name if i == 0 else part for i, part in enumerate(command))
    assert done.returncode == 0, f"{shown}: exit {done.returncode}\n{done.stderr[-3000:]}"
    return done
