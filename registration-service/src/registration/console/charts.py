"""Charts of the console as inline SVG, drawn on the server.

No script and nothing fetched at runtime: the console works offline and under its strict
Content-Security-Policy, and a chart is in the page a screen reader reads (``role="img"``
with a label that says what it shows, and each point's value in a ``<title>``).  Colours
come from console.css classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 600, 160, 28


def _scale(value: float, top: float) -> float:
    return HEIGHT - PAD / 2 - (value / top if top else 0) * (HEIGHT - PAD * 1.5)


def line_chart(
    points: Sequence[tuple[datetime, float | None]],
    *,
    label: str,
    unit: str,
    top: float | None = None,
    css: str = "",
) -> Markup:
    """A line over time; a missing value breaks the line.  ``top`` fixes the y axis (1 for
    a rate), else the largest value does."""
    values = [v for _, v in points if v is not None]
    ceiling = top if top is not None else max(values, default=0) or 1
    step = (WIDTH - PAD * 2) / max(len(points) - 1, 1)
    paths: list[list[str]] = [[]]
    dots = []
    for index, (start, value) in enumerate(points):
        if value is None:
            if paths[-1]:
                paths.append([])
            continue
        x, y = PAD + index * step, _scale(value, ceiling)
        paths[-1].append(f"{x:.1f},{y:.1f}")
        shown = f"{value * 100:.1f}%" if unit == "%" else f"{value:g} {unit}"
        dots.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5"><title>'
            f"{escape(start.strftime('%Y-%m-%d %H:%M'))} UTC: {escape(shown)}</title></circle>"
        )
    lines = "".join(
        f'<polyline class="chart-line" points="{" ".join(path)}"/>' for path in paths if path
    )
    top_label = f"{ceiling * 100:.0f}%" if unit == "%" else f"{ceiling:g} {unit}"
    first = points[0][0].strftime("%m-%d %H:%M") if points else ""
    last = points[-1][0].strftime("%m-%d %H:%M") if points else ""
    empty = (
        ""
        if values
        else (
            f'<text class="chart-empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
            "no attempts in this window</text>"
        )
    )
    # Every text from outside (names, labels) goes through escape() above.
    return Markup(  # noqa: S704
        f'<svg class="chart {escape(css)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" preserveAspectRatio="none">'
        f'<line class="chart-axis" x1="{PAD}" y1="{HEIGHT - PAD / 2}" x2="{WIDTH - PAD}" '
        f'y2="{HEIGHT - PAD / 2}"/>'
        f'<text class="chart-tick" x="2" y="{PAD - 4}">{escape(top_label)}</text>'
        f'<text class="chart-tick" x="{PAD}" y="{HEIGHT - 2}">{escape(first)}</text>'
        f'<text class="chart-tick" x="{WIDTH - PAD}" y="{HEIGHT - 2}" text-anchor="end">'
        f"{escape(last)}</text>{lines}{''.join(dots)}{empty}</svg>"
    )


def bar_chart(items: Sequence[tuple[str, int]], *, label: str) -> Markup:
    """Horizontal bars, one per name, longest first."""
    items = sorted(items, key=lambda item: -item[1])
    top = max((count for _, count in items), default=0) or 1
    row = 22
    height = row * max(len(items), 1) + 4
    bars = []
    for index, (name, count) in enumerate(items):
        y = index * row + 2
        width = (WIDTH - 260) * count / top
        bars.append(
            f'<text class="chart-tick" x="0" y="{y + 15}">{escape(name)}</text>'
            f'<rect class="chart-bar" x="180" y="{y + 3}" width="{width:.1f}" height="{row - 8}">'
            f"<title>{escape(name)}: {count}</title></rect>"
            f'<text class="chart-tick" x="{186 + width:.1f}" y="{y + 15}">{count}</text>'
        )
    # Every text from outside (names, labels) goes through escape() above.
    return Markup(  # noqa: S704
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(label)}">{"".join(bars)}</svg>'
    )


def sparkline(values: Sequence[float | None], *, label: str) -> Markup:
    """A small trend of rates (0 to 1) for a table cell; a gap where nothing happened."""
    width, height = 96, 22
    step = width / max(len(values) - 1, 1)
    segments: list[list[str]] = [[]]
    for index, value in enumerate(values):
        if value is None:
            if segments[-1]:
                segments.append([])
            continue
        segments[-1].append(f"{index * step:.1f},{height - 2 - value * (height - 4):.1f}")
    lines = "".join(
        f'<polyline class="chart-line" points="{" ".join(s)}"/>'
        if len(s) > 1
        else f'<circle r="1.5" cx="{s[0].split(",")[0]}" cy="{s[0].split(",")[1]}"/>'
        for s in segments
        if s
    )
    # Every text from outside (names, labels) goes through escape() above.
    return Markup(  # noqa: S704
        f'<svg class="sparkline" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(label)}">{lines}</svg>'
    )
