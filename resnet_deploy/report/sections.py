"""What each section of the run's page shows, computed from the run record as plain values.

Nothing here writes markup: the templates do, with autoescaping, so a hostile file name or
layer name in a record is shown as text. Tables are ``Table`` of ``Cell``: the one place where
numbers are formatted as in the terminal.
"""

from __future__ import annotations

import base64
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.report import charts
from resnet_deploy.report.records import format_cell

MAX_EXTRA_BYTES = 20_000_000  # a record or image bigger than this is named, not embedded
MAX_TABLE_ROWS = 300
MAX_TABLE_COLUMNS = 16
CDF_POINTS = 300  # a latency curve is drawn through this many quantiles at most
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Cell:
    text: str
    num: bool = False  # right-aligned, tabular digits
    mark: str = ""  # "ok" or "bad": a coloured verdict


@dataclass(frozen=True)
class Table:
    name: str  # the table's class, by which a test (or a stylesheet) finds it
    headers: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    beyond: Sequence[bool] = ()  # rows to highlight
    note: str = ""


@dataclass(frozen=True)
class Chart:
    svg: str  # matplotlib's own escaped SVG, inlined as is
    caption: str


@dataclass
class Extra:
    """A profile or tune record (and its PNG plots) found in the run folder."""

    name: str
    tables: list[tuple[str, Table]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (file name, base64 PNG)


NOT_A_NUMBER = "n/a"  # what a NaN or infinite value is shown as, in tables and charts alike


def number(value: Any) -> float | None:
    """A finite float from a record value, else None: non-finite numbers are stored as strings
    ("nan", "inf"), and a record from elsewhere may hold anything."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        found = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return found if math.isfinite(found) else None


def shown(value: Any, spec: str = "g") -> str:
    """A number formatted by ``spec``, or "n/a" when the record holds no finite number."""
    found = number(value)
    return NOT_A_NUMBER if found is None else format(found, spec)


def cell(value: Any) -> Cell:
    if isinstance(value, Cell):
        return value
    if isinstance(value, bool):
        return Cell("yes" if value else "no")
    if isinstance(value, (int, float)) or _non_finite_text(value):
        found = number(value)
        return Cell(NOT_A_NUMBER if found is None else format_cell(value), num=True)
    if value is None:
        return Cell("\u2013", num=True)
    return Cell(str(value))


def _non_finite_text(value: Any) -> bool:
    """How ``to_record`` stores NaN and infinity: as the strings Python writes for them."""
    return isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf", "infinity")


def chart_text(text: str) -> str:
    """Record text as matplotlib draws it literally: a '$' would start mathtext."""
    return str(text).replace("$", r"\$")


def drawn(draw: Callable[..., str], *args: Any) -> str:
    """A chart's SVG, or "" (the page says it was not drawn) when values from the record are
    beyond what matplotlib can place, such as 1e308 on a log axis."""
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return draw(*args)
    except (OverflowError, ValueError, FloatingPointError):
        return ""


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, name: str, **extra: Any
) -> Table:
    return Table(name, list(headers), [[cell(v) for v in row] for row in rows], **extra)


def badge(ok: bool, *, good: str = "pass", bad: str = "FAIL") -> Cell:
    return Cell(good if ok else bad, mark="ok" if ok else "bad")


def ratio(a: float | None, b: float | None) -> str | None:
    return f"{a / b:.2f}x" if a and b else None


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


def verify_section(verify: dict[str, Any]) -> dict[str, Any]:
    shapes = verify["shapes"]
    return {
        "verify": verify,
        "shapes": shape_table(shapes),
        "failures": [
            f"batch {s['batch_size']} at {s['image_size']}: {f}"
            for s in shapes
            for f in s["failures"]
        ],
        "layers": layers_block(verify["localization"]) if verify.get("localization") else None,
    }


def shape_table(shapes: list[dict[str, Any]]) -> Table:
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


def layers_block(found: dict[str, Any]) -> dict[str, Any]:
    layers = found["layers"]
    first = found.get("first_divergence")
    where = (
        f"at batch {found['batch_size']}, {found['image_size']}x{found['image_size']}, "
        f"{len(layers)} points matched by {found['mapping']}"
    )
    divergence = None
    if first:
        rel, limit = number(first["rel_error"]), number(first["limit_rel"])
        divergence = {
            **first,
            "error": format_cell(rel),
            "limit": format_cell(limit),
            "times": shown(rel / limit, ",.0f") if rel is not None and limit else NOT_A_NUMBER,
            "noise": format_cell(number(first["noise_floor_rel"])),
        }
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
    beyond = [layer["beyond_tolerance"] for layer in layers]
    return {
        "first": divergence,
        "where": where,
        "chart": Chart(
            drawn(layer_chart, layers, first),
            f"Error per layer against its fp32 noise floor, {where}. "
            "A point above the dashed limit is beyond tolerance.",
        ),
        "table": table(headers, rows, name="layers", beyond=beyond),
        "unmatched": ", ".join(found.get("unmatched") or []),
    }


def layer_chart(layers: list[dict[str, Any]], first: dict[str, Any] | None) -> str:
    names = [chart_text(layer["name"]) for layer in layers]
    spans: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        spans.setdefault(stage_of(name), []).append(i)
    stages = [((span[0] + span[-1]) / 2, stage) for stage, span in spans.items()]
    return charts.layer_error_svg(
        names,
        [number(layer["rel_error"]) for layer in layers],
        [number(layer["noise_floor_rel"]) or 0.0 for layer in layers],
        [number(layer["limit_rel"]) or 0.0 for layer in layers],
        [bool(layer["beyond_tolerance"]) for layer in layers],
        stages=stages,
        first=names.index(chart_text(first["name"])) if first else None,
    )


def stage_of(name: str) -> str:
    """The network stage a point belongs to: the chart names each under its middle point."""
    head = name.split(" ")[0].split(".")[0]
    if head.startswith("layer"):
        return head
    return "fc" if head in ("logits", "fc") else "stem"


# ---- bench --------------------------------------------------------------------------------


def bench_section(record: dict[str, Any]) -> dict[str, Any]:
    bench = record.get("bench")
    if bench is None:
        return {"skipped": verify_summary(record["verify"])}
    notes = list(bench.get("warnings") or [])
    for b in bench["batches"]:
        notes += [f"batch {b['batch_size']}: {w}" for w in b.get("warnings") or []]
        if b.get("error"):
            notes.append(f"batch {b['batch_size']}: failed: {b['error']}")
    figures = [Chart(drawn(throughput_chart, record), "Throughput against batch size")]
    for batch in bench["batches"]:
        chart = drawn(latency_chart, bench, batch)  # "": no runs kept, or not drawable
        if chart:
            caption = (
                f"Latency distribution at batch {batch['batch_size']} "
                "(share of runs at or below a latency), p50 and p99 marked"
            )
            figures.append(Chart(chart, caption))
    return {
        "skipped": None,
        "bench": bench,
        "loop": timed_loop(bench.get("options") or {}),
        "table": bench_table(bench),
        "notes": notes,
        "charts": figures,
    }


def timed_loop(options: dict[str, Any]) -> str:
    if options.get("iterations"):
        return f"{options['iterations']} timed runs"
    seconds = number(options.get("duration_s"))
    return f"{seconds:g} s of timed runs" if seconds else "the default timed seconds"


def bench_table(bench: dict[str, Any]) -> Table:
    eager = any(b.get("torch_runs") for b in bench["batches"])
    headers = ["batch", "runs", "mean ms", "p50 ms", "p90 ms", "p99 ms", "max ms", "cv"]
    headers.append("images/s")
    if eager:
        headers += ["eager p50 ms", "eager p99 ms", "eager images/s", "speed-up"]
    rows = []
    for b in bench["batches"]:
        if b.get("error"):
            failed = Cell(f"failed: {b['error']}", mark="bad")
            rows.append([b["batch_size"], failed] + [""] * (len(headers) - 2))
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
    series = [("ONNX Runtime fp32", charts.ORT, record["bench"], "images_per_s")]
    series.append(("PyTorch eager", charts.EAGER, record["bench"], "torch_images_per_s"))
    if record.get("int8_bench"):
        series.append(("ONNX Runtime int8", charts.INT8, record["int8_bench"], "images_per_s"))
    lines = []
    for label, style, bench, key in series:
        points = [(b["batch_size"], number(b.get(key))) for b in bench["batches"]]
        points = [(size, value) for size, value in points if value is not None]
        if points:
            sizes, values = zip(*points, strict=True)
            lines.append(charts.Series(label, sizes, values, style))
    sizes = sorted({b["batch_size"] for b in record["bench"]["batches"]})
    return charts.throughput_svg(lines, sizes)


def latency_chart(bench: dict[str, Any], batch: dict[str, Any]) -> str:
    """Cumulative distribution of every timed run's latency, one curve per engine."""
    runs = {
        t["engine"]: [v for v in map(number, t["latencies_ms"]) if v is not None]
        for t in bench.get("run_times") or []
        if t.get("batch_size") == batch["batch_size"] and t.get("latencies_ms")
    }
    if not runs.get("onnxruntime"):
        return ""
    engines = [("onnxruntime", "ONNX Runtime", charts.ORT, "")]
    if runs.get("torch"):
        engines.append(("torch", "PyTorch eager", charts.EAGER, "torch_"))
    curves, marks = [], []
    for engine, label, style, prefix in engines:
        values = np.sort(np.asarray(runs[engine]))
        count = len(values)
        if count > CDF_POINTS:  # the curve through evenly spaced quantiles
            shares = np.linspace(0, 1, CDF_POINTS)
            xs, ys = np.quantile(values, shares).tolist(), shares.tolist()
        else:  # the exact staircase: up by 1/count at each run
            xs = [float(values[0])] + [float(v) for v in values for _ in (0, 1)]
            ys = [0.0] + [(i + up) / count for i in range(count) for up in (0, 1)]
        runs_label = f"{count} run" + ("s" if count != 1 else "")
        curves.append(charts.Series(f"{label} ({runs_label})", xs, ys, replace(style, marker="")))
        for name in ("p50", "p99"):
            value = number(batch.get(f"{prefix}{name}_ms"))
            if value is not None:
                marks.append(charts.Marker(value, f"{name} {format_cell(value)}", style.color))
    return charts.latency_cdf_svg(batch["batch_size"], curves, marks)


# ---- int8 ---------------------------------------------------------------------------------


def int8_section(record: dict[str, Any]) -> dict[str, Any]:
    optimize = record["optimize"]
    guard = optimize.get("guard")
    bench = record.get("int8_bench")
    steps = optimize.get("step_seconds", {}).items()
    return {
        "calibration": optimize["metadata"].get("calibration", ""),
        "steps": ", ".join(f"{k} {shown(v, '.1f')} s" for k, v in steps),
        "refused": None
        if optimize.get("output") is not None
        else (verify_summary(guard) if guard else "no guard report"),
        "speed": speed_table(record) if bench else None,
        "notes": [
            f"int8 batch {b['batch_size']}: {w}"
            for b in (bench or {}).get("batches", [])
            for w in b.get("warnings") or []
        ],
        "accuracy": accuracy_table(record["verify"], guard) if guard else None,
    }


def speed_table(record: dict[str, Any]) -> Table:
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


def accuracy_table(fp32: dict[str, Any], int8: dict[str, Any]) -> Table:
    """Worst case over the shapes each was verified at, fp32 and int8 side by side."""

    def worst(verify: dict[str, Any], key: str, pick=min) -> float | None:
        values = [number(s["errors"][key]) for s in verify["shapes"]]
        values = [v for v in values if v is not None]
        return pick(values) if values else None

    rows: list[list[Any]] = []
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
    samples = [sum(s["errors"]["samples"] for s in v["shapes"]) for v in (fp32, int8)]
    rows.append(["samples", *samples])
    rows.append(["verdict", badge(fp32["passed"]), badge(int8["passed"])])
    return table(["against eager fp32", "fp32 file", "int8 file"], rows, name="int8-accuracy")


# ---- profile, tune, files -----------------------------------------------------------------


def extra_section(folder: Path, name: str) -> Extra | None:
    """Tables of ``folder/NAME.json`` and its PNG plots, if any; a broken record is named,
    never fatal: these come from other commands, perhaps other versions of them."""
    source = folder / f"{name}.json"
    images = sorted(folder.glob(f"{name}*.png"))
    if not source.exists() and not images:
        return None
    extra = Extra(name)
    if source.exists():
        try:
            if source.stat().st_size > MAX_EXTRA_BYTES:
                raise ValueError(f"{source.stat().st_size} bytes, too big to show")
            tables = record_tables(json.loads(source.read_text()))
            if not tables:
                raise ValueError("no list of records in it")
            extra.tables = [(title, table_of_dicts(rows, name)) for title, rows in tables]
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            extra.notes.append(f"{source.name}: not shown ({exc})")
    for image in images:
        try:
            data = image.read_bytes() if image.stat().st_size <= MAX_EXTRA_BYTES else b""
        except OSError as exc:
            extra.notes.append(f"{image.name}: not shown ({exc.strerror or ''})")
            continue
        if data.startswith(PNG_SIGNATURE):
            extra.images.append((image.name, base64.b64encode(data).decode()))
        else:
            extra.notes.append(f"{image.name}: not shown (not a PNG, or too big)")
    return extra


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


def table_of_dicts(rows: list[dict[str, Any]], name: str) -> Table:
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
    return table(shown, cells, name=name, note="; ".join(notes))


def plain(value: Any) -> Any:
    """A cell for any JSON value: scalars as they are, anything nested as short JSON."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def file_names(record: dict[str, Any], folder: Path) -> list[str]:
    """The run's artifacts, then whatever other commands have added to the folder since."""
    names = [Path(p).name for p in record.get("artifacts") or []]
    return names + sorted(
        p.name for p in folder.iterdir() if p.name not in names and not p.name.startswith(".")
    )
