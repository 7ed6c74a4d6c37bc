"""The first run on an NVIDIA GPU, in one command and under 8 minutes, into one results file.

    python benchmarks/gpu_check.py [--out gpu-check] [--budget-s 420] [--arch resnet50]
    python benchmarks/gpu_check.py --dry-run     # on any machine: every command line parses

Runs, each as its own ``resnet-deploy`` process with its own time limit, in this order: doctor;
export; verify on CUDA (TF32 off, verify's default); bench on CUDA, fp32 and fp16, batch 1, 8,
64 and 256 with IO binding, then with a CUDA graph at batch 8; optimize --target tensorrt; bench
of the int8 file on CUDA (for its node placement); bench on TensorRT with the engine cache, the
fp32 file with fp16 kernels and the int8 file; serve on CUDA with bench --url at concurrency
64; LoadGen Offline on TensorRT (fp16 kernels) with the number of engine builds it caused;
verify on TensorRT; bench of the fp16 file on TensorRT. A step that fails or times out is
recorded with its cause and the next one runs; when the overall budget is spent, the rest are
recorded as skipped.

Writes ``OUT/gpu_check.json``: every step's command, seconds, exit code, status, cause, the
JSON record the command wrote, and a placement table (nodes per provider for the fp32, fp16
and int8 files on CUDA and TensorRT, from the ``placement`` field bench writes once the GPU
paths of issue 16 are merged; "not recorded" before). Models and caches go in OUT/work.

--dry-run runs nothing: it parses every command line with the CLI's own click parser (empty
stand-ins for the files earlier steps would write), so a renamed flag or a missing command
shows up as that step's "unknown command"/"unknown option" here, on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CLI = "from resnet_deploy.cli import main; main()"
# TensorRT writes its engine-build lines at INFO; the CLI itself never lowers the severity.
CLI_INFO_LOG = "import onnxruntime as o; o.set_default_logger_severity(1); " + CLI
BENCH = "--baseline none --warmup-s 1 --duration 2"
CUDA_BATCHES = "1,8,64,256"
TRT_BATCHES = "1,8,64"
GRAPH_BATCH = "8"
CONCURRENCY = "64"


@dataclass
class Step:
    name: str
    argv: list[str]  # resnet-deploy's arguments
    timeout_s: float
    produces: list[str] = field(default_factory=list)  # files under work/, for the dry run
    json_file: str | None = None  # the record the command writes (under work/)
    info_log: bool = False  # run with ONNX Runtime's INFO log (TensorRT engine builds)


@dataclass
class StepResult:
    name: str
    command: str
    status: str  # ok, failed, timed out, skipped, parsed, unknown command, unknown option, ...
    seconds: float = 0.0
    exit_code: int | None = None
    cause: str = ""
    record: Any = None  # the command's --json record
    extra: dict[str, Any] = field(default_factory=dict)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def cmd(*parts: str | Path) -> list[str]:
    """A command line: each string split at spaces, each Path (a file under work/) kept whole."""
    return [x for part in parts for x in ([str(part)] if isinstance(part, Path) else part.split())]


def plan(arch: str, work: Path) -> list[Step]:
    """Every step, most important first (a budget cut removes the end)."""
    fp32, fp16, int8 = work / "model.onnx", work / "model.fp16.onnx", work / "model.int8-trt.onnx"
    cache = work / "trt-cache"
    trt = cmd("--provider tensorrt --trt-fp16 --trt-cache", cache)

    def bench(name: str, model: Path, provider: str, batches: str, *extra: str | Path) -> Step:
        record = slug(name) + ".json"
        argv = cmd("bench", model, f"--provider {provider} --batch-sizes {batches}", BENCH)
        argv += cmd(*extra, "--json", work / record, "--force")
        return Step(name, argv, 180 if provider == "tensorrt" else 90, json_file=record)

    def step(
        name: str, timeout_s: float, *parts: str | Path, produces: str = "", info_log=False
    ) -> Step:
        record = slug(name) + ".json"
        argv = cmd(*parts, "--json", work / record)
        return Step(name, argv, timeout_s, [produces] if produces else [], record, info_log)

    return [
        step("doctor", 30, "doctor"),
        step("export", 150, f"export --arch {arch} --force -o", fp32, produces=fp32.name),
        step("verify cuda", 90, "verify", fp32, "--provider cuda --batch-sizes 1,8"),
        bench("bench cuda fp32", fp32, "cuda", CUDA_BATCHES),
        step(
            "optimize fp16",
            150,
            "optimize",
            fp32,
            "--precision fp16 --guard-samples 4 --force -o",
            fp16,
            produces=fp16.name,
        ),
        bench("bench cuda fp16", fp16, "cuda", CUDA_BATCHES),
        bench("bench cuda fp32 graph", fp32, "cuda", GRAPH_BATCH, "--cuda-graph"),
        bench("bench cuda fp16 graph", fp16, "cuda", GRAPH_BATCH, "--cuda-graph"),
        step(
            "optimize int8 tensorrt",
            180,
            "optimize",
            fp32,
            "--precision int8 --target tensorrt --guard-samples 4 --force -o",
            int8,
            produces=int8.name,
        ),
        bench("bench cuda int8", int8, "cuda", GRAPH_BATCH),
        bench(
            "bench tensorrt fp16", fp32, "tensorrt", TRT_BATCHES, "--trt-fp16 --trt-cache", cache
        ),
        bench(
            "bench tensorrt int8", int8, "tensorrt", TRT_BATCHES, "--trt-fp16 --trt-cache", cache
        ),
        step(
            "serve cuda + bench --url",
            150,
            f"bench --url grpc://127.0.0.1:{{grpc}} --concurrency {CONCURRENCY} --duration 10",
            "--force",
        ),
        step(
            "loadgen offline tensorrt",
            150,
            "bench",
            fp32,  # fp16 kernels: loadgen.py does not yet pass int8 files their trt_int8_enable
            *trt,
            "--scenario offline --min-duration 5 --force",
            info_log=True,
        ),
        step("verify tensorrt", 150, "verify", fp32, "--provider tensorrt --batch-sizes 1,8"),
        bench("bench tensorrt fp16 file", fp16, "tensorrt", GRAPH_BATCH, "--trt-cache", cache),
    ]


def serve_argv(model: str, arch: str, ports: dict[str, int]) -> list[str]:
    return [
        "serve",
        model,
        "--provider",
        "cuda",
        "--name",
        arch,
        "--http-port",
        str(ports["http"]),
        "--grpc-port",
        str(ports["grpc"]),
        "--metrics-port",
        str(ports["metrics"]),
    ]


# ---------------------------------------------------------------- dry run: parse, run nothing


def parse_only(argv: list[str]) -> tuple[str, str]:
    """(status, cause) of parsing ``argv`` with the CLI's click parser; nothing is invoked."""
    import click

    from resnet_deploy.cli import main

    parent = click.Context(main, info_name="resnet-deploy")
    command = main.get_command(parent, argv[0])
    if command is None:
        return "unknown command", f"{argv[0]}: not in this branch (no such command)"
    try:
        with command.make_context(argv[0], list(argv[1:]), parent=parent):
            pass
    except click.NoSuchOption as exc:
        return "unknown option", f"{argv[0]}: {exc.format_message()}"
    except click.UsageError as exc:
        return "does not parse", f"{argv[0]}: {exc.format_message()}"
    return "parsed", ""


