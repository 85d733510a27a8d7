"""Render the Grafana dashboards as SVG images from a live Prometheus, for the docs.

Grafana does not run here (it is not packaged for Debian), so this draws each dashboard the
way Grafana lays it out (the panels' gridPos), with the data of the very queries the panels
hold: stat values coloured by their thresholds, time series (stacked, log scale, fixed
colours), bar gauges, tables and the latency heatmap.

    python monitoring/grafana/render_dashboards.py --prometheus http://127.0.0.1:9090 \\
        --minutes 15 --out docs/monitoring

The monitoring tests call :func:`render_all` after an end-to-end run when
``WEBHOOKS_RENDER_DASHBOARDS`` names an output directory.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
COLUMN, ROW_UNIT = 58, 34
BACKGROUND, PANEL, BORDER, TEXT, MUTED, GRID = (
    "#111217",
    "#181b1f",
    "#2c3235",
    "#ccccdc",
    "#8e8e9e",
    "#25282d",
)
PALETTE = [
    "#73bf69",
    "#f2cc0c",
    "#8ab8ff",
    "#ff780a",
    "#f2495c",
    "#5794f2",
    "#b877d9",
    "#705da0",
    "#37872d",
    "#fade2a",
    "#ff9830",
    "#c4162a",
]
NAMED = {
    "green": "#73bf69",
    "yellow": "#fade2a",
    "orange": "#ff9830",
    "red": "#f2495c",
    "blue": "#5794f2",
    "purple": "#b877d9",
    "dark-red": "#c4162a",
    "dark-purple": "#8f3bb8",
    "dark-orange": "#fa6400",
    "dark-yellow": "#e0b400",
}

Series = tuple[str, list[tuple[float, float]]]
Query = Callable[[str, bool], list[dict[str, Any]]]


def prometheus_query(base: str, start: float, end: float, step: float) -> Query:
    """A function running ``expr`` as a range (or instant, at ``end``) query on ``base``."""

    def run(expr: str, instant: bool) -> list[dict[str, Any]]:
        if instant:
            path, params = "/api/v1/query", {"query": expr, "time": str(end)}
        else:
            params = {"query": expr, "start": str(start), "end": str(end), "step": str(step)}
            path = "/api/v1/query_range"
        url = f"{base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - local Prometheus
            body = json.loads(response.read())
        return body["data"]["result"]  # type: ignore[no-any-return]

    return run


def colour(name: str | None, index: int = 0) -> str:
    if name is None:
        return PALETTE[index % len(PALETTE)]
    return NAMED.get(name, name)


def legend(template: str, labels: dict[str, str]) -> str:
    text = template
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return text or ", ".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"


def fmt(value: float, unit: str) -> str:
    """A value with its Grafana unit, short."""
    if value is None or math.isnan(value):
        return "no data"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "s":
        if value == 0:
            return "0 s"
        for limit, divisor, suffix in (
            (0.001, 1e-6, "µs"),
            (1, 1e-3, "ms"),
            (60, 1, "s"),
            (3600, 60, "min"),
            (86400, 3600, "h"),
        ):
            if abs(value) < limit:
                return f"{value / divisor:.3g} {suffix}"
        return f"{value / 86400:.3g} d"
    if unit == "bytes":
        for suffix in ("B", "KiB", "MiB", "GiB"):
            if abs(value) < 1024:
                return f"{value:.3g} {suffix}"
            value /= 1024
        return f"{value:.3g} TiB"
    suffix = {"reqps": " req/s", "ops": " ops/s"}.get(unit, "")
    for limit, divisor, prefix in ((1e3, 1, ""), (1e6, 1e3, "k"), (1e9, 1e6, "M")):
        if abs(value) < limit:
            return f"{value / divisor:.3g}{prefix}{suffix}"
    return f"{value / 1e9:.3g}G{suffix}"


def threshold_colour(value: float, thresholds: dict[str, Any]) -> str:
    chosen = "green"
    for step in thresholds.get("steps", []):
        if step["value"] is None or (not math.isnan(value) and value >= step["value"]):
            chosen = step["color"]
    return colour(chosen)


class Canvas:
    """SVG elements in drawing order."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def rect(self, x: float, y: float, w: float, h: float, fill: str, **extra: Any) -> None:
        attrs = " ".join(f'{k.replace("_", "-")}="{v}"' for k, v in extra.items())
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" '
            f'fill="{fill}" {attrs}/>'
        )

    def text(
        self,
        x: float,
        y: float,
        content: str,
        size: float = 11,
        fill: str = TEXT,
        anchor: str = "start",
        weight: str = "normal",
    ) -> None:
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" '
            f'text-anchor="{anchor}" font-weight="{weight}">{escape(content)}</text>'
        )

    def line(
        self,
        points: list[tuple[float, float]],
        stroke: str,
        width: float = 1.5,
        fill: str | None = None,
    ) -> None:
        if len(points) < 2:
            return
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        if fill:
            self.parts.append(f'<polygon points="{path}" fill="{fill}" fill-opacity="0.25"/>')
        self.parts.append(
            f'<polyline points="{path}" fill="none" stroke="{stroke}" stroke-width="{width}"/>'
        )


