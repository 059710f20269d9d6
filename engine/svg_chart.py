"""Line charts and stacked-area charts for the reports, written as SVG text.

Why by hand and not with matplotlib: a report's curves are polylines on a grid, which the browser
draws itself from an SVG, and the detection report must build within 10% of the evaluation it
reports on. On the demo's Mask R-CNN (an evaluation of ~4 s of CPU) matplotlib took 0.23 s to draw
the report's three curve figures (precision-recall, error breakdown, the run's training curves),
half of the report, and 0.5 s more to import and draw a first figure (benchmarks/report_speed.py);
writing the same curves as SVG text takes milliseconds. matplotlib still draws what is not a line
chart (histograms, bar charts, large confusion matrices) and ``tools/plot_metrics.py``'s PNG.

    chart = Chart()
    panel = chart.panel(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1))
    panel.line([0, 0.5, 1], [1, 0.8, 0.2], "#1f77b4", label="cat")
    report.image(chart, "precision-recall")   # engine.report writes chart.to_svg() as images/NNN.svg

Ticks are "nice" numbers (1, 2, 2.5, 5 times a power of ten), as matplotlib's MaxNLocator picks.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

from .report import escape

__all__ = ["Chart", "Panel", "nice_ticks"]

# matplotlib's default colour cycle (tab10), so that curves keep the colours users know
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
TAB20 = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd", "#c5b0d5",
         "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5")
_STYLE = ("text{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;fill:#1d2330}"
          ".t{font-size:11px}.l{font-size:12px}.h{font-size:12px;font-weight:600}.g{font-size:10px}")
MARGIN = (48, 18, 24, 36)  # left, right, top, bottom of each panel (pixels): tick labels, title, axis label


def nice_ticks(lo: float, hi: float, count: int = 5) -> List[float]:
    """About ``count`` round values covering [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi, lo = (lo + 1, lo - 1) if lo == 0 else (lo + abs(lo) * 0.1, lo - abs(lo) * 0.1)
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * 0.999)
    first = math.floor(lo / step + 1e-9) * step
    ticks, v = [], first
    while v <= hi + step * 1e-6 or len(ticks) < 2:
        ticks.append(round(v, 12))
        v = first + len(ticks) * step
    if ticks[-1] < hi - step * 1e-6:
        ticks.append(round(first + len(ticks) * step, 12))
    return ticks