# ---------------------------------------------------------------- real run


def run_cli(argv: list[str], timeout_s: float, log: Path, info_log: bool = False) -> StepResult:
    """One resnet-deploy process in its own process group, killed (by its id) at the timeout."""
    command = [sys.executable, "-c", CLI_INFO_LOG if info_log else CLI, *argv]
    started = time.perf_counter()
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = process.wait(timeout=timeout_s)
            status = "ok" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code, status = None, "timed out"
    result = StepResult("", " ".join(["resnet-deploy", *argv]), status, exit_code=code)
    result.seconds = time.perf_counter() - started
    if status == "timed out":
        result.cause = f"no result within {timeout_s:.0f} s; " + last_line(log)
    elif status == "failed":
        result.cause = last_line(log)
    return result


def last_line(log: Path) -> str:
    """The error the command printed (click's ``Error:`` line), else its last line."""
    lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith(("Error:", "error:"))]
    return (errors or lines or ["(no output)"])[-1][:500]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def serve_and_bench(step: Step, model: str, arch: str, logs: Path, limit_s: float) -> StepResult:
    """Start ``serve --provider cuda``, wait until it answers ready, bench it, stop it."""
    ports = dict(zip(("http", "grpc", "metrics"), free_ports(3), strict=True))
    argv = serve_argv(model, arch, ports)
    started = time.perf_counter()
    log = logs / "serve.log"
    with open(log, "wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-c", CLI, *argv],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{ports['http']}/v2/models/{arch}/ready"
            while not ready(url):
                if server.poll() is not None:
                    result = StepResult("", " ".join(argv), "failed", exit_code=server.returncode)
                    result.cause = "serve exited: " + last_line(log)
                    return result
                if time.perf_counter() - started > limit_s / 2:
                    result = StepResult("", " ".join(argv), "timed out")
                    result.cause = f"not ready within {limit_s / 2:.0f} s; " + last_line(log)
                    return result
                time.sleep(1)
            ready_s = time.perf_counter() - started
            bench_argv = [a.format(**ports) for a in step.argv]
            left = limit_s - (time.perf_counter() - started)
            result = run_cli(bench_argv, left, logs / "bench-url.log")
            result.extra["serve_command"] = "resnet-deploy " + " ".join(argv)
            result.extra["ready_s"] = ready_s
            return result
        finally:
            stop(server)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (its id), SIGKILL it after 30 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def count_engine_builds(log_text: str) -> dict[str, Any]:
    """TensorRT engine builds in ONNX Runtime's INFO log; providers.count_engine_builds once
    the GPU branch is merged, else the lines that mention building an engine."""
    try:
        from resnet_deploy.runtime.providers import count_engine_builds as counter
    except ImportError:
        counter = None
    mentions = len(re.findall(r"(?im)^.*\bbuil(?:d|t|ding)\b.*\bengine\b.*$", log_text))
    return {
        "engine_builds": counter(log_text) if counter else None,
        "log_lines_about_building_engines": mentions,
    }


