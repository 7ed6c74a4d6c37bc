"""`serve` proves its answers before it says ready, and refuses to serve wrong ones.

The wrong answers come from the real backend: a ``sitecustomize`` on the server's PYTHONPATH
doubles ONNX Runtime's outputs inside Triton's Python-backend stubs only (the stub imports what
the serving process imports, PYTHONPATH's folders included), so `serve`'s own in-process
reference stays right and the canary must see the difference.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from serving import START_TIMEOUT_S, launch_server, leftovers, stop_server, wait_ready

pytest.importorskip("pytriton", reason="serve needs the [serve] extra (PyTriton)")

SHIFTED_ONNX_RUNTIME = '''
"""Test double: inside a Triton Python-backend stub only, ONNX Runtime answers twice the logits."""
from pathlib import Path

if b"triton_python_backend_stub" in Path("/proc/self/cmdline").read_bytes():
    import onnxruntime

    _run = onnxruntime.InferenceSession.run

    def _shifted(self, *args, **kwargs):
        return [output * 2 for output in _run(self, *args, **kwargs)]

    onnxruntime.InferenceSession.run = _shifted
'''


def test_serve_refuses_to_start_when_the_backend_answers_wrong(r18, tmp_path):
    """Wrong logits from the stubs: serve stops everything and exits non-zero, naming them."""
    (tmp_path / "sitecustomize.py").write_text(SHIFTED_ONNX_RUNTIME)
    record = tmp_path / "serve.json"
    environment = {**os.environ, "PYTHONPATH": str(tmp_path)}
    server = launch_server(r18, "--json", str(record), env=environment)
    try:
        server.process.wait(START_TIMEOUT_S)
    finally:
        stop_server(server, signal.SIGKILL)
    stderr = server.stderr()
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert server.process.returncode not in (0, None), stderr[-2000:]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert "serving resnet18" not in server.stdout()  # it never said ready
    assert "answers differently from in-process ONNX Runtime" in errors[0]
    assert "resnet18 over http" in errors[0] and "resnet18 over grpc" in errors[0]
    assert "elements beyond atol" in errors[0]
    canary = json.loads(record.read_text())["canary"]
    assert canary["passed"] is False
    failed = {(c["model"], c["protocol"]) for c in canary["checks"] if not c["passed"]}
    assert failed == {(m, p) for m in ("resnet18", "resnet18_image") for p in ("http", "grpc")}
    alive, segments = leftovers(server)
    assert not alive and not segments, (alive, segments)


def test_a_right_backend_passes_the_canary_and_records_it(r18, tmp_path):
    """The same start without the double: ready, the canary line printed and in the record."""
    record = tmp_path / "serve.json"
    server = launch_server(r18, "--json", str(record))
    try:
        assert wait_ready(server), server.stderr()[-2000:]
        assert "canary agreed with in-process ONNX Runtime" in server.stdout()
    finally:
        code = stop_server(server, signal.SIGTERM)
    assert code == 0, server.stderr()[-2000:]
    canary = json.loads(record.read_text())["canary"]
    assert canary["passed"] is True and len(canary["checks"]) == 4
