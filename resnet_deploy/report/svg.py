"""Small line charts as inline SVG, for the HTML page: no plotting library, no JavaScript.

SVG drawn here stays sharp on paper, weighs a few kilobytes, and its elements (a ``<path>``
per series, a ``<title>`` tooltip per point) can be checked by a test that parses the page.
Series differ by dash pattern and marker as well as by colour, so they survive grey printing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

WIDTH, HEIGHT = 600, 320
LEFT, RIGHT, TOP, BOTTOM = 70, 16, 34, 46  # margins: tick labels left and below, legend above


@dataclass(frozen=True)
class Axis:
    low: float
    high: float
    log: bool = False
    label: str = ""
    ticks: tuple[tuple[float, str], ...] | None = None  # None: chosen from the range

    def fraction(self, value: float) -> float:
        """Where ``value`` lies between ``low`` (0) and ``high`` (1); clamped to the range."""
        value = min(max(value, self.low), self.high)
        if self.log:
            low, high, value = math.log10(self.low), math.log10(self.high), math.log10(value)
        else:
            low, high = self.low, self.high
        return (value - low) / (high - low) if high > low else 0.5

    def tick_marks(self) -> tuple[tuple[float, str], ...]:
        if self.ticks is not None:
            return self.ticks
        if self.log:
            first, last = math.floor(math.log10(self.low)), math.ceil(math.log10(self.high))
            values = [10.0**d for d in range(first, last + 1)]
            if len(values) < 4:
                values = sorted(m * v for v in values for m in (1, 2, 5))
            return tuple((v, _short(v)) for v in values if self.low <= v <= self.high)
        step = nice_step((self.high - self.low) / 5)
        start = math.ceil(self.low / step) * step
        count = int((self.high - start) / step + 1e-9) + 1
        return tuple((start + i * step, _short(start + i * step)) for i in range(count))


def nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten, the smallest at least ``raw``."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw * 0.999)


def linear_axis(values: Sequence[float], *, label: str, zero: bool = False) -> Axis:
    """A linear axis just wider than ``values`` (from 0 when ``zero``), ending on round ticks."""
    low, high = (0.0 if zero else min(values)), max(values)
    if high <= low:
        high = low + (abs(low) or 1.0)
    step = nice_step((high - low) / 5)
    return Axis(math.floor(low / step) * step, math.ceil(high / step) * step, label=label)


def log_axis(values: Sequence[float], *, label: str) -> Axis:
    """A log axis over the positive ``values``, from decade to decade."""
    positive = [v for v in values if v > 0 and math.isfinite(v)] or [1.0]
    low = 10.0 ** math.floor(math.log10(min(positive)))
    high = 10.0 ** math.ceil(math.log10(max(positive)))
    return Axis(low, high if high > low else low * 10, log=True, label=label)


@dataclass(frozen=True)
class Style:
    color: str
    dash: str = ""  # an SVG stroke-dasharray, "" for solid
    marker: str = "circle"  # circle, square, triangle or "" for none


@dataclass
class Chart:
    """A plot area with two axes; series, markers and lines are added, then ``render`` it."""

    x: Axis
    y: Axis
    description: str  # the chart's <title>: what a screen reader (and a test) reads
    width: int = WIDTH
    height: int = HEIGHT
    parts: list[str] = field(default_factory=list)
    legend: list[tuple[str, Style]] = field(default_factory=list)

    def px(self, x: float) -> float:
        return LEFT + self.x.fraction(x) * (self.width - LEFT - RIGHT)

    def py(self, y: float) -> float:
        return self.height - BOTTOM - self.y.fraction(y) * (self.height - TOP - BOTTOM)

    def series(
        self,
        points: Sequence[tuple[float, float]],
        style: Style,
        *,
        label: str = "",
        tips: Sequence[str] | None = None,
        line: bool = True,
        markers: bool = True,
    ) -> None:
        """A polyline through ``points`` with a marker (and tooltip) at each; ``label`` in the
        legend."""
        if not points:
            return
        if line and len(points) > 1:
            path = " ".join(
                f"{'M' if i == 0 else 'L'}{self.px(x):.1f},{self.py(y):.1f}"
                for i, (x, y) in enumerate(points)
            )
            dash = f' stroke-dasharray="{style.dash}"' if style.dash else ""
            self.parts.append(
                f'<path class="series" d="{path}" fill="none" stroke="{style.color}" '
                f'stroke-width="2"{dash}/>'
            )
        if markers and style.marker:
            for i, (x, y) in enumerate(points):
                tip = tips[i] if tips else ""
                self.parts.append(self._marker(self.px(x), self.py(y), style, tip))
        if label:
            self.legend.append((label, style))

    def mark(self, x: float, y: float, style: Style, tip: str = "", size: float = 4.0) -> None:
        self.parts.append(self._marker(self.px(x), self.py(y), style, tip, size))

    def vline(self, x: float, style: Style, label: str = "", *, row: int = 0) -> None:
        """A vertical line across the plot with ``label`` at its top (``row`` staggers labels
        of neighbouring lines)."""
        px, top = self.px(x), TOP + 2 + 12 * row
        dash = f' stroke-dasharray="{style.dash}"' if style.dash else ""
        self.parts.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{self.height - BOTTOM}" '
            f'stroke="{style.color}" stroke-width="1.5"{dash}/>'
        )
        if label:  # beside the line, on the side with room for it
            right = px > LEFT + 0.7 * (self.width - LEFT - RIGHT)
            self.text(
                px - 3 if right else px + 3,
                top + 9,
                label,
                color=style.color,
                anchor="end" if right else "start",
            )

    def text(self, px: float, py: float, text: str, *, color: str = "#222", anchor: str = "start"):
        self.parts.append(
            f'<text x="{px:.1f}" y="{py:.1f}" fill="{color}" text-anchor="{anchor}" '
            f'font-size="11" stroke="#fff" stroke-width="3" paint-order="stroke">'
            f"{escape(text)}</text>"
        )

    def render(self) -> str:
        w, h = self.width, self.height
        plot_right, plot_bottom = w - RIGHT, h - BOTTOM
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" '
            f'class="chart" font-family="sans-serif">',
            f"<title>{escape(self.description)}</title>",
            f'<rect x="{LEFT}" y="{TOP}" width="{plot_right - LEFT}" '
            f'height="{plot_bottom - TOP}" fill="none" stroke="#999"/>',
        ]
        for value, label in self.x.tick_marks():
            px = self.px(value)
            out.append(
                f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{plot_bottom}" '
                f'stroke="#e4e4e4"/><text x="{px:.1f}" y="{plot_bottom + 15}" '
                f'text-anchor="middle" font-size="11">{escape(label)}</text>'
            )
        for value, label in self.y.tick_marks():
            py = self.py(value)
            out.append(
                f'<line x1="{LEFT}" x2="{plot_right}" y1="{py:.1f}" y2="{py:.1f}" '
                f'stroke="#e4e4e4"/><text x="{LEFT - 5}" y="{py + 4:.1f}" '
                f'text-anchor="end" font-size="11">{escape(label)}</text>'
            )
        out.append(
            f'<text x="{(LEFT + plot_right) / 2:.1f}" y="{h - 8}" text-anchor="middle" '
            f'font-size="12">{escape(self.x.label)}</text>'
            f'<text transform="translate(14,{(TOP + plot_bottom) / 2:.1f}) rotate(-90)" '
            f'text-anchor="middle" font-size="12">{escape(self.y.label)}</text>'
        )
        out += self.parts
        out += self._legend()
        out.append("</svg>")
        return "\n".join(out)

    def _legend(self) -> list[str]:
        out, px = [], float(LEFT)
        for label, style in self.legend:
            dash = f' stroke-dasharray="{style.dash}"' if style.dash else ""
            out.append(
                f'<line x1="{px:.1f}" x2="{px + 22:.1f}" y1="14" y2="14" stroke="{style.color}" '
                f'stroke-width="2"{dash}/>'
            )
            if style.marker:
                out.append(self._marker(px + 11, 14, style, ""))
            out.append(f'<text x="{px + 27:.1f}" y="18" font-size="11">{escape(label)}</text>')
            px += 27 + 6.2 * len(label) + 16
        return out

    @staticmethod
    def _marker(px: float, py: float, style: Style, tip: str, size: float = 3.5) -> str:
        title = f"<title>{escape(tip)}</title>" if tip else ""
        color = style.color
        if style.marker == "square":
            shape = f'<rect x="{px - size:.1f}" y="{py - size:.1f}" width="{2 * size:.1f}" '
            shape += f'height="{2 * size:.1f}" fill="{color}"'
        elif style.marker == "triangle":
            shape = (
                f'<path d="M{px:.1f},{py - size - 1:.1f} L{px + size + 1:.1f},{py + size:.1f} '
                f'L{px - size - 1:.1f},{py + size:.1f} Z" fill="{color}"'
            )
        else:
            shape = f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{size:.1f}" fill="{color}"'
        return f"{shape}>{title}</{shape.split()[0][1:]}>" if title else shape + "/>"


def _short(value: float) -> str:
    """A tick label: 0.001 as 1e-3, 1500 as 1500, 0.25 as 0.25."""
    if value == 0:
        return "0"
    if abs(value) < 0.01 or abs(value) >= 1e5:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:g}"