def series_of(results: list[dict[str, Any]], template: str) -> list[Series]:
    found = []
    for result in results:
        values = result.get("values") or [result["value"]]
        points = [(float(t), float(v)) for t, v in values]
        found.append((legend(template, result["metric"]), points))
    return found


def draw_timeseries(
    canvas: Canvas,
    panel: dict[str, Any],
    box: tuple[float, ...],
    query: Query,
    expand: Callable[[str], str],
) -> None:
    x, y, w, h = box
    defaults = panel["fieldConfig"]["defaults"]
    custom = defaults.get("custom", {})
    unit = defaults.get("unit", "short")
    overrides = {
        o["matcher"]["options"]: o["properties"][0]["value"]["fixedColor"]
        for o in panel["fieldConfig"].get("overrides", [])
    }
    series: list[Series] = []
    for target in panel["targets"]:
        series += series_of(query(expand(target["expr"]), False), target["legendFormat"])
    series = [(name, [(t, v) for t, v in pts if not math.isnan(v)]) for name, pts in series]
    series = [s for s in series if s[1]]
    raw = dict(series)
    colours = {name: colour(overrides.get(name), i) for i, (name, _) in enumerate(series)}
    # The legend shows the biggest series (Grafana's table legend would scroll).
    ranked = sorted(series, key=lambda s: -max(abs(v) for _, v in s[1]))
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    log = custom.get("scaleDistribution", {}).get("type") == "log"
    if stacked:
        totals: dict[float, float] = {}
        stacked_series = []
        for name, pts in series:
            new = []
            for t, v in pts:
                totals[t] = totals.get(t, 0.0) + v
                new.append((t, totals[t]))
            stacked_series.append((name, new))
        series = stacked_series
    legend_rows = min(len(series), 4)
    plot = (x + 52, y + 28, w - 64, h - 44 - 14 * legend_rows)
    px, py, pw, ph = plot
    if not series:
        canvas.text(x + w / 2, y + h / 2, "No data", 13, MUTED, "middle")
        return
    times = [t for _, pts in series for t, _ in pts]
    values = [v for _, pts in series for _, v in pts]
    t0, t1 = min(times), max(times) if max(times) > min(times) else min(times) + 1
    low = defaults.get("min", min(0.0, min(values)))
    low = min(values) if low is None else low
    high = max(values) if defaults.get("max") is None else defaults["max"]
    if log:
        positive = [v for v in values if v > 0] or [1e-3]
        low, high = math.log10(min(positive)), math.log10(max(positive))
    if high <= low:
        high = low + (1 if not log else 0.5)

    def scale(v: float) -> float:
        if log:
            v = math.log10(v) if v > 0 else low
        return py + ph - (v - low) / (high - low) * ph

    for i in range(5):
        gy = py + ph * i / 4
        canvas.rect(px, gy, pw, 0.6, GRID)
        label_value = high - (high - low) * i / 4
        canvas.text(
            px - 4, gy + 4, fmt(10**label_value if log else label_value, unit), 9, MUTED, "end"
        )
    for i in range(4):
        gx = px + pw * i / 3
        when = time.strftime("%H:%M:%S", time.localtime(t0 + (t1 - t0) * i / 3))
        canvas.text(gx, py + ph + 12, when, 9, MUTED, "middle")
    for name, pts in series:
        stroke = colours[name]
        points = [(px + (t - t0) / (t1 - t0) * pw, scale(v)) for t, v in pts]
        area = None
        if stacked or custom.get("fillOpacity", 0) > 10:
            area = stroke
            points = [(points[0][0], py + ph), *points, (points[-1][0], py + ph)]
        canvas.line(points, stroke, 1.5, area)
    for index, (name, _pts) in enumerate(ranked[:legend_rows]):
        ly = py + ph + 26 + 14 * index
        canvas.rect(px, ly - 7, 10, 3, colours[name])
        last = raw[name][-1][1]
        canvas.text(px + 16, ly - 3, f"{name[:48]}", 10)
        canvas.text(px + pw, ly - 3, f"last {fmt(last, unit)}", 10, MUTED, "end")


