"""Served against in-process: ResNet50 behind `resnet-deploy serve`, over HTTP and gRPC.

    python benchmarks/serve.py [--duration 10] [--warmup 2] [--concurrency 1,8,16] [--note ...]

Exports ResNet50 (torchvision variant, random weights) and its int8 model (`optimize`), benches
each in process (`bench`, batches 1-32) for the best batch's images/s and batch 1's latency,
then starts `resnet-deploy serve` on the same file (a separate process, as in production) and
drives it with C closed-loop clients, each sending one image a request (binary tensors) and
waiting for the answer. Per (precision, protocol, C): p50/p99 latency, images/s, the mean
batch Triton formed (from its metrics) and the mean time a request waited in its queue; at C=1
the serving overhead, served p50 minus in-process batch-1 p50 measured in alternating rounds
beside it. Also the server's startup time and idle memory. Writes
``benchmarks/results/<date>-serve.md`` and ``.json``.

Targets on a CPU (issue 12): overhead at C=1 under 5 ms p50; served images/s at C=16 at least
90% of the in-process best batch's. The client runs on the same machine and takes CPU from the
server, so the served figures are a lower bound of what a remote client would see.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from record import log, write_record

from resnet_deploy.convert.export import ExportOptions, export_model
from resnet_deploy.convert.quantize import OptimizeOptions, optimize_model
from resnet_deploy.environment import describe_environment
from resnet_deploy.perf.bench import BenchReport, bench
from resnet_deploy.perf.bench_options import BenchOptions, session_config
from resnet_deploy.perf.timing import summarize as summarize_runs
from resnet_deploy.perf.timing import time_runs
from resnet_deploy.runtime.providers import create_session, resolve_provider
from resnet_deploy.runtime.runners import OrtRunner

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from serving import ServedProcess, descendants, start_server, stop_server  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
IN_PROCESS_BATCHES = (1, 8, 16, 32)
PROTOCOLS = ("http", "grpc")
OVERHEAD_TARGET_MS = 5.0
THROUGHPUT_TARGET = 0.9
ROUNDS = 4  # one client: served and in-process alternate this many times


@dataclass(frozen=True)
class InProcess:
    precision: str
    best_batch: int
    best_images_per_s: float
    batch1_p50_ms: float
    threads: int


@dataclass(frozen=True)
class Served:
    precision: str
    protocol: str
    concurrency: int
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    images_per_s: float
    vs_in_process: float  # images/s over the in-process best batch's
    overhead_p50_ms: float  # 1 client: median over rounds of served p50 - adjacent in-process p50
    adjacent_p50_ms: float  # 1 client: median in-process batch-1 p50 of those rounds
    mean_batch: float  # requests per execution, from Triton's metrics
    queue_ms: float  # mean wait in Triton's queue per request, from its metrics


@dataclass
class ServerFacts:
    precision: str
    ready_s: float  # Popen to both models ready, as a client sees it
    idle_rss_mib: float  # the server and every process it started, before any request


@dataclass
class Results:
    in_process: list[InProcess] = field(default_factory=list)
    served: list[Served] = field(default_factory=list)
    servers: list[ServerFacts] = field(default_factory=list)
    benches: list[BenchReport] = field(default_factory=list)


def in_process(model: Path, precision: str, warmup_s: float, duration_s: float) -> BenchReport:
    options = BenchOptions(
        batch_sizes=IN_PROCESS_BATCHES, warmup_s=warmup_s, duration_s=duration_s, baseline="none"
    )
    return bench(model, options, progress=log)


def summarize(report: BenchReport) -> InProcess:
    ok = [b for b in report.batches if b.images_per_s is not None]
    best = max(ok, key=lambda b: b.images_per_s)
    one = next(b for b in ok if b.batch_size == 1)
    return InProcess(
        report.metadata.precision, best.batch_size, best.images_per_s, one.p50_ms, report.threads
    )


def client_call(protocol: str, server: ServedProcess) -> tuple[Callable[[], None], Callable]:
    """A function sending one image (batch 1, binary tensor) and its client's close."""
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224), np.float32)
    if protocol == "http":
        client = httpclient.InferenceServerClient(server.http_address, network_timeout=120)
        tensor = httpclient.InferInput("input", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image, binary_data=True)
        output = httpclient.InferRequestedOutput("logits", binary_data=True)
        return lambda: client.infer(server.name, [tensor], outputs=[output]), client.close
    client = grpcclient.InferenceServerClient(server.grpc_address)
    tensor = grpcclient.InferInput("input", list(image.shape), "FP32")
    tensor.set_data_from_numpy(image)
    return lambda: client.infer(server.name, [tensor], client_timeout=120), client.close


def counters(server: ServedProcess) -> dict[str, float]:
    text = server.metrics()
    names = ("nv_inference_count", "nv_inference_exec_count", "nv_inference_queue_duration_us")
    values = {}
    for name in (*names, "nv_inference_request_success"):
        found = re.search(rf'^{name}{{model="{server.name}",version="1"}} (\S+)$', text, re.M)
        values[name] = float(found[1]) if found else 0.0
    return values


