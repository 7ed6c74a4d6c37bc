"""The run's page: one self-contained HTML file (``FOLDER/report.html``) to open offline or share.

It is rendered from the run's JSON record, so the page and ``report.json`` cannot disagree,
and ``resnet-deploy page FOLDER`` can render it again once ``profile`` or ``tune`` have left
their records (``profile.json``, ``tune.json``, and PNG plots) in the folder. Charts are inline
SVG (see ``svg``), images are embedded as data, and a Content-Security-Policy forbids the
browser to fetch anything: the page needs no network and no JavaScript, and prints as it reads.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.errors import InputError
from resnet_deploy.files import check_output_path, write_text_atomic
from resnet_deploy.report.records import format_cell
from resnet_deploy.report.svg import Axis, Chart, Style, linear_axis, log_axis

PAGE_NAME = "report.html"
RECORD_NAME = "report.json"
EXTRAS = ("profile", "tune")  # records other commands leave in a run folder
MAX_EXTRA_BYTES = 20_000_000  # a record or image bigger than this is named, not embedded
MAX_TABLE_ROWS = 300
MAX_TABLE_COLUMNS = 16
CDF_POINTS = 300  # a latency curve is drawn through this many quantiles at most
ORT = Style("#1f63a8", "", "circle")
EAGER = Style("#333333", "6 4", "square")
INT8 = Style("#c2570c", "2 3", "triangle")
NOISE = Style("#8a8a8a", "", "")
LIMIT = Style("#c62828", "5 4", "")
DIVERGED = Style("#c62828", "", "circle")


class Html(str):
    """Markup that is already escaped (a table cell holding a link, a badge, ...)."""


def write_page(folder: Path, *, output: Path | None = None, force: bool = False) -> Path:
    """Render ``folder/report.json`` (and any profile or tune records there) to a page."""
    folder = Path(folder)
    source = folder / RECORD_NAME
    if not source.is_file():
        raise InputError(f"{folder}: holds no {RECORD_NAME}; is it a `resnet-deploy run` folder?")
    output = check_output_path(output or folder / PAGE_NAME, force=force, inputs=[source])
    try:
        record = json.loads(source.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: not a JSON record ({exc})") from None
    if not isinstance(record, dict) or not {"export", "verify"} <= record.keys():
        raise InputError(f"{source}: not the record of a `resnet-deploy run`")
    try:
        page = render_page(record, folder)
    except (KeyError, TypeError, AttributeError) as exc:  # a record of another shape or version
        raise InputError(
            f"{source}: lacks what the page shows ({type(exc).__name__}: {exc})"
        ) from None
    write_text_atomic(output, page, replace=force)
    return output


def render_page(record: dict[str, Any], folder: Path) -> str:
    """The whole page for one run record; ``folder`` is searched for profile and tune results."""
    meta = record["export"]["metadata"]
    verdict = "PASS" if passed(record) else "FAIL"
    title = f"{meta['arch']} ({meta['variant']}) {meta['precision']}: {verdict}"
    extras = {name: extra_section(folder, name) for name in EXTRAS}
    extras = {name: section for name, section in extras.items() if section}
    sections = [
        header(record, verdict, list(extras)),
        verify_section(record["verify"]),
        bench_section(record),
    ]
    if record.get("optimize"):
        sections.append(int8_section(record))
    sections += [*extras.values(), files_section(record, folder)]
    body = "\n".join(s for s in sections if s)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>resnet-deploy run: {escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def passed(record: dict[str, Any]) -> bool:
    """As ``RunReport.passed``: verified, benched, and int8 (if asked for) past its guard."""
    optimize = record.get("optimize")
    int8_ok = not optimize or optimize.get("output") is not None
    return bool(record["verify"]["passed"]) and record.get("bench") is not None and int8_ok


# ---- header -------------------------------------------------------------------------------


def header(record: dict[str, Any], verdict: str, extras: list[str]) -> str:
    export, meta, verify = record["export"], record["export"]["metadata"], record["verify"]
    bench = record.get("bench")
    environment = record.get("environment") or (bench or {}).get("environment") or {}
    weights = meta["weights"]
    if meta.get("weights_sha256"):
        weights += f" (sha256 {meta['weights_sha256']})"
    elif meta.get("seed") is not None and weights == "random":
        weights += f" (seed {meta['seed']})"
    model = [
        ("architecture", f"{meta['arch']}, {meta['variant']} variant"),
        ("weights", weights),
        ("file", f"{export['output']} ({export['file_bytes'] / 1e6:.1f} MB)"),
        ("file sha256", record.get("model_sha256") or (bench or {}).get("model_sha256", "?")),
        ("precision", f"{meta['precision']}, opset {meta['opset']}, {meta['exporter']} exporter"),
        (
            "input",
            f"{meta['layout']} {meta['dtype']}, batch {meta['batch']}, "
            f"{meta['image_size']}x{meta['image_size']}",
        ),
        ("parameters", f"{export['parameters']:,}"),
    ]
    gpus = environment.get("gpus") or ["none"]
    packages = environment.get("packages") or {}
    machine = [
        (
            "CPU",
            f"{environment.get('cpu_model', '?')}, {environment.get('physical_cores', '?')} "
            f"physical cores, {environment.get('logical_cpus', '?')} logical CPUs",
        ),
        ("GPU", "; ".join(gpus)),
        ("provider", verify["provider"]),
        (
            "platform",
            f"{environment.get('platform', '?')}, Python {environment.get('python', '?')}",
        ),
        ("versions", ", ".join(f"{name} {version}" for name, version in packages.items())),
    ]
    command = record.get("command") or ""
    return (
        f'<header>\n<h1>resnet-deploy run <span class="badge {verdict.lower()}">{verdict}'
        f"</span></h1>\n"
        f'<p class="subtitle">{escape(meta["arch"])} ({escape(meta["variant"])}), '
        f"resnet-deploy {escape(meta.get('toolkit_version', ''))}</p>\n"
        f"{headline(record)}\n"
        f'<div class="facts">{facts("Model", model)}{facts("Machine", machine)}</div>\n'
        + (f'<p class="command">command: <code>{escape(command)}</code></p>\n' if command else "")
        + contents(record, extras)
        + "</header>"
    )


def headline(record: dict[str, Any]) -> str:
    """The verdict, the speed-up and what to deploy, in a few sentences at the top."""
    verify = record["verify"]
    lines = []
    if not verify["passed"]:
        first = first_divergence(verify)
        where = (
            f" It first departs from the eager model at <strong>{escape(first['name'])}</strong>"
            f" ({escape(first['kind'])})."
            if first
            else ""
        )
        lines.append(
            f"<p><strong>Do not deploy this file:</strong> {escape(verify_summary(verify))}."
            f"{where} It was not benchmarked.</p>"
        )
        return f'<div class="verdict fail">{"".join(lines)}</div>'
    lines.append(
        f"<p>The exported file computes what the eager model computes: "
        f"{escape(verify_summary(verify))}.</p>"
    )
    bench = record.get("bench") or {}
    done = [b for b in bench.get("batches", []) if b.get("error") is None]
    with_eager = [b for b in done if number(b.get("speedup_vs_torch")) is not None]
    if with_eager:
        top = with_eager[-1]
        others = ", ".join(
            f"batch {b['batch_size']}: {number(b['speedup_vs_torch']):.2f}x"
            for b in with_eager[:-1]
        )
        lines.append(
            f'<p class="speedup"><span class="big">{number(top["speedup_vs_torch"]):.2f}x</span> '
            f"PyTorch eager's throughput on ONNX Runtime at batch {top['batch_size']} "
            f"({format_cell(number(top['images_per_s']))} against "
            f"{format_cell(number(top['torch_images_per_s']))} images/s)"
            + (f"; {escape(others)}" if others else "")
            + ".</p>"
        )
    if any(b.get("warnings") for b in done) or bench.get("warnings"):
        lines.append(
            '<p class="warn">Some timings are unreliable (an unstable or busy machine, or too '
            'few runs): see the <a href="#bench">warnings</a> before quoting a number.</p>'
        )
    lines.append(f"<p><strong>Deploy:</strong> {recommendation(record)}</p>")
    state = "pass" if passed(record) else "fail"  # verified, but int8 refused by its guard
    return f'<div class="verdict {state}">{"".join(lines)}</div>'


def recommendation(record: dict[str, Any]) -> str:
    optimize = record.get("optimize")
    fp32 = escape(Path(record["export"]["output"]).name)
    if not optimize:
        return f"<code>{fp32}</code> (fp32; <code>run --int8</code> also tries int8)."
    if optimize.get("output") is None:
        return (
            f"<code>{fp32}</code> (fp32): the int8 file failed the accuracy guard and was not "
            "written."
        )
    int8 = escape(Path(optimize["output"]).name)
    gains = int8_gains(record)
    if gains and gains[-1][1] > 1:
        batch, gain = gains[-1]
        return (
            f"<code>{int8}</code>: {gain:.2f}x the fp32 file's throughput at batch {batch}, "
            "within the int8 accuracy guard against the eager fp32 model (measured on random "
            "inputs: check it on your own data before shipping)."
        )
    return f"<code>{fp32}</code> (fp32): the int8 file was not faster on this machine."


def int8_gains(record: dict[str, Any]) -> list[tuple[int, float]]:
    """(batch size, int8 images/s over fp32 images/s) where both ran."""
    fp32 = {b["batch_size"]: number(b.get("images_per_s")) for b in record["bench"]["batches"]}
    gains = []
    for b in (record.get("int8_bench") or {}).get("batches", []):
        int8, base = number(b.get("images_per_s")), fp32.get(b["batch_size"])
        if int8 and base:
            gains.append((b["batch_size"], int8 / base))
    return gains


def facts(title: str, rows: Sequence[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in rows)
    return f'<div class="card"><h2>{escape(title)}</h2><dl>{items}</dl></div>'


def contents(record: dict[str, Any], extras: list[str]) -> str:
    links = [("verify", "Verify"), ("bench", "Bench")]
    if record.get("optimize"):
        links.append(("int8", "fp32 and int8"))
    links += [(name, name.capitalize()) for name in extras]
    links.append(("files", "Files"))
    items = "".join(f'<li><a href="#{anchor}">{text}</a></li>' for anchor, text in links)
    return f"<nav><ul>{items}</ul></nav>\n"


# ---- verify -------------------------------------------------------------------------------


def verify_summary(verify: dict[str, Any]) -> str:
    """As ``VerifyReport.summary``, from the record."""
    shapes = verify["shapes"]
    failing = [s for s in shapes if not s["passed"]]
    if not failing:
        return f"passed at {len(shapes)} shapes ({verify['shape_note']})"
    first = failing[0]
    return (
        f"failed at {len(failing)} of {len(shapes)} shapes; batch {first['batch_size']} at "
        f"{first['image_size']}x{first['image_size']}: " + "; ".join(first["failures"])
    )


def first_divergence(verify: dict[str, Any]) -> dict[str, Any] | None:
    return (verify.get("localization") or {}).get("first_divergence")


def verify_section(verify: dict[str, Any]) -> str:
    tol = verify["tolerance"]
    rule = f"cosine &ge; {tol['min_cosine']:g}"
    if tol["elementwise"]:
        rule = (
            f"|onnx &minus; eager| &le; {tol['atol']:g} + {tol['rtol']:g} &times; |eager| "
            f"per element, {rule}"
        )
    parts = [
        '<section id="verify">',
        f'<h2>Verify <span class="badge {"pass" if verify["passed"] else "fail"}">'
        f"{'PASS' if verify['passed'] else 'FAIL'}</span></h2>",
        f"<p>ONNX Runtime ({escape(verify['provider'])}) against the eager PyTorch model "
        f"(rebuilt from the file's {escape(verify['reference'])}), same inputs: "
        f"{escape(verify['inputs'])}; {escape(verify['shape_note'])}. "
        f"Tolerance ({escape(tol['precision'])}): {rule}. "
        "The noise floor is the eager model in float64 against itself in float32: the error "
        "any correct fp32 implementation makes.</p>",
        shape_table(verify["shapes"]),
    ]
    failures = [
        f"batch {s['batch_size']} at {s['image_size']}: {f}"
        for s in verify["shapes"]
        for f in s["failures"]
    ]
    if failures:
        parts.append(bullets(failures, "failures"))
    localization = verify.get("localization")
    if localization:
        parts.append(layers_block(localization))
    parts.append("</section>")
    return "\n".join(parts)


def shape_table(shapes: list[dict[str, Any]]) -> str:
    headers = ["batch", "size", "samples", "max abs", "max rel", "mean abs", "min cosine"]
    headers += ["min SQNR dB", "top-1", "top-5", "noise floor", "result"]
    rows = []
    for s in shapes:
        e = s["errors"]
        cosine = number(e["min_cosine_similarity"])
        rows.append(
            [
                s["batch_size"],
                s["image_size"],
                e["samples"],
                e["max_abs_error"],
                e["max_rel_error"],
                e["mean_abs_error"],
                f"{cosine:.7f}" if cosine is not None else e["min_cosine_similarity"],
                e["min_sqnr_db"],
                e["top1_agreement"],
                e["top5_agreement"],
                s["noise_floor_max_abs"],
                badge(s["passed"]),
            ]
        )
    return table(headers, rows, name="shapes")


def layers_block(found: dict[str, Any]) -> str:
    layers = found["layers"]
    first = found.get("first_divergence")
    where = (
        f"at batch {found['batch_size']}, {found['image_size']}x{found['image_size']}, "
        f"{len(layers)} points matched by {found['mapping']}"
    )
    parts = ['<h3 id="layers">Layer by layer</h3>']
    if first:
        ratio = number(first["rel_error"]) / number(first["limit_rel"])
        parts.append(
            '<div class="divergence"><p class="label">First divergent layer</p>'
            f'<p class="name">{escape(first["name"])}</p>'
            f"<p>{escape(first['kind'])}, ONNX value <code>{escape(first['onnx_value'])}</code>:"
            f" error {format_cell(number(first['rel_error']))} of the activation's RMS against "
            f"a limit of {format_cell(number(first['limit_rel']))} ({ratio:,.0f}x the limit; "
            f"the fp32 noise floor there is {format_cell(number(first['noise_floor_rel']))})."
            " Layers before it agree with the eager model, so look here first.</p></div>"
        )
    else:
        parts.append(f"<p>No point beyond tolerance ({escape(where)}).</p>")
    parts.append(
        figure(
            layer_chart(layers, first),
            f"Error per layer against its fp32 noise "
            f"floor, {where}. A point above the dashed limit is beyond tolerance.",
        )
    )
    rows = [
        [
            layer["name"],
            layer["kind"],
            layer["rel_error"],
            layer["noise_floor_rel"],
            layer["limit_rel"],
            layer["max_abs_error"],
            badge(not layer["beyond_tolerance"], good="within", bad="BEYOND"),
        ]
        for layer in layers
    ]
    headers = ["point", "kind", "error / RMS", "noise floor", "limit", "max abs", "result"]
    parts.append(
        "<details open><summary>Every point</summary>"
        + table(headers, rows, name="layers", highlight=[x["beyond_tolerance"] for x in layers])
        + "</details>"
    )
    if found.get("unmatched"):
        parts.append(
            f'<p class="note">Not found in the ONNX graph: {escape(", ".join(found["unmatched"]))}'
            "</p>"
        )
    return "\n".join(parts)


def layer_chart(layers: list[dict[str, Any]], first: dict[str, Any] | None) -> str:
    errors = [number(layer["rel_error"]) for layer in layers]
    finite = [e for e in errors if e is not None and math.isfinite(e)]
    noise = [number(layer["noise_floor_rel"]) or 0.0 for layer in layers]
    limits = [number(layer["limit_rel"]) or 0.0 for layer in layers]
    y = log_axis(finite + noise + limits, label="max error / activation RMS")
    ticks, seen = [], set()
    for i, layer in enumerate(layers):
        stage = stage_of(layer["name"])
        if stage not in seen:
            seen.add(stage)
            ticks.append((float(i), stage))
    x = Axis(-0.5, len(layers) - 0.5, label="point, in graph order", ticks=tuple(ticks))
    chart = Chart(x, y, "per-layer error against the fp32 noise floor")
    chart.series([(i, v) for i, v in enumerate(noise) if v > 0], NOISE, label="fp32 noise floor")
    chart.series([(i, v) for i, v in enumerate(limits)], LIMIT, label="limit", markers=False)
    points, tips = [], []
    for i, (layer, error) in enumerate(zip(layers, errors, strict=True)):
        value = y.high if error is None or not math.isfinite(error) else error
        points.append((i, value))
        tips.append(f"{layer['name']} ({layer['kind']}): {format_cell(error)}")
    chart.series(points, ORT, label="ONNX Runtime error", tips=tips)
    for i, layer in enumerate(layers):
        if layer["beyond_tolerance"]:
            chart.mark(i, points[i][1], DIVERGED, tips[i], size=5)
    if any(layer["beyond_tolerance"] for layer in layers):
        chart.legend.append(("beyond tolerance", DIVERGED))
    if first:
        index = next(i for i, layer in enumerate(layers) if layer["name"] == first["name"])
        chart.mark(index, points[index][1], Style(DIVERGED.color, "", "circle"), tips[index], 7)
        anchor = "end" if index > len(layers) / 2 else "start"
        chart.text(
            chart.px(index),
            chart.py(points[index][1]) + 22,
            f"first divergence: {first['name']}",
            color=DIVERGED.color,
            anchor=anchor,
        )
    return chart.render()


def stage_of(name: str) -> str:
    """The network stage a point belongs to, for the chart's ticks."""
    head = name.split(" ")[0].split(".")[0]
    if head.startswith("layer"):
        return head
    return "fc" if head in ("logits", "fc") else "stem"