def draw_stat(
    canvas: Canvas,
    panel: dict[str, Any],
    box: tuple[float, ...],
    query: Query,
    expand: Callable[[str], str],
) -> None:
    x, y, w, h = box
    defaults = panel["fieldConfig"]["defaults"]
    expr = expand(panel["targets"][0]["expr"])
    points = [p for _, pts in series_of(query(expr, False), "") for p in pts]
    instant = query(expr, True)
    value = float(instant[0]["value"][1]) if instant else float("nan")
    fill = threshold_colour(value, defaults.get("thresholds", {}))
    background = panel["options"].get("colorMode") == "background"
    if background:
        canvas.rect(x + 1, y + 1, w - 2, h - 2, fill, rx=3, opacity="0.85")
    finite = [(t, v) for t, v in points if not math.isnan(v)]
    if len(finite) > 1:
        t0, t1 = finite[0][0], finite[-1][0] or 1
        low, high = min(v for _, v in finite), max(v for _, v in finite)
        span = (high - low) or 1
        spark = [
            (
                x + 4 + (t - t0) / max(t1 - t0, 1) * (w - 8),
                y + h - 6 - (v - low) / span * (h * 0.35),
            )
            for t, v in finite
        ]
        canvas.line(spark, "#ffffff" if background else fill, 1.2)
    canvas.text(
        x + w / 2,
        y + h / 2 + 16,
        fmt(value, defaults.get("unit", "short")),
        min(34, h * 0.32),
        "#ffffff" if background else fill,
        "middle",
        "bold",
    )


def draw_bars(
    canvas: Canvas,
    panel: dict[str, Any],
    box: tuple[float, ...],
    query: Query,
    expand: Callable[[str], str],
) -> None:
    x, y, w, _h = box
    target = panel["targets"][0]
    series = series_of(query(expand(target["expr"]), True), target["legendFormat"])
    series.sort(key=lambda s: -s[1][-1][1])
    top = max((pts[-1][1] for _, pts in series), default=1) or 1
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    for index, (name, pts) in enumerate(series[:8]):
        by = y + 36 + index * 26
        canvas.text(x + 10, by + 12, name[:22], 10)
        width = (w - 200) * pts[-1][1] / top
        canvas.rect(x + 140, by, w - 200, 16, GRID, rx=2)
        canvas.rect(x + 140, by, width, 16, colour("blue"), rx=2)
        canvas.text(x + w - 10, by + 12, fmt(pts[-1][1], unit), 10, TEXT, "end")


