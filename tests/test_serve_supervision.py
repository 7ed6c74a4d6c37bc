"""`serve` watches what serves, not only a PID: a dead model instance or a crashed tritonserver
ends it with the cause and the signal named (exit 3, "a tool we call failed"), and what a
killed `serve` left is swept before the next one starts. Also the listening address: IPv6
loopback works, and any non-loopback address is said to be open to the network.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from serving import (
    START_TIMEOUT_S,
    ServedProcess,
    assert_clean_exit,
    descendants,
    launch_server,
    leftovers,
    running,
    start_server,
    stop_server,
    stubs_of,
)

pytest.importorskip("pytriton", reason="serve needs the [serve] extra (PyTriton)")

from resnet_deploy.serving.process import (
    SHM_DIR,
    serve_folder_prefix,
    sweep_leftovers,
)
from resnet_deploy.serving.server import EXPOSED, ModelServer, ServeOptions, loopback
from tests.helpers import cli

pytestmark = pytest.mark.slow
TOOL_FAILED = 3
WATCH_BOUND_S = 30.0  # serve looks every second; stopping takes the rest


def tritonserver_of(server: ServedProcess) -> psutil.Process:
    (child,) = psutil.Process(server.pid).children()
    return child


def ended_within(server: ServedProcess, seconds: float) -> int | None:
    try:
        return server.process.wait(seconds)
    except subprocess.TimeoutExpired:
        return None


def test_a_killed_model_instance_ends_serve_naming_it(r18):
    """A stub killed while serving: Triton would keep saying ready while failing every
    request; serve stops everything and exits 3, naming the instance and the signal."""
    server = start_server(r18)
    try:
        (victim,) = [p for p in stubs_of(server.pid) if "/resnet18/1/" in cmdline(p)]
        psutil.Process(victim).kill()
        code = ended_within(server, WATCH_BOUND_S)
    finally:
        stop_server(server, signal.SIGKILL)
    errors = [line for line in server.stderr().splitlines() if line.startswith("Error:")]
    assert code == TOOL_FAILED, server.stderr()[-2000:]
    assert errors == [
        f"Error: model resnet18's instance (stub pid {victim}) was killed by SIGKILL; "
        "serve stopped the server and exits"
    ]
    assert leftovers(server) == ([], [])


def test_a_crashed_tritonserver_ends_serve_naming_the_signal(r18):
    server = start_server(r18)
    try:
        tritonserver_of(server).send_signal(signal.SIGSEGV)
        code = ended_within(server, WATCH_BOUND_S)
    finally:
        stop_server(server, signal.SIGKILL)
    assert code == TOOL_FAILED, server.stderr()[-2000:]
    assert "Error: tritonserver was killed by SIGSEGV" in server.stderr()
    assert "Traceback" not in server.stderr()
    assert leftovers(server) == ([], [])


def test_what_a_killed_serve_left_is_swept_by_the_next(r18):
    """SIGKILL gives serve no chance to clean up; the next serve removes the folder, shared
    memory and stubs that carry the dead one's PID, and says so."""
    server = start_server(r18)
    dead = server.pid
    stop_server(server, signal.SIGKILL)
    folders = list(Path("/tmp").glob(f"{serve_folder_prefix(dead)}*"))
    assert folders, "a killed serve leaves its folder (else there is nothing to sweep)"
    notes = sweep_leftovers()
    assert any(f"killed serve (pid {dead})" in note for note in notes), notes
    deadline = time.monotonic() + WATCH_BOUND_S
    while stubs_of(dead) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not stubs_of(dead) and not any(folder.exists() for folder in folders)
    assert not list(SHM_DIR.glob(f"resnet-deploy-{dead}-*"))
    assert not [p for p in descendants(dead) if running(p)]


def test_ipv6_loopback_serves(r18):
    """--host ::1: Triton's gRPC server needs it bracketed and its HTTP servers marked ipv6:."""
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
    server = launch_server(r18, "--host", "::1")  # the last --host counts
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "serving resnet18" not in server.stdout() and time.monotonic() < deadline:
            assert server.process.poll() is None, server.stderr()[-2000:]
            time.sleep(0.2)
        assert f"HTTP     http://[::1]:{server.http_port}/" in server.stdout()
        assert "canary agreed" in server.stdout()
    finally:
        code = stop_server(server, signal.SIGTERM)
    assert_clean_exit(server, code)


@pytest.mark.parametrize(
    ("host", "local"),
    [
        *[("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True)],
        *[("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("server.example", False)],
    ],
)
def test_any_address_but_loopback_is_said_to_be_open(r18, host, local):
    assert loopback(host) is local
    notes = ModelServer(r18, ServeOptions(host=host)).notes
    assert (EXPOSED in notes) is not local


def test_drain_timeout_of_zero_is_refused_by_the_option_itself(r18):
    result = cli("serve", str(r18), "--drain-timeout-s", "0")
    assert result.exit_code == 2 and "--drain-timeout-s" in result.output
    assert "Traceback" not in result.output


def cmdline(pid: int) -> str:
    return " ".join(psutil.Process(pid).cmdline())