# ---- bench --------------------------------------------------------------------------------


def bench_section(record: dict[str, Any]) -> str:
    bench = record.get("bench")
    parts = ['<section id="bench">', "<h2>Bench</h2>"]
    if bench is None:
        parts += [
            f'<p class="skipped">Skipped: verification failed '
            f"({escape(verify_summary(record['verify']))}). Timing a file that does not compute "
            "the model would measure the wrong model.</p>",
            "</section>",
        ]
        return "\n".join(parts)
    options = bench.get("options") or {}
    parts.append(
        f"<p>{escape(bench['provider'])}, {bench['threads']} threads, input "
        f"{escape(bench.get('input_dtype', ''))}, spinning {on(bench.get('spinning'))}, IO "
        f"binding {on(bench.get('io_binding'))}, graph optimization "
        f"{escape(str(bench.get('graph_optimization')))}; "
        f"{escape(timed_loop(options))} per batch size after a warm-up, every run timed on "
        "its own. Throughput is images over the timed loop's wall time; PyTorch eager ran "
        "the same batch after ONNX Runtime's session was closed.</p>"
    )
    parts.append(bench_table(bench))
    notes = list(bench.get("warnings") or [])
    for b in bench["batches"]:
        notes += [f"batch {b['batch_size']}: {w}" for w in b.get("warnings") or []]
        if b.get("error"):
            notes.append(f"batch {b['batch_size']}: failed: {b['error']}")
    if notes:
        parts.append(bullets(notes, "warnings"))
    charts = [figure(throughput_chart(record), "Throughput against batch size")]
    for batch in bench["batches"]:
        chart = latency_chart(bench, batch)
        if chart:
            charts.append(
                figure(
                    chart,
                    f"Latency distribution at batch {batch['batch_size']} "
                    "(share of runs at or below a latency), p50 and p99 marked",
                )
            )
    parts.append(f'<div class="charts">{"".join(charts)}</div>')
    parts.append("</section>")
    return "\n".join(parts)