# ---------------------------------------------------------------- placement summary

PLACEMENT_STEPS = {
    ("fp32", "cuda"): "bench cuda fp32",
    ("fp16", "cuda"): "bench cuda fp16",
    ("int8", "cuda"): "bench cuda int8",
    ("fp32", "tensorrt"): "bench tensorrt fp16",  # the fp32 file, fp16 kernels allowed
    ("fp16", "tensorrt"): "bench tensorrt fp16 file",
    ("int8", "tensorrt"): "bench tensorrt int8",
}


def placements(results: dict[str, StepResult]) -> list[dict[str, Any]]:
    """Nodes per provider for each file and provider, read defensively from bench's record."""
    rows = []
    for (precision, provider), name in PLACEMENT_STEPS.items():
        result = results.get(name)
        record = result.record if result else None
        found = record.get("placement") if isinstance(record, dict) else None
        nodes = found.get("nodes") if isinstance(found, dict) else None
        cpu_compute = found.get("cpu_compute_nodes") if isinstance(found, dict) else None
        rows.append(
            {
                "file": precision,
                "provider": provider,
                "nodes": nodes,
                "cpu_compute_nodes": cpu_compute,
                "note": "" if nodes else why_missing(result, record),
            }
        )
    return rows


def why_missing(result: StepResult | None, record: Any) -> str:
    if result is None or result.status not in ("ok",):
        return f"step {result.status if result else 'not run'}"
    if not isinstance(record, dict):
        return "no JSON record"
    return "not recorded (bench has no placement field before issue 16 is merged)"


# ---------------------------------------------------------------- driver


