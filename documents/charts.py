"""Small trend charts as SVG, drawn on the server with matplotlib's SVG backend: one measurement across the
sessions of a patient's timeline, the vendor's target range shaded, each change beyond the vendor's
test/retest threshold drawn in red with a ring on the session it reached.

Plain values in, SVG bytes out (no ORM, no request). matplotlib loads only when a chart is drawn (a runner
never draws one), through its object API (no pyplot), one chart at a time (its settings are global). The same
chart is drawn once per process: `svg` is cached by its (hashable) input. Output has no script and no
external reference, and is the same bytes for the same input (fixed hash salt, no date in the metadata).
"""

from __future__ import annotations

import functools
import io
import re
import threading
from dataclasses import dataclass

LINE = "#2f5d8a"
BEYOND = "#c0392b"
TARGET = "#2e8b57"
# matplotlib keeps its settings in one global (rcParams), and the web server draws charts in several threads
# at once (one per request): one chart at a time, or one chart's style leaks into another's.
_DRAWING = threading.Lock()
_RANGE = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:[-\u2013\u2014]|to)\s*(-?\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class Trend:
    title: str
    unit: str
    x_labels: tuple[str, ...]  # one per session on the axis
    points: tuple[tuple[int, float], ...]  # (position on the axis, value), in order
    beyond: tuple[bool | None, ...] = ()  # per change between consecutive points: past the threshold?
    target: tuple[float, float] | None = None  # the vendor's target range, shaded


def target_range(text: str) -> tuple[float, float] | None:
    """ "253\u2013364 ms" (an en dash, as vendors print it) → (253.0, 364.0); None for anything else."""
    match = _RANGE.search(text or "")
    if not match:
        return None
    low, high = float(match.group(1)), float(match.group(2))
    return (low, high) if low < high else None


@functools.lru_cache(maxsize=512)
def svg(trend: Trend) -> bytes:
    """The chart as a standalone SVG document."""
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    style = {
        "svg.fonttype": "none",  # text stays text: small files, the browser's own sans-serif
        "svg.hashsalt": "qeeg-trend",
        "text.parse_math": False,  # labels are read off report pages: "$...$" in one is text, not TeX
        "font.family": "DejaVu Sans",
        "font.size": 7,
        "axes.titlesize": 7.5,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
    with _DRAWING, matplotlib.rc_context(style):
        figure = Figure(figsize=(3.3, 1.9), layout="constrained")
        FigureCanvasSVG(figure)
        axes = figure.add_subplot()
        xs = [x for x, _ in trend.points]
        ys = [y for _, y in trend.points]
        if trend.target:
            axes.axhspan(*trend.target, color=TARGET, alpha=0.12, linewidth=0)
        axes.plot(xs, ys, color=LINE, marker="o", markersize=3.5, linewidth=1.4)
        for i, beyond in enumerate(trend.beyond):
            if beyond:
                axes.plot(xs[i : i + 2], ys[i : i + 2], color=BEYOND, linewidth=2.2)
                axes.plot(
                    [xs[i + 1]], [ys[i + 1]], marker="o", markersize=7, markerfacecolor="none",
                    markeredgecolor=BEYOND, markeredgewidth=1.2,
                )  # fmt: skip
        axes.set_xticks(range(len(trend.x_labels)), trend.x_labels)
        axes.set_xlim(-0.4, max(len(trend.x_labels) - 0.6, 0.6))
        axes.margins(y=0.18)
        axes.tick_params(length=2, pad=2)
        axes.grid(axis="y", linewidth=0.4, alpha=0.4)
        axes.set_title(trend.title, loc="left")
        if trend.unit:
            axes.set_ylabel(trend.unit)
        out = io.BytesIO()
        figure.savefig(out, format="svg", metadata={"Date": None, "Creator": None})
    return out.getvalue()