def timed_loop(options: dict[str, Any]) -> str:
    if options.get("iterations"):
        return f"{options['iterations']} timed runs"
    seconds = number(options.get("duration_s"))
    return f"{seconds:g} s of timed runs" if seconds else "the default timed seconds"


def bench_table(bench: dict[str, Any]) -> str:
    eager = any(b.get("torch_runs") for b in bench["batches"])
    headers = ["batch", "runs", "mean ms", "p50 ms", "p90 ms", "p99 ms", "max ms", "cv"]
    headers.append("images/s")
    if eager:
        headers += ["eager p50 ms", "eager p99 ms", "eager images/s", "speed-up"]
    rows = []
    for b in bench["batches"]:
        if b.get("error"):
            rows.append(
                [b["batch_size"], Html(f'<span class="bad">failed: {escape(b["error"])}</span>')]
                + [""] * (len(headers) - 2)
            )
            continue
        row = [b["batch_size"], b["runs"], b["mean_ms"], b["p50_ms"], b["p90_ms"], b["p99_ms"]]
        row += [b["max_ms"], b["cv"], b["images_per_s"]]
        if eager:
            speedup = number(b.get("speedup_vs_torch"))
            row += [b.get("torch_p50_ms"), b.get("torch_p99_ms"), b.get("torch_images_per_s")]
            row.append(f"{speedup:.2f}x" if speedup is not None else None)
        rows.append(row)
    return table(headers, rows, name="bench")