def _label(value: float, step: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-4:
        return f"{value:.2g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    if step * 10 ** decimals % 1 > 1e-6:  # 2.5 steps: one more decimal
        decimals += 1
    return f"{value:.{decimals}f}"


class Panel:
    """One plot: lines and stacked areas in data coordinates, axes, ticks, grid, title, legend."""

    def __init__(self, title: str = "", xlabel: str = "", ylabel: str = "",
                 xlim: Optional[Tuple[float, float]] = None, ylim: Optional[Tuple[float, float]] = None,
                 xticks: Optional[Sequence[float]] = None, yticks: Optional[Sequence[float]] = None,
                 legend: bool = True):
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.xlim, self.ylim, self.xticks, self.yticks = xlim, ylim, xticks, yticks
        self.legend = legend
        self.items: List[tuple] = []  # ("line", xs, ys, color, width, dash, label, markers) | ("areas", ...)

    def line(self, x: Sequence[float], y: Sequence[float], color: str, width: float = 1.5, dash: bool = False,
             label: Optional[str] = None, markers: bool = False) -> "Panel":
        points = [(float(a), float(b)) for a, b in zip(x, y)  # None (a metric without objects), NaN: no point
                  if a is not None and b is not None and math.isfinite(float(a)) and math.isfinite(float(b))]
        self.items.append(("line", points, color, width, dash, label, markers))
        return self

    def areas(self, x: Sequence[float], curves: Sequence[Sequence[float]], colors: Sequence[str]) -> "Panel":
        """Bands between successive cumulative ``curves`` (the first band from 0), edged in black."""
        self.items.append(("areas", [float(v) for v in x], [[float(v) for v in c] for c in curves], list(colors)))
        return self

    def _limits(self) -> Tuple[Tuple[float, float], Tuple[float, float], List[float], List[float]]:
        xs, ys = [], []
        for item in self.items:
            if item[0] == "line":
                xs += [p[0] for p in item[1]]
                ys += [p[1] for p in item[1]]
            else:
                xs += item[1]
                ys += [0.0] + [v for c in item[2] for v in c]
        xlo, xhi = self.xlim or ((min(xs), max(xs)) if xs else (0.0, 1.0))
        ylo, yhi = self.ylim or ((min(ys), max(ys)) if ys else (0.0, 1.0))
        xticks = list(self.xticks) if self.xticks is not None else nice_ticks(xlo, xhi)
        yticks = list(self.yticks) if self.yticks is not None else nice_ticks(ylo, yhi)
        if self.xlim is None:
            xlo, xhi = min(xlo, xticks[0]), max(xhi, xticks[-1])
        if self.ylim is None:
            ylo, yhi = min(ylo, yticks[0]), max(yhi, yticks[-1])
        if xhi <= xlo:
            xhi = xlo + 1
        if yhi <= ylo:
            yhi = ylo + 1
        return (xlo, xhi), (ylo, yhi), xticks, yticks

    def svg(self, ox: float, oy: float, width: float, height: float, clip_id: str) -> str:
        left, right, top, bottom = MARGIN
        pw, ph = width - left - right, height - top - bottom
        x0, y0 = ox + left, oy + top
        (xlo, xhi), (ylo, yhi), xticks, yticks = self._limits()

        def px(v):
            return x0 + (v - xlo) / (xhi - xlo) * pw

        def py(v):
            return y0 + ph - (v - ylo) / (yhi - ylo) * ph

        out = [f'<clipPath id="{clip_id}"><rect x="{x0:.1f}" y="{y0:.1f}" width="{pw:.1f}" height="{ph:.1f}"/>'
               "</clipPath>", f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{pw:.1f}" height="{ph:.1f}" fill="#fff"/>']
        grid, labels = [], []
        xstep = xticks[1] - xticks[0] if len(xticks) > 1 else 1.0
        ystep = yticks[1] - yticks[0] if len(yticks) > 1 else 1.0
        for v in xticks:
            if xlo - 1e-9 <= v <= xhi + 1e-9:
                x = px(v)
                grid.append(f"M{x:.1f} {y0:.1f}V{y0 + ph:.1f}")
                labels.append(f'<text class="t" x="{x:.1f}" y="{y0 + ph + 14:.1f}" text-anchor="middle">'
                              f"{_label(v, xstep)}</text>")
        for v in yticks:
            if ylo - 1e-9 <= v <= yhi + 1e-9:
                y = py(v)
                grid.append(f"M{x0:.1f} {y:.1f}H{x0 + pw:.1f}")
                labels.append(f'<text class="t" x="{x0 - 5:.1f}" y="{y + 4:.1f}" text-anchor="end">'
                              f"{_label(v, ystep)}</text>")
        out.append(f'<path d="{"".join(grid)}" stroke="#e3e6ec" stroke-width="1" fill="none"/>')
        body = []
        for item in self.items:
            if item[0] == "areas":
                _, xs, curves, colors = item
                below = [0.0] * len(xs)
                for curve, color in zip(curves, colors):
                    upper = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(xs, curve))
                    lower = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(reversed(xs), reversed(below)))
                    body.append(f'<polygon points="{upper} {lower}" fill="{color}" stroke="#000" '
                                'stroke-width="0.4"/>')
                    below = curve
            else:
                _, points, color, width, dash, _, markers = item
                if not points:
                    continue
                coords = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in points)
                style = ' stroke-dasharray="5 3"' if dash else ""
                body.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="{width}"'
                            f' stroke-linejoin="round"{style}/>')
                if markers or len(points) == 1:
                    body += [f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="2.5" fill="{color}"/>' for a, b in points]
        out.append(f'<g clip-path="url(#{clip_id})">{"".join(body)}</g>')
        out.append(f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{pw:.1f}" height="{ph:.1f}" fill="none" stroke="#5b6475"/>')
        out += labels
        if self.title:
            out.append(f'<text class="h" x="{x0 + pw / 2:.1f}" y="{oy + 16:.1f}" text-anchor="middle">'
                       f"{escape(self.title)}</text>")
        if self.xlabel:
            out.append(f'<text class="l" x="{x0 + pw / 2:.1f}" y="{y0 + ph + 30:.1f}" text-anchor="middle">'
                       f"{escape(self.xlabel)}</text>")
        if self.ylabel:
            cx, cy = ox + 12, y0 + ph / 2
            out.append(f'<text class="l" x="{cx:.1f}" y="{cy:.1f}" text-anchor="middle" '
                       f'transform="rotate(-90 {cx:.1f} {cy:.1f})">{escape(self.ylabel)}</text>')
        out.append(self._legend(x0 + pw, y0))
        return "".join(out)

    def _legend(self, right: float, top: float) -> str:
        entries = [(i[5], i[2], i[4]) for i in self.items if i[0] == "line" and i[5]]
        if not (self.legend and entries):
            return ""
        width = 30 + 6.2 * max(len(label) for label, _, _ in entries)
        x, y = right - width - 6, top + 6
        rows = [f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{14 * len(entries) + 6}" '
                'fill="#fff" fill-opacity="0.85" stroke="#d9dee7"/>']
        for k, (label, color, dash) in enumerate(entries):
            ly = y + 11 + 14 * k
            style = ' stroke-dasharray="5 3"' if dash else ""
            rows.append(f'<path d="M{x + 5:.1f} {ly - 3:.1f}h18" stroke="{color}" stroke-width="2"{style}/>'
                        f'<text class="g" x="{x + 27:.1f}" y="{ly:.1f}">{escape(label)}</text>')
        return "".join(rows)


class Chart:
    """Panels side by side, ``panel_size`` pixels each, written as one SVG (:meth:`to_svg`)."""

    def __init__(self, panel_size: Tuple[int, int] = (380, 280)):
        self.panel_size = panel_size
        self.panels: List[Panel] = []

    def panel(self, *args, **kwargs) -> Panel:
        self.panels.append(Panel(*args, **kwargs))
        return self.panels[-1]

    def to_svg(self) -> str:
        w, h = self.panel_size
        total = w * max(1, len(self.panels))
        body = "".join(p.svg(i * w, 0, w, h, f"c{i}") for i, p in enumerate(self.panels))
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="{h}" viewBox="0 0 {total} {h}">'
                f'<style>{_STYLE}</style><rect width="{total}" height="{h}" fill="#fff"/>{body}</svg>\n')