def drive(
    server: ServedProcess, protocol: str, concurrency: int, warmup_s: float, duration_s: float
) -> tuple[list[float], int, int, dict[str, float]]:
    """C closed-loop clients; latencies of requests started in the timed window, errors, the
    requests completed in it, and the change of Triton's counters over it."""
    start = time.perf_counter() + 0.5
    window = (start + warmup_s, start + warmup_s + duration_s)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    completed, errors = [0] * concurrency, [0] * concurrency
    marks: dict[str, dict[str, float]] = {}

    def worker(i: int) -> None:
        call, close = client_call(protocol, server)
        try:
            while (now := time.perf_counter()) < window[1]:
                if now < start:
                    time.sleep(start - now)
                    continue
                try:
                    call()
                except Exception:
                    errors[i] += now >= window[0]
                    continue
                done = time.perf_counter()
                if now >= window[0]:
                    latencies[i].append((done - now) * 1e3)
                if window[0] <= done <= window[1]:
                    completed[i] += 1
        finally:
            close()

    def sample() -> None:
        for name, at in (("before", window[0]), ("after", window[1])):
            time.sleep(max(0.0, at - time.perf_counter()))
            marks[name] = counters(server)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    threads.append(threading.Thread(target=sample))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    delta = {k: marks["after"][k] - marks["before"][k] for k in marks["after"]}
    return [x for lat in latencies for x in lat], sum(errors), sum(completed), delta


def measure_served(
    model: Path,
    reference: InProcess,
    args: argparse.Namespace,
    results: Results,
) -> None:
    started = time.perf_counter()
    server = start_server(model, "--threads", str(reference.threads), name=reference_name(model))
    ready_s = time.perf_counter() - started
    try:
        rss = sum(rss_mib(pid) for pid in [server.pid, *descendants(server.pid)])
        results.servers.append(ServerFacts(reference.precision, ready_s, rss))
        for protocol in PROTOCOLS:
            for concurrency in args.concurrency:
                log(f"{reference.precision} over {protocol}, {concurrency} clients")
                if concurrency == 1:
                    row = one_client(server, protocol, model, reference, args)
                else:
                    row = many_clients(server, protocol, concurrency, reference, args)
                results.served.append(row)
    finally:
        stop_server(server)


def many_clients(
    server: ServedProcess,
    protocol: str,
    concurrency: int,
    reference: InProcess,
    args: argparse.Namespace,
) -> Served:
    lat, errors, done, delta = drive(server, protocol, concurrency, args.warmup, args.duration)
    return served_row(reference, protocol, concurrency, lat, errors, done / args.duration, delta)


def one_client(
    server: ServedProcess,
    protocol: str,
    model: Path,
    reference: InProcess,
    args: argparse.Namespace,
) -> Served:
    """Served and in-process batch 1 in alternating rounds, the in-process session built as
    bench builds it: the overhead is the median of each round's difference, so a drift of the
    machine between the in-process bench and this row does not count as serving cost."""
    config = session_config(resolve_provider("cpu"), BenchOptions(threads=reference.threads))
    runner = OrtRunner(create_session(model, config))
    feed = runner.place(np.random.default_rng(0).standard_normal((1, 3, 224, 224), np.float32))
    seconds = args.duration / ROUNDS
    latencies, errors, done, local, served = [], 0, 0, [], []
    deltas: list[dict[str, float]] = []
    for _ in range(ROUNDS):
        runner.infer(feed)
        local.append(summarize_runs(*time_runs(runner.infer, feed, seconds=seconds), 1)["p50_ms"])
        lat, err, completed, delta = drive(server, protocol, 1, min(args.warmup, 1.0), seconds)
        served.append(float(np.percentile(lat, 50)))
        latencies += lat
        errors, done = errors + err, done + completed
        deltas.append(delta)
    runner.__exit__()
    delta = {k: sum(d[k] for d in deltas) for k in deltas[0]}
    row = served_row(reference, protocol, 1, latencies, errors, done / args.duration, delta)
    differences = [s - i for s, i in zip(served, local, strict=True)]
    return replace(
        row,
        overhead_p50_ms=float(np.median(differences)),
        adjacent_p50_ms=float(np.median(local)),
    )


def served_row(
    reference: InProcess,
    protocol: str,
    concurrency: int,
    lat: list[float],
    errors: int,
    images_per_s: float,
    delta: dict[str, float],
) -> Served:
    p50, p99 = (float(np.percentile(lat, q)) for q in (50, 99)) if lat else (0.0, 0.0)
    executions = delta["nv_inference_exec_count"]
    successes = delta["nv_inference_request_success"]
    return Served(
        precision=reference.precision,
        protocol=protocol,
        concurrency=concurrency,
        requests=len(lat),
        errors=errors,
        p50_ms=p50,
        p99_ms=p99,
        images_per_s=images_per_s,
        vs_in_process=images_per_s / reference.best_images_per_s,
        overhead_p50_ms=p50 - reference.batch1_p50_ms,
        adjacent_p50_ms=reference.batch1_p50_ms,
        mean_batch=delta["nv_inference_count"] / executions if executions else 0,
        queue_ms=delta["nv_inference_queue_duration_us"] / successes / 1e3 if successes else 0,
    )