def throughput_chart(record: dict[str, Any]) -> str:
    series = [("ONNX Runtime fp32", ORT, record["bench"], "images_per_s")]
    series.append(("PyTorch eager", EAGER, record["bench"], "torch_images_per_s"))
    if record.get("int8_bench"):
        series.append(("ONNX Runtime int8", INT8, record["int8_bench"], "images_per_s"))
    lines = []
    for label, style, bench, key in series:
        points = [
            (b["batch_size"], number(b.get(key)))
            for b in bench["batches"]
            if number(b.get(key)) is not None
        ]
        if points:
            lines.append((label, style, points))
    sizes = sorted({b["batch_size"] for b in record["bench"]["batches"]})
    values = [v for _, _, points in lines for _, v in points] or [1.0]
    low, high = min(sizes), max(sizes)
    x = Axis(
        low / 1.3,
        high * 1.3,
        log=True,
        label="batch size",
        ticks=tuple((float(s), str(s)) for s in sizes),
    )
    chart = Chart(
        x, linear_axis(values, label="images/s", zero=True), "throughput against batch size"
    )
    for label, style, points in lines:
        tips = [f"{label}, batch {b}: {format_cell(v)} images/s" for b, v in points]
        chart.series(points, style, label=label, tips=tips)
    return chart.render()


