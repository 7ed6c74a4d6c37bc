"""Every chart the toolkit draws, with matplotlib: the page's inline SVG and the ``--plot`` PNGs.

One plotting library for both, so a chart looks the same on the page and in a PNG (throughput
against batch size is one function for both). Functions take plain numbers, never a perf
report, so this module sits below everything that measures. matplotlib is imported inside
them: importing ``report`` stays cheap. SVG is written with fixed ids and no date, so the
same record renders to the same page, with text kept as ``<text>`` (searchable, small).
Series differ by dash pattern and marker as well as by colour, so they survive grey printing.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from resnet_deploy.files import atomic_output

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PAGE_SIZE = (6.0, 3.2)  # inches, a page chart; the page scales it to its column
SVG_SETTINGS = {"svg.fonttype": "none"}  # text as <text>: searchable, selectable, small
NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
PNG_DPI = 110


@dataclass(frozen=True)
class Style:
    color: str
    linestyle: str = "-"  # a matplotlib line style; "" draws markers only
    marker: str = "o"  # a matplotlib marker; "" for none


ORT = Style("#1f63a8", "-", "o")
EAGER = Style("#333333", "--", "s")
INT8 = Style("#c2570c", ":", "^")
OPENVINO = Style("#2e7d32", "-.", "D")
NOISE = Style("#8a8a8a", "-", "o")
LIMIT = Style("#c62828", "--", "")
DIVERGED = Style("#c62828", "", "o")


@dataclass(frozen=True)
class Series:
    """One labelled line (or set of markers) of points."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    style: Style


@dataclass(frozen=True)
class Marker:
    """A vertical line (``y`` None) or a circled point, labelled on the chart."""

    x: float
    label: str
    color: str = "#c62828"
    y: float | None = None