def reference_name(model: Path) -> str:
    from resnet_deploy.model.metadata import read_metadata
    from resnet_deploy.model.onnxfile import load_onnx

    metadata = read_metadata(load_onnx(model))
    return metadata.arch if metadata else model.stem


def rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(found[1]) / 1024 if found else 0.0


def markdown(results: Results, args: argparse.Namespace, when: str) -> str:
    env = describe_environment()
    lines = [f"# resnet-deploy serve: {args.arch} served vs in-process, {when}", ""]
    lines += [
        "| precision | in-process best batch | images/s | batch-1 p50 ms |",
        "|---|---:|---:|---:|",
    ]
    for r in results.in_process:
        lines.append(
            f"| {r.precision} | {r.best_batch} | {r.best_images_per_s:.1f} | "
            f"{r.batch1_p50_ms:.1f} |"
        )
    lines += [
        "",
        "| precision | protocol | clients | p50 ms | p99 ms | images/s | vs in-process "
        "| overhead p50 ms | in-process p50 ms | mean batch | queue ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results.served:
        lines.append(
            f"| {r.precision} | {r.protocol} | {r.concurrency} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {r.images_per_s:.1f} | {r.vs_in_process:.0%} | "
            f"{r.overhead_p50_ms:.1f} | {r.adjacent_p50_ms:.1f} | {r.mean_batch:.1f} | "
            f"{r.queue_ms:.1f} | {r.errors} |"
        )
    lines.append("")
    for s in results.servers:
        lines.append(
            f"- {s.precision} server: ready {s.ready_s:.1f} s after start (process start to "
            f"both models ready), {s.idle_rss_mib:.0f} MiB resident idle (all its processes)"
        )
    lines += targets(results)
    lines += [
        f"- CPU: {env.cpu_model}, {env.physical_cores} physical cores ({env.logical_cpus} "
        f"logical); server sessions use the in-process bench's thread count",
        f"- {env.platform}, Python {env.python}, "
        + ", ".join(f"{name} {version}" for name, version in env.packages.items()),
        f"- clients: closed loop, one image per request, binary tensors, warm-up {args.warmup} s "
        f"then {args.duration} s timed per row; client and server share this machine",
        f"- overhead p50 (1 client): {ROUNDS} rounds alternating in-process batch 1 (a session "
        "built as bench builds it, in the client's process) and the served client, each "
        "duration/rounds long; the median of the rounds' p50 differences. In-process p50: the "
        "median of those rounds' in-process p50 (with more clients: the in-process bench's); "
        "mean batch and queue ms: Triton's nv_inference_count / nv_inference_exec_count and "
        "nv_inference_queue_duration_us per request over the timed window",
    ]
    if args.note:
        lines.append(f"- note: {args.note}")
    lines += ["", "Reproduce: `python benchmarks/serve.py`", ""]
    return "\n".join(lines)


def targets(results: Results) -> list[str]:
    lines = []
    for r in results.served:
        if r.concurrency == 1:
            met = "met" if r.overhead_p50_ms < OVERHEAD_TARGET_MS else "NOT met"
            lines.append(
                f"- target overhead < {OVERHEAD_TARGET_MS:.0f} ms at 1 client, {r.precision} "
                f"{r.protocol}: {r.overhead_p50_ms:.1f} ms, {met}"
            )
        if r.concurrency == 16:
            met = "met" if r.vs_in_process >= THROUGHPUT_TARGET else "NOT met"
            lines.append(
                f"- target >= {THROUGHPUT_TARGET:.0%} of in-process images/s at 16 clients, "
                f"{r.precision} {r.protocol}: {r.vs_in_process:.0%}, {met}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50", help="resnet18 for a quick check")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--concurrency", default="1,8,16")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per row")
    parser.add_argument("--duration", type=float, default=10.0, help="timed seconds per row")
    parser.add_argument("--note", default="", help="context worth keeping (machine load, ...)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    precisions = args.precisions.split(",")
    results = Results()
    with tempfile.TemporaryDirectory() as folder:
        fp32 = export_model(
            ExportOptions(output=Path(folder) / f"{args.arch}.onnx", arch=args.arch), progress=log
        ).output
        for precision in precisions:
            model = fp32
            if precision != "fp32":
                options = OptimizeOptions(precision=precision, force=True)
                model = optimize_model(fp32, options, progress=log).output
            report = in_process(model, precision, args.warmup, args.duration)
            results.benches.append(report)
            reference = summarize(report)
            results.in_process.append(reference)
            measure_served(model, reference, args, results)
    when = datetime.date.today().isoformat()
    text = markdown(results, args, when)
    stem = args.output_dir / f"{when}-serve"
    record = {"date": when, "arch": args.arch, "note": args.note, "results": results}
    write_record(stem, text, record)


if __name__ == "__main__":
    main()