def latency_chart(bench: dict[str, Any], batch: dict[str, Any]) -> str:
    """Cumulative distribution of every timed run's latency, one curve per engine."""
    runs = {
        t["engine"]: [v for v in map(number, t["latencies_ms"]) if v is not None]
        for t in bench.get("run_times") or []
        if t.get("batch_size") == batch["batch_size"] and t.get("latencies_ms")
    }
    if not runs.get("onnxruntime"):
        return ""
    engines = [("onnxruntime", "ONNX Runtime", ORT, "")]
    if runs.get("torch"):
        engines.append(("torch", "PyTorch eager", EAGER, "torch_"))
    every = [v for e, *_ in engines for v in runs[e]]
    if max(every) / max(min(every), 1e-9) > 20:
        x = log_axis(every, label="latency (ms)")
    else:
        x = linear_axis(every, label="latency (ms)")
    y = Axis(
        0.0,
        1.0,
        label="share of runs",
        ticks=tuple((v, f"{v:.0%}") for v in (0, 0.25, 0.5, 0.75, 1.0)),
    )
    chart = Chart(x, y, f"latency distribution at batch {batch['batch_size']}")
    for row, (engine, label, style, prefix) in enumerate(engines):
        values = np.sort(np.asarray(runs[engine]))
        count = len(values)
        if count > CDF_POINTS:  # the curve through evenly spaced quantiles
            shares = np.linspace(0, 1, CDF_POINTS)
            points = list(zip(np.quantile(values, shares).tolist(), shares.tolist(), strict=True))
        else:  # the exact staircase: up by 1/count at each run
            points = [(float(values[0]), 0.0)]
            for i, value in enumerate(values.tolist()):
                points += [(value, i / count), (value, (i + 1) / count)]
        runs_label = f"{count} run" + ("s" if count != 1 else "")
        chart.series(points, style, label=f"{label} ({runs_label})", markers=False)
        for name, lane in (("p50", 0), ("p99", 1)):
            value = number(batch.get(f"{prefix}{name}_ms"))
            if value is not None:
                chart.vline(
                    value,
                    Style(style.color, "3 3", ""),
                    f"{name} {format_cell(value)}",
                    row=2 * row + lane,
                )
    return chart.render()