def new_figure(size: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure  # heavy; only when a chart is drawn

    return Figure(figsize=size, layout="constrained")


def draw(axes: Axes, series: Series, gid: str, **extra: float) -> None:
    """``series`` on ``axes``, its SVG group named ``gid`` (a test finds it by that)."""
    style = series.style
    axes.plot(
        series.xs,
        series.ys,
        color=style.color,
        linestyle=style.linestyle or "none",
        marker=style.marker or None,
        label=series.label or None,
        gid=gid,
        **extra,
    )


def to_svg(figure: Figure, description: str) -> str:
    """The figure as an ``<svg>`` element to inline in HTML, titled ``description``.

    The hash salt (the description) makes marker and clip ids stable and different per chart,
    so several charts share one page without clashing ids."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({**SVG_SETTINGS, "svg.hashsalt": description}):
        figure.savefig(buffer, format="svg", metadata={"Title": description, **NO_METADATA})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def write_png(figure: Figure, path: Path, *, replace: bool = False) -> None:
    with atomic_output(path, replace=replace) as tmp:
        figure.savefig(tmp, format="png", dpi=PNG_DPI)


def against_batch(
    axes: Axes, lines: Sequence[Series], sizes: Sequence[int], label: str, key: str
) -> None:
    """Lines against batch size on a log-2 axis ticked at the sizes measured."""
    for i, line in enumerate(lines):
        draw(axes, line, f"{key}-series-{i}")
    axes.set_xscale("log", base=2)
    axes.set_xticks(list(sizes), [str(s) for s in sizes])
    axes.minorticks_off()
    axes.set_xlabel("batch size")
    axes.set_ylabel(label)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)


def throughput_svg(lines: Sequence[Series], sizes: Sequence[int]) -> str:
    figure = new_figure(PAGE_SIZE)
    against_batch(figure.subplots(), lines, sizes, "images/s", "throughput")
    return to_svg(figure, "throughput against batch size")


def bench_png(
    path: Path,
    *,
    latency: Sequence[Series],
    throughput: Sequence[Series],
    sizes: Sequence[int],
    title: str,
    warning: str = "",
    replace: bool = False,
) -> None:
    """``bench --plot``: latency and throughput against batch size, side by side."""
    figure = new_figure((11, 4.2))
    left, right = figure.subplots(1, 2)
    against_batch(left, latency, sizes, "latency (ms)", "latency")
    against_batch(right, throughput, sizes, "throughput (images/s)", "throughput")
    figure.suptitle(title, fontsize=10)
    if warning:
        figure.text(
            0.5,
            0.5,
            warning,
            color="red",
            alpha=0.5,
            fontsize=16,
            ha="center",
            va="center",
            rotation=20,
        )
    write_png(figure, path, replace=replace)


def layer_error_svg(
    names: Sequence[str],
    errors: Sequence[float | None],
    noise: Sequence[float],
    limits: Sequence[float],
    beyond: Sequence[bool],
    *,
    stages: Sequence[tuple[float, str]],
    first: int | None,
) -> str:
    """Each point's error in graph order on a log axis, over its noise floor and its limit;
    a point with no finite error is drawn at the top."""
    positive = [v for v in (*errors, *noise, *limits) if v and v > 0 and math.isfinite(v)]
    top = 10.0 ** math.ceil(math.log10(max(positive or [1.0])))
    shown = [e if e is not None and math.isfinite(e) and e > 0 else top for e in errors]
    index = range(len(names))
    figure = new_figure(PAGE_SIZE)
    axes = figure.subplots()
    keep = [i for i in index if noise[i] > 0]
    draw(
        axes,
        Series("fp32 noise floor", keep, [noise[i] for i in keep], NOISE),
        "layers-noise",
        markersize=3,
    )
    keep = [i for i in index if limits[i] > 0]
    draw(axes, Series("limit", keep, [limits[i] for i in keep], LIMIT), "layers-limit")
    draw(axes, Series("ONNX Runtime error", index, shown, ORT), "layers-series-0", markersize=4)
    bad = [i for i in index if beyond[i]]
    if bad:
        points = Series("beyond tolerance", bad, [shown[i] for i in bad], DIVERGED)
        draw(axes, points, "layers-beyond", markersize=7)
    if first is not None:
        axes.plot(
            [first],
            [shown[first]],
            "o",
            markersize=14,
            markerfacecolor="none",
            markeredgecolor=DIVERGED.color,
            gid="layers-first",
        )
        axes.annotate(
            f"first divergence: {names[first]}",
            (first, shown[first]),
            xytext=(0, -22),
            textcoords="offset points",
            color=DIVERGED.color,
            ha="right" if first > len(names) / 2 else "left",
        )
    axes.set_yscale("log")
    axes.set_ylim(top=top)
    axes.set_xlim(-0.5, len(names) - 0.5)
    axes.set_xticks([i for i, _ in stages], [stage for _, stage in stages])
    axes.set_xlabel("point, in graph order")
    axes.set_ylabel("max error / activation RMS")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncols=2)
    return to_svg(figure, "per-layer error against the fp32 noise floor")


def latency_cdf_svg(batch: int, curves: Sequence[Series], marks: Sequence[Marker]) -> str:
    """Share of runs at or below each latency, one curve per engine, ``marks`` as labelled
    vertical lines (labels staggered so neighbours stay readable)."""
    from matplotlib.ticker import PercentFormatter

    figure = new_figure(PAGE_SIZE)
    axes = figure.subplots()
    for i, curve in enumerate(curves):
        draw(axes, curve, f"latency-{batch}-series-{i}")
    every = [x for curve in curves for x in curve.xs]
    if max(every) / max(min(every), 1e-9) > 20:
        axes.set_xscale("log")
    axes.autoscale_view()
    for row, mark in enumerate(marks):
        axes.axvline(mark.x, color=mark.color, linestyle=":", linewidth=1.2)
        where = axes.transAxes.inverted().transform(axes.transData.transform((mark.x, 0)))[0]
        right = where > 0.7  # the label beside the line, on the side with room for it
        axes.annotate(
            mark.label,
            (mark.x, 1.0),
            xycoords=axes.get_xaxis_transform(),
            xytext=(-3 if right else 3, -10 - 11 * row),
            textcoords="offset points",
            color=mark.color,
            fontsize=8,
            ha="right" if right else "left",
        )
    axes.set_ylim(0, 1.02)
    axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("share of runs")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    return to_svg(figure, f"latency distribution at batch {batch}")


def tune_png(
    path: Path,
    *,
    groups: Sequence[Series],
    bound: float,
    winner: Marker | None,
    title: str,
    replace: bool = False,
) -> None:
    """``tune --plot``: throughput against p99 per candidate, the p99 bound and winner marked."""
    figure = new_figure((8, 5))
    axes = figure.subplots()
    for group in groups:
        style = group.style
        axes.scatter(group.xs, group.ys, color=style.color, marker=style.marker, label=group.label)
    axes.axvline(bound, color="r", linestyle="--", label="p99 bound")
    if winner is not None and winner.y is not None:
        point = (winner.x, winner.y)
        axes.scatter(*point, s=200, facecolors="none", edgecolors="k", label="winner")
        axes.annotate(winner.label, point, fontsize=7, xytext=(5, -12), textcoords="offset points")
    axes.set_xlabel("p99 latency per batch (ms)")
    axes.set_ylabel("images/s")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.suptitle(title, fontsize=9)
    write_png(figure, path, replace=replace)


@dataclass(frozen=True)
class Layer:
    """One layer on a roofline: where it ran and how much of the time it took."""

    name: str
    ops_per_byte: float
    rate: float
    share: float


def roofline_png(
    path: Path,
    *,
    layers: Sequence[Layer],
    peak: float,
    bandwidth: float,
    roof: str,
    compare: Series | None,
    unit: str,
    title: str,
    replace: bool = False,
) -> None:
    """``profile --plot``: each layer's achieved rate against its operations per byte, under
    the roof ``min(peak, bandwidth x intensity)``; marker area is the layer's share of time."""
    import numpy as np

    figure = new_figure((9, 5.5))
    axes = figure.subplots()
    intensity = np.array([layer.ops_per_byte for layer in layers])
    rate = np.array([layer.rate for layer in layers])
    sizes = [20 + 2000 * layer.share for layer in layers]
    axes.scatter(intensity, rate, s=sizes, alpha=0.6, label="ONNX Runtime layers")
    for layer in layers:
        if layer.share > 0.03:
            axes.annotate(
                layer.name,
                (layer.ops_per_byte, layer.rate),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    xs = np.logspace(np.log10(intensity.min() / 2), np.log10(intensity.max() * 2), 100)
    axes.plot(xs, np.minimum(peak, bandwidth * xs), "k-", label=roof)
    if compare is not None:
        axes.scatter(
            compare.xs, compare.ys, color=compare.style.color, marker="x", label=compare.label
        )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("operations per byte (input + weights + output)")
    axes.set_ylabel(unit)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    figure.suptitle(title, fontsize=9)
    write_png(figure, path, replace=replace)