def check(
    out: Path,
    *,
    arch: str = "resnet50",
    budget_s: float = 420.0,
    dry_run: bool = False,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Run (or parse) every step; returns the results record, also written to OUT."""
    work, logs = out / "work", out / "logs"
    for folder in (work, logs):
        folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, StepResult] = {}
    for index, step in enumerate(plan(arch, work), 1):
        progress(f"[{index}] {step.name}")
        left = budget_s - (time.perf_counter() - started)
        if dry_run:
            result = dry_step(step, work, arch)
        elif left < 10:
            result = StepResult(step.name, "", "skipped", cause="the time budget was spent")
        else:
            result = real_step(step, work, logs, arch, min(step.timeout_s, left))
        result.name = step.name
        results[step.name] = result
        progress(f"    {result.status} {result.seconds:.0f} s {result.cause}".rstrip())
    record = {
        "mode": "dry run" if dry_run else "run",
        "arch": arch,
        "budget_s": budget_s,
        "seconds": time.perf_counter() - started,
        "python": sys.executable,
        "steps": [asdict(r) for r in results.values()],
        "placement": placements(results),
    }
    (out / "gpu_check.json").write_text(json.dumps(record, indent=2, default=str))
    return record


def dry_step(step: Step, work: Path, arch: str) -> StepResult:
    """Parse the command(s); then stand in empty files for what the step would write."""
    if step.name.startswith("serve"):
        serve = serve_argv(str(work / "model.onnx"), arch, {"http": 1, "grpc": 2, "metrics": 3})
        status, cause = parse_only(serve)
        if status == "parsed":
            status, cause = parse_only([a.format(grpc=2) for a in step.argv])
        else:
            bench_status, bench_cause = parse_only([a.format(grpc=2) for a in step.argv])
            cause = f"{cause}; bench --url: {bench_status} {bench_cause}".strip()
        command = "resnet-deploy " + " ".join(serve) + " && resnet-deploy " + " ".join(step.argv)
    else:
        status, cause = parse_only(step.argv)
        command = "resnet-deploy " + " ".join(step.argv)
    for name in step.produces:
        (work / name).touch()
    return StepResult(step.name, command, status, cause=cause)


def real_step(step: Step, work: Path, logs: Path, arch: str, limit_s: float) -> StepResult:
    log = logs / (slug(step.name) + ".log")
    if step.name.startswith("serve"):
        result = serve_and_bench(step, str(work / "model.onnx"), arch, logs, limit_s)
    else:
        result = run_cli(step.argv, limit_s, log, info_log=step.info_log)
    if step.json_file and (work / step.json_file).is_file():
        try:
            result.record = json.loads((work / step.json_file).read_text())
        except json.JSONDecodeError as exc:
            result.extra["json_error"] = str(exc)
    if step.info_log and log.is_file():
        result.extra |= count_engine_builds(log.read_text(errors="replace"))
    return result


def format_summary(record: dict[str, Any]) -> str:
    lines = [f"gpu check ({record['mode']}), {record['seconds']:.0f} s:"]
    for step in record["steps"]:
        cause = f"  {step['cause']}" if step["cause"] else ""
        lines.append(f"  {step['status']:<15} {step['seconds']:6.0f} s  {step['name']}{cause}")
    lines.append("placement (nodes per provider):")
    for row in record["placement"]:
        lines.append(f"  {row['file']:<5} on {row['provider']:<9} {row['nodes'] or row['note']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check"))
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--budget-s", type=float, default=420.0, help="all steps together")
    parser.add_argument("--dry-run", action="store_true", help="parse every command, run none")
    parser.add_argument("--force", action="store_true", help="reuse an existing --out folder")
    args = parser.parse_args(argv)
    if (args.out / "gpu_check.json").exists() and not args.force:
        parser.error(f"{args.out}/gpu_check.json exists; pass --force or another --out")
    record = check(
        args.out,
        arch=args.arch,
        budget_s=args.budget_s,
        dry_run=args.dry_run,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(format_summary(record))
    print(f"wrote {args.out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