# ---- int8 ---------------------------------------------------------------------------------


def int8_section(record: dict[str, Any]) -> str:
    optimize = record["optimize"]
    guard = optimize.get("guard")
    parts = ['<section id="int8">', "<h2>fp32 and int8</h2>"]
    meta = optimize["metadata"]
    parts.append(
        f"<p>int8: {escape(meta.get('calibration', ''))}; made in "
        + escape(", ".join(f"{k} {v:.1f} s" for k, v in optimize.get("step_seconds", {}).items()))
        + ". Its accuracy guard verifies it against the eager fp32 model on held-out "
        "inputs before it is written.</p>"
    )
    if optimize.get("output") is None:
        summary = verify_summary(guard) if guard else "no guard report"
        parts.append(
            f'<p class="verdict fail">The accuracy guard refused the int8 file, so '
            f"nothing was written: {escape(summary)}.</p>"
        )
    bench = record.get("int8_bench")
    if bench:
        parts.append("<h3>Speed</h3>" + speed_table(record))
        notes = [
            f"int8 batch {b['batch_size']}: {w}"
            for b in bench["batches"]
            for w in b.get("warnings") or []
        ]
        if notes:
            parts.append(bullets(notes, "warnings"))
    if guard:
        parts.append(
            "<h3>Accuracy against the eager fp32 model</h3>"
            + accuracy_table(record["verify"], guard)
        )
    parts.append("</section>")
    return "\n".join(parts)


def speed_table(record: dict[str, Any]) -> str:
    fp32 = {b["batch_size"]: b for b in record["bench"]["batches"]}
    headers = ["batch", "fp32 images/s", "int8 images/s", "int8 / fp32", "fp32 p50 ms"]
    headers += ["int8 p50 ms", "fp32 p99 ms", "int8 p99 ms", "eager images/s", "int8 / eager"]
    rows = []
    for b in record["int8_bench"]["batches"]:
        base = fp32.get(b["batch_size"], {})
        int8_rate = number(b.get("images_per_s"))
        fp32_rate = number(base.get("images_per_s"))
        eager_rate = number(base.get("torch_images_per_s"))
        rows.append(
            [
                b["batch_size"],
                fp32_rate,
                int8_rate,
                ratio(int8_rate, fp32_rate),
                base.get("p50_ms"),
                b.get("p50_ms"),
                base.get("p99_ms"),
                b.get("p99_ms"),
                eager_rate,
                ratio(int8_rate, eager_rate),
            ]
        )
    return table(headers, rows, name="int8-speed")


def accuracy_table(fp32: dict[str, Any], int8: dict[str, Any]) -> str:
    """Worst case over the shapes each was verified at, fp32 and int8 side by side."""

    def worst(verify: dict[str, Any], key: str, pick=min) -> float | None:
        values = [number(s["errors"][key]) for s in verify["shapes"]]
        values = [v for v in values if v is not None]
        return pick(values) if values else None

    rows = []
    for label, key, pick in (
        ("min cosine similarity", "min_cosine_similarity", min),
        ("top-1 agreement (lowest)", "top1_agreement", min),
        ("top-5 agreement (lowest)", "top5_agreement", min),
        ("min SQNR (dB)", "min_sqnr_db", min),
        ("max abs error", "max_abs_error", max),
    ):
        a, b = worst(fp32, key, pick), worst(int8, key, pick)
        if key == "min_cosine_similarity":
            a, b = (f"{v:.6f}" if v is not None else None for v in (a, b))
        rows.append([label, a, b])
    rows.append(
        [
            "samples",
            sum(s["errors"]["samples"] for s in fp32["shapes"]),
            sum(s["errors"]["samples"] for s in int8["shapes"]),
        ]
    )
    rows.append(["verdict", badge(fp32["passed"]), badge(int8["passed"])])
    return table(["against eager fp32", "fp32 file", "int8 file"], rows, name="int8-accuracy")


