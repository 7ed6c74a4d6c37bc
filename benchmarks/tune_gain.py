"""`tune` against bench's default configuration, at one p99 bound, checked by LoadGen.

    python benchmarks/tune_gain.py [--slo-p99-ms 15] [--budget-s 300] [--note "quiet"]
    python benchmarks/tune_gain.py --arch resnet18 --slo-p99-ms 2000 --budget-s 20 --loadgen-s 1

Exports ResNet50 (torchvision variant, random weights), makes its int8 file with `optimize`,
then runs `tune` twice: on the int8 file alone (the winner against bench's default
configuration of that same file: the gain tuning itself brings) and on the fp32 file with the
int8 one as a second precision (what a user starting from the export gets). Writes
``benchmarks/results/<date>-tune.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from record import log, write_record

from resnet_deploy.convert.export import ExportOptions, export_model
from resnet_deploy.convert.quantize import OptimizeOptions, optimize_model
from resnet_deploy.environment import describe_environment
from resnet_deploy.perf.tune import TuneOptions, TuneReport, format_report, tune

RESULTS = Path(__file__).resolve().parent / "results"


def line(name: str, report: TuneReport) -> str:
    w, d = report.winner, report.default
    if w is None:
        return f"| {name} | - | - | - | - | - | no candidate met the bound |"
    gain = "-" if report.gain_vs_default is None else f"{report.gain_vs_default:.2f}x"
    default = f"{d.label()}: {d.images_per_s:.1f}" if d else "none met the bound"
    peaks = " / ".join(
        "none VALID" if qps is None else f"{qps:g}"
        for qps in (report.server_qps, report.batch1_server_qps, report.default_server_qps)
    )
    verdict = {True: "VALID", False: "INVALID", None: "not checked"}[report.valid]
    busy = " (busy machine)" if report.contention.unreliable else ""
    return (
        f"| {name} | {default} | {w.label()}: {w.images_per_s:.1f}, p99 {w.p99_ms:.1f} ms | "
        f"{gain}{busy} | {peaks} | {report.deployed}, {verdict} | `{report.serve_flags}` |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--slo-p99-ms", type=float, default=15.0)
    parser.add_argument("--budget-s", type=float, default=300.0)
    parser.add_argument("--loadgen-s", type=float, default=10.0)
    parser.add_argument(
        "--searches", default="int8,fp32+int8", help="int8: the int8 file alone; fp32+int8: both"
    )
    parser.add_argument("--note", default="")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    env = describe_environment()
    options = TuneOptions(
        slo_p99_ms=args.slo_p99_ms, budget_s=args.budget_s, loadgen_s=args.loadgen_s
    )
    output_dir = args.output_dir.resolve()
    home = Path.cwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)  # the records name the files, not a temporary folder of this machine
        fp32 = export_model(
            ExportOptions(output=Path(f"{args.arch}.onnx"), arch=args.arch), progress=log
        ).output
        int8 = optimize_model(fp32, OptimizeOptions(precision="int8"), progress=log).output
        searches = {
            "int8": ("int8 file alone", lambda: tune(int8, options, progress=log)),
            "fp32+int8": (
                "fp32 export, int8 as second precision",
                lambda: tune(fp32, replace(options, int8=int8), progress=log),
            ),
        }
        chosen = [searches[key] for key in args.searches.split(",")]
        runs = {name: search() for name, search in chosen}
        os.chdir(home)
    when = datetime.date.today().isoformat()
    lines = [
        f"# `tune` on {args.arch} (random weights), p99 bound {args.slo_p99_ms:g} ms, {when}",
        "",
        "| search | bench default (images/s) | winner (images/s) | gain | LoadGen Server peak QPS "
        "(winner / batch 1 / default) | written out | run |",
        "|---|---|---|---:|---|---|---|",
        *(line(name, report) for name, report in runs.items()),
        "",
        f"- {env.cpu_model}, {env.physical_cores} physical cores; budget {args.budget_s:g} s "
        f"per search (LoadGen included), each LoadGen step at least {args.loadgen_s:g} s",
        "- LoadGen Server peak QPS: the highest VALID target QPS at the bound that `--find-peak`'s "
        "bisection found, for the winner, its unbatched alternative (when the winner batches) "
        "and the default, each run with its own instances",
        "- gain: the winner's images/s over bench's default configuration's (one session, a "
        "thread per core, spinning on, the best of batches 1, 8, 32 under the bound) measured in "
        "the same search",
    ]
    if args.note:
        lines.append(f"- note: {args.note}")
    for name, report in runs.items():
        lines += ["", f"## {name}", "", "```", format_report(report), "```"]
    lines += ["", "Reproduce: `python benchmarks/tune_gain.py`", ""]
    text = "\n".join(lines)
    stem = output_dir / f"{when}-tune"
    write_record(stem, text, {"note": args.note, "runs": runs})


if __name__ == "__main__":
    main()