def draw_table(
    canvas: Canvas,
    panel: dict[str, Any],
    box: tuple[float, ...],
    query: Query,
    expand: Callable[[str], str],
) -> None:
    x, y, _w, h = box
    results = query(expand(panel["targets"][0]["expr"]), True)
    columns = sorted({k for r in results for k in r["metric"] if k != "__name__"})[:4]
    canvas.text(x + 10, y + 42, "  ".join([*columns, "value"]), 10, MUTED)
    for index, result in enumerate(results[: int((h - 56) // 15)]):
        cells = [result["metric"].get(c, "")[:22] for c in columns]
        cells.append(f"{float(result['value'][1]):.3g}")
        canvas.text(x + 10, y + 58 + index * 15, "  ".join(cells), 10)


def draw_heatmap(
    canvas: Canvas,
    panel: dict[str, Any],
    box: tuple[float, ...],
    query: Query,
    expand: Callable[[str], str],
) -> None:
    x, y, w, h = box
    results = query(expand(panel["targets"][0]["expr"]), False)
    buckets = sorted(results, key=lambda r: float(r["metric"]["le"]))
    if not buckets:
        return
    times = [float(t) for t, _ in buckets[0]["values"]]
    rows: list[tuple[str, list[float]]] = []
    previous = [0.0] * len(times)
    for bucket in buckets:
        counts = {float(t): float(v) for t, v in bucket["values"]}
        current = [counts.get(t, 0.0) for t in times]
        rows.append(
            (
                bucket["metric"]["le"],
                [max(c - p, 0.0) for c, p in zip(current, previous, strict=True)],
            )
        )
        previous = current
    peak = max((v for _, vals in rows for v in vals), default=1) or 1
    px, py, pw, ph = x + 52, y + 30, w - 62, h - 44
    cell_h, cell_w = ph / len(rows), pw / max(len(times), 1)
    for r, (le, vals) in enumerate(rows):
        ry = py + ph - (r + 1) * cell_h
        if r % 3 == 0:
            label = "+Inf" if le == "+Inf" else fmt(float(le), "s")
            canvas.text(px - 4, ry + cell_h, label, 8, MUTED, "end")
        for c, v in enumerate(vals):
            if v > 0:
                opacity = 0.15 + 0.85 * (v / peak)
                canvas.rect(
                    px + c * cell_w,
                    ry,
                    cell_w + 0.5,
                    cell_h + 0.5,
                    "#ff9830",
                    opacity=f"{opacity:.2f}",
                )


DRAW = {
    "timeseries": draw_timeseries,
    "stat": draw_stat,
    "bargauge": draw_bars,
    "table": draw_table,
    "heatmap": draw_heatmap,
}


def render(dashboard: dict[str, Any], query: Query, variables: dict[str, str]) -> str:
    """The SVG document of one dashboard."""

    def expand(expr: str) -> str:
        for name, value in variables.items():
            expr = expr.replace(name, value)
        return expr

    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    width, height = 24 * COLUMN + 16, bottom * ROW_UNIT + 60
    canvas = Canvas()
    canvas.rect(0, 0, width, height, BACKGROUND)
    canvas.text(12, 26, dashboard["title"], 16, TEXT, weight="bold")
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        x, y = 8 + grid["x"] * COLUMN, 44 + grid["y"] * ROW_UNIT
        w, h = grid["w"] * COLUMN - 6, grid["h"] * ROW_UNIT - 6
        if panel["type"] == "row":
            canvas.text(x + 2, y + 22, panel["title"], 13, TEXT, weight="bold")
            continue
        canvas.rect(x, y, w, h, PANEL, rx=3, stroke=BORDER)
        DRAW[panel["type"]](canvas, panel, (x, y, w, h), query, expand)
        title_fill = "#ffffff" if panel["type"] == "stat" else TEXT
        canvas.text(x + 8, y + 16, panel["title"], 11, title_fill, weight="bold")
    body = "\n".join(canvas.parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Inter, Helvetica, Arial, sans-serif">\n'
        f"{body}\n</svg>\n"
    )


def render_all(
    prometheus: str, out: Path, *, minutes: float, rate_interval: str = "1m"
) -> list[Path]:
    """Render every dashboard of monitoring/grafana/dashboards into ``out``."""
    end = time.time()
    start = end - minutes * 60
    step = max(minutes * 60 / 240, 1)
    query = prometheus_query(prometheus.rstrip("/"), start, end, step)
    variables = {
        "$__rate_interval": rate_interval,
        "$__range": f"{int(minutes * 60)}s",
        "$__interval": f"{int(step)}s",
    }
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text())
        target = out / f"{path.stem}.svg"
        target.write_text(render(dashboard, query, variables))
        written.append(target)
    return written


def main() -> None:
    """Command line: render every dashboard from a running Prometheus."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--rate-interval", default="1m")
    parser.add_argument("--out", type=Path, default=Path("docs/monitoring"))
    args = parser.parse_args()
    for path in render_all(
        args.prometheus, args.out, minutes=args.minutes, rate_interval=args.rate_interval
    ):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