def ratio(a: float | None, b: float | None) -> str | None:
    return f"{a / b:.2f}x" if a and b else None


# ---- profile, tune, files -----------------------------------------------------------------


def extra_section(folder: Path, name: str) -> str:
    """Tables of ``folder/NAME.json`` and its PNG plots, if any; a broken record is named,
    never fatal: these come from other commands, perhaps other versions of them."""
    source = folder / f"{name}.json"
    images = sorted(folder.glob(f"{name}*.png"))
    if not source.exists() and not images:
        return ""
    parts = [f'<section id="{name}">', f"<h2>{name.capitalize()}</h2>"]
    if source.exists():
        try:
            if source.stat().st_size > MAX_EXTRA_BYTES:
                raise ValueError(f"{source.stat().st_size} bytes, too big to show")
            data = json.loads(source.read_text())
            tables = record_tables(data)
            if not tables:
                raise ValueError("no list of records in it")
            parts += [
                (f"<h3>{escape(title)}</h3>" if title else "") + table_of_dicts(rows, name)
                for title, rows in tables
            ]
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            parts.append(
                f'<p class="note">{escape(source.name)}: not shown ({escape(str(exc))})</p>'
            )
    for image in images:
        parts.append(embedded_png(image))
    parts.append("</section>")
    return "\n".join(parts)


def record_tables(data: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every list of records in ``data`` (at the top or one level down), each nested flat
    record as a one-row table, and the top level's plain fields as one more."""
    if is_records(data):
        return [("", data)]
    if not isinstance(data, dict):
        return []
    tables = []
    for key, value in data.items():
        if is_records(value):
            tables.append((str(key), value))
        elif (
            isinstance(value, dict)
            and value
            and not any(isinstance(v, (dict, list)) for v in value.values())
        ):
            tables.append((str(key), [value]))
    plain = {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
    if plain:
        tables.insert(0, ("summary" if tables else "", [plain]))
    return tables


def is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def table_of_dicts(rows: list[dict[str, Any]], name: str) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [str(k) for k in row if str(k) not in columns]
    shown = columns[:MAX_TABLE_COLUMNS]
    cells = [[plain(row.get(c)) for c in shown] for row in rows[:MAX_TABLE_ROWS]]
    notes = []
    if len(rows) > MAX_TABLE_ROWS:
        notes.append(f"{len(rows) - MAX_TABLE_ROWS} more rows")
    if len(columns) > MAX_TABLE_COLUMNS:
        notes.append(f"{len(columns) - MAX_TABLE_COLUMNS} more columns")
    note = f'<p class="note">{escape("; ".join(notes))} in the JSON record.</p>' if notes else ""
    return table(shown, cells, name=name) + note


def plain(value: Any) -> Any:
    """A cell for any JSON value: scalars as they are, anything nested as short JSON."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def embedded_png(path: Path) -> str:
    try:
        data = path.read_bytes() if path.stat().st_size <= MAX_EXTRA_BYTES else b""
    except OSError as exc:
        return f'<p class="note">{escape(path.name)}: not shown ({escape(exc.strerror or "")})</p>'
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return f'<p class="note">{escape(path.name)}: not shown (not a PNG, or too big)</p>'
    encoded = base64.b64encode(data).decode()
    return (
        f'<figure><img src="data:image/png;base64,{encoded}" alt="{escape(path.name)}">'
        f"<figcaption>{escape(path.name)}</figcaption></figure>"
    )


def files_section(record: dict[str, Any], folder: Path) -> str:
    """The run's artifacts, then whatever other commands have added to the folder since."""
    names = [Path(p).name for p in record.get("artifacts") or []]
    names += sorted(
        p.name for p in folder.iterdir() if p.name not in names and not p.name.startswith(".")
    )
    items = "".join(f'<li><a href="{escape(n)}">{escape(n)}</a></li>' for n in names)
    return (
        '<section id="files"><h2>Files</h2>'
        f"<p>Beside this page, in the run's folder. <code>{RECORD_NAME}</code> holds every "
        "figure on this page (and each timed run's latency) for programs.</p>"
        f"<ul>{items}</ul></section>"
    )


# ---- small pieces -------------------------------------------------------------------------


def number(value: Any) -> float | None:
    """A float from a record value (non-finite numbers are stored as strings), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def on(flag: Any) -> str:
    return "on" if flag else "off"


def badge(ok: bool, *, good: str = "pass", bad: str = "FAIL") -> Html:
    return Html(f'<span class="{"ok" if ok else "bad"}">{good if ok else bad}</span>')


def figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def bullets(items: Iterable[str], name: str) -> str:
    lis = "".join(f"<li>{escape(item)}</li>" for item in items)
    return f'<ul class="{name}">{lis}</ul>'


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    name: str,
    highlight: Sequence[bool] | None = None,
) -> str:
    """A table; numbers right-aligned and formatted as in the terminal, ``Html`` cells as is."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for value in row:
            if isinstance(value, Html):
                cells.append(f"<td>{value}</td>")
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                cells.append(f'<td class="num">{escape(format_cell(value))}</td>')
            elif value is None:
                cells.append('<td class="num">&ndash;</td>')
            else:
                text = (
                    {True: "yes", False: "no"}.get(value, value)
                    if isinstance(value, bool)
                    else str(value)
                )
                cells.append(f"<td>{escape(text)}</td>")
        marked = ' class="beyond"' if highlight and highlight[i] else ""
        body.append(f"<tr{marked}>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table class="{name}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


CSS = """
:root { --ink: #1d1d1f; --muted: #5f6368; --line: #d9d9de; --pass: #1b7f3b; --fail: #c62828;
  --warn: #9a5b00; --tint: #f5f6f8; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
  max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0; } h2 { font-size: 20px; margin: 0 0 8px; }
h3 { font-size: 16px; margin: 20px 0 6px; }
header h2 { font-size: 14px; text-transform: uppercase; letter-spacing: .04em;
  color: var(--muted); }
section { border-top: 2px solid var(--line); margin-top: 28px; padding-top: 14px; }
.subtitle { color: var(--muted); margin: 2px 0 12px; }
.badge { display: inline-block; font-size: .8em; padding: 1px 8px; border-radius: 4px; color: #fff;
  vertical-align: middle; font-weight: 600; }
.badge.pass { background: var(--pass); } .badge.fail { background: var(--fail); }
.verdict { border-left: 6px solid var(--pass); background: #eef7f0; padding: 8px 16px;
  margin: 8px 0 14px; }
.verdict.fail { border-color: var(--fail); background: #fdecea; }
.verdict p { margin: 6px 0; }
.speedup .big { font-size: 28px; font-weight: 700; }
.warn, .warnings li { color: var(--warn); }
.facts { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
.card { background: var(--tint); padding: 10px 14px; border-radius: 6px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0;
  font-size: 13px; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
.command code { display: block; background: var(--tint); padding: 8px 10px; border-radius: 4px;
  overflow-wrap: anywhere; white-space: pre-wrap; font-size: 13px; }
nav ul { list-style: none; padding: 0; display: flex; gap: 18px; margin: 10px 0 0; }
a { color: #1f63a8; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { padding: 3px 10px; border-bottom: 1px solid var(--line); text-align: left;
  white-space: nowrap; }
th { background: var(--tint); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.beyond td { background: #fdecea; }
.ok { color: var(--pass); font-weight: 600; } .bad { color: var(--fail); font-weight: 600; }
.divergence { border: 3px solid var(--fail); border-radius: 6px; padding: 6px 16px; margin: 10px 0;
  background: #fff7f6; }
.divergence .label { text-transform: uppercase; font-size: 12px; letter-spacing: .05em;
  color: var(--fail); margin: 4px 0 0; font-weight: 700; }
.divergence .name { font: 700 24px ui-monospace, Menlo, Consolas, monospace; margin: 2px 0; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 12px; }
figure { margin: 10px 0; break-inside: avoid; }
figure svg, figure img { width: 100%; max-width: 640px; height: auto; display: block; }
figcaption { font-size: 12px; color: var(--muted); max-width: 640px; }
details summary { cursor: default; color: var(--muted); font-size: 13px; }
.note, .skipped { color: var(--muted); }
@media (max-width: 760px) { .facts { grid-template-columns: 1fr; } }
@media print {
  @page { margin: 14mm 12mm; }
  body { font-size: 10.5pt; max-width: none; padding: 0; }
  nav { display: none; }
  section { break-before: auto; }
  h2, h3 { break-after: avoid; }
  table { font-size: 8.5pt; } th, td { padding: 1px 6px; }
  tr, figure, .divergence, .verdict, .card { break-inside: avoid; }
  .scroll { overflow: visible; }
  .charts { display: block; }  /* one chart a row: tick labels stay readable on paper */
  figure svg, figure img { max-width: 560px; }
  a { color: inherit; text-decoration: none; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""
