"""Small inline-SVG time charts: scales, ticks, lines, bands and axes.

No dependency beyond the standard library. Every chart is a self-contained
``<svg>`` element with presentation attributes (it looks the same outside the
report's stylesheet), a ``<title>``/``<desc>`` and an ``aria-label`` for screen
readers, and no ``xmlns`` URL (inline SVG in HTML does not need one). Each
drawn element carries a ``class`` naming what it shows (``series-history``,
``band``, ...), which the tests read back.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

#: Fonts every platform has; no web fonts (the report loads nothing).
FONT_FAMILY = (
    "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', 'Liberation Sans', "
    "Arial, sans-serif"
)

AXIS_COLOR = "#6b7280"
GRID_COLOR = "#e5e7eb"
TEXT_COLOR = "#374151"


@dataclass(frozen=True)
class LinearScale:
    """Maps a numeric domain linearly onto a pixel range (either may be reversed)."""

    domain: tuple[float, float]
    pixels: tuple[float, float]

    def __call__(self, value: float) -> float:
        """The pixel position of ``value``."""
        (d0, d1), (p0, p1) = self.domain, self.pixels
        if d1 == d0:
            return (p0 + p1) / 2
        return p0 + (value - d0) * (p1 - p0) / (d1 - d0)


def nice_step(span: float, target: int) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) cutting ``span`` into about ``target``.

    Args:
        span: a positive width.
        target: the number of intervals wanted.
    """
    raw = span / max(target, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for multiple in (1.0, 2.0, 2.5, 5.0):
        if raw <= multiple * magnitude * (1 + 1e-9):
            return multiple * magnitude
    return 10.0 * magnitude


def nice_ticks(
    low: float, high: float, target: int = 5, include_zero: bool = False
) -> tuple[list[float], float, float]:
    """Round tick values covering ``low``..``high``.

    Args:
        low: the smallest value to show.
        high: the largest value to show.
        target: about how many intervals between ticks.
        include_zero: start the axis at zero (for errors, counts).

    Returns:
        The ticks, and the axis bounds (the first and last tick).
    """
    if include_zero:
        low = min(low, 0.0)
    if high <= low:
        pad = abs(high) * 0.01 or 1.0
        low, high = (low, high + pad) if include_zero and low == 0 else (low - pad, high + pad)
    step = nice_step(high - low, target)
    first = math.floor(low / step + 1e-9) * step
    last = math.ceil(high / step - 1e-9) * step
    count = round((last - first) / step)
    digits = max(0, -math.floor(math.log10(step))) + 2
    ticks = [round(first + index * step, digits) for index in range(count + 1)]
    return ticks, ticks[0], ticks[-1]


def format_number(value: float, step: float | None = None) -> str:
    """A price or error for people: thousands separators, decimals by tick step or by size.

    Args:
        value: the number.
        step: the distance between neighbouring ticks, when ``value`` labels a tick:
            just enough decimals to tell ticks apart (2.5 steps get one).
    """
    if step is not None and step > 0:
        decimals = 0
        while decimals < 8 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
            decimals += 1
    else:
        size = abs(value)
        decimals = 2 if size >= 1 or size == 0 else min(8, 2 - math.floor(math.log10(size)))
    return f"{value:,.{decimals}f}"


def _month_index(day: dt.date) -> int:
    return day.year * 12 + day.month - 1


def date_ticks(
    start: dt.date, end: dt.date, max_ticks: int = 8
) -> tuple[list[dt.date], Callable[[dt.date], str]]:
    """Calendar-aligned date ticks (days, Mondays, month starts or years) and their format.

    Args:
        start: the first date of the axis.
        end: the last date of the axis.
        max_ticks: the most ticks wanted.

    Returns:
        The tick dates within ``start``..``end`` and a function that labels one.
    """
    span = (end - start).days

    def day_label(day: dt.date) -> str:
        return f"{day:%b} {day.day}"

    for days in (1, 2, 7, 14):
        if span // days + 1 <= max_ticks:
            first = start
            if days >= 7:  # weekly ticks fall on Mondays
                first = start + dt.timedelta(days=(7 - start.weekday()) % 7)
            ticks = []
            day = first
            while day <= end:
                ticks.append(day)
                day += dt.timedelta(days=days)
            return ticks or [start], day_label
    for months in (1, 2, 3, 6, 12, 24, 60, 120, 240):
        index = _month_index(start) + (0 if start.day == 1 else 1)
        index += (-index) % months
        ticks = []
        while index <= _month_index(end):
            ticks.append(dt.date(index // 12, index % 12 + 1, 1))
            index += months
        if len(ticks) <= max_ticks:

            def month_label(day: dt.date, months: int = months) -> str:
                return f"{day:%Y}" if months >= 12 else f"{day:%b %Y}"

            return ticks or [start], month_label
    return [start, end], day_label


@dataclass(frozen=True)
class Line:
    """A series drawn as a polyline, optionally with a dot at each point.

    Attributes:
        points: (date, value) pairs in date order.
        name: a CSS class suffix and test handle: the polyline gets ``series-<name>``.
        label: the legend text (empty: no legend entry).
        color: stroke colour.
        width: stroke width.
        dashed: draw dashed.
        dots: draw a dot at each point, with a tooltip.
        tooltip: formats a point's tooltip (a ``<title>``) when ``dots``.
        dots_from: the index of the first point that gets a dot (a line that
            continues another series starts at that series' last point).
    """

    points: Sequence[tuple[dt.date, float]]
    name: str
    label: str
    color: str
    width: float = 2.0
    dashed: bool = False
    dots: bool = False
    tooltip: Callable[[dt.date, float], str] | None = None
    dots_from: int = 0


@dataclass(frozen=True)
class Band:
    """A filled area between two bounds (a prediction interval), one contiguous run.

    Attributes:
        points: (date, lower, upper) triples in date order.
        label: the legend text (empty: no legend entry).
        color: fill colour.
        opacity: fill opacity.
    """

    points: Sequence[tuple[dt.date, float, float]]
    label: str
    color: str
    opacity: float = 0.28


@dataclass(frozen=True)
class Rule:
    """A vertical dashed line at a date, with a short label."""

    day: dt.date
    label: str
    color: str = "#9ca3af"


@dataclass(frozen=True)
class TimeChart:
    """A chart of values over calendar dates.

    Attributes:
        chart_id: a document-unique id (for ``aria``/``<title>`` references).
        title: what the chart shows, for its ``<title>`` and ``aria-label``.
        description: a longer text alternative, for its ``<desc>``.
        y_label: the vertical axis title (e.g. ``Close``).
        lines: series drawn as lines, in drawing order.
        bands: filled areas, drawn beneath the lines.
        rules: vertical markers.
        x_domain: the dates spanned; default: those of the data.
        y_from_zero: start the vertical axis at zero.
        css_class: extra classes of the ``<svg>``.
        data: extra ``data-*`` attributes of the ``<svg>``.
        height: the height in view-box units (the width is ``WIDTH``).
    """

    chart_id: str
    title: str
    description: str
    y_label: str
    lines: Sequence[Line] = ()
    bands: Sequence[Band] = ()
    rules: Sequence[Rule] = ()
    x_domain: tuple[dt.date, dt.date] | None = None
    y_from_zero: bool = False
    css_class: str = ""
    data: dict[str, str] = field(default_factory=dict)
    height: int = 300


WIDTH = 880
MARGIN_LEFT = 72
MARGIN_RIGHT = 24
MARGIN_TOP = 40
MARGIN_BOTTOM = 46


def _num(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _extent(chart: TimeChart) -> tuple[dt.date, dt.date, float, float]:
    days = [day for line in chart.lines for day, _ in line.points]
    days += [day for band in chart.bands for day, _, _ in band.points]
    days += [rule.day for rule in chart.rules]
    values = [value for line in chart.lines for _, value in line.points]
    for band in chart.bands:
        values += [bound for _, low, high in band.points for bound in (low, high)]
    if chart.x_domain is not None:
        first, last = chart.x_domain
    elif days:
        first, last = min(days), max(days)
    else:
        raise ValueError(f"chart {chart.chart_id} has nothing to draw")
    if first == last:
        first, last = first - dt.timedelta(days=1), last + dt.timedelta(days=1)
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    return first, last, low, high


def render_time_chart(chart: TimeChart) -> str:
    """The chart as one inline ``<svg>`` element.

    Args:
        chart: what to draw.

    Returns:
        SVG markup; every text in it is escaped.

    Raises:
        ValueError: the chart has no data and no ``x_domain``.
    """
    first, last, low, high = _extent(chart)
    y_ticks, y_low, y_high = nice_ticks(
        low, high, 5 if chart.height >= 260 else 4, include_zero=chart.y_from_zero
    )
    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else None
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    height = chart.height
    top, bottom = MARGIN_TOP, height - MARGIN_BOTTOM
    x = LinearScale((first.toordinal(), last.toordinal()), (left, right))
    y = LinearScale((y_low, y_high), (bottom, top))

    def px(day: dt.date) -> float:
        return x(day.toordinal())

    classes = " ".join(part for part in ("chart", chart.css_class) if part)
    data = "".join(f' data-{escape(k)}="{escape(v)}"' for k, v in chart.data.items())
    title_id, desc_id = f"{chart.chart_id}-title", f"{chart.chart_id}-desc"
    out = [
        f'<svg class="{escape(classes)}" id="{escape(chart.chart_id)}"{data} '
        f'viewBox="0 0 {WIDTH} {height}" width="100%" preserveAspectRatio="xMidYMid meet" '
        f'role="img" aria-label="{escape(chart.title)}" '
        f'aria-labelledby="{escape(title_id)} {escape(desc_id)}" '
        f'font-family="{escape(FONT_FAMILY)}" font-size="12" fill="{TEXT_COLOR}">',
        f'<title id="{escape(title_id)}">{escape(chart.title)}</title>',
        f'<desc id="{escape(desc_id)}">{escape(chart.description)}</desc>',
    ]
    # Grid and vertical axis labels.
    out.append('<g class="y-axis">')
    for tick in y_ticks:
        ty = _num(y(tick))
        out.append(
            f'<line x1="{left}" x2="{right}" y1="{ty}" y2="{ty}" stroke="{GRID_COLOR}" '
            'stroke-width="1"/>'
        )
        out.append(
            f'<text x="{left - 8}" y="{ty}" text-anchor="end" dominant-baseline="middle" '
            f'fill="{AXIS_COLOR}" font-size="11">{escape(format_number(tick, y_step))}</text>'
        )
    mid = _num((top + bottom) / 2)
    out.append(
        f'<text class="axis-title" x="16" y="{mid}" text-anchor="middle" '
        f'transform="rotate(-90 16 {mid})" fill="{AXIS_COLOR}">{escape(chart.y_label)}</text>'
    )
    out.append("</g>")
    # Horizontal axis: date ticks.
    ticks, label = date_ticks(first, last, max_ticks=8)
    out.append('<g class="x-axis">')
    out.append(
        f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="{AXIS_COLOR}" '
        'stroke-width="1"/>'
    )
    for day in ticks:
        tx = _num(px(day))
        out.append(
            f'<line x1="{tx}" x2="{tx}" y1="{bottom}" y2="{bottom + 5}" stroke="{AXIS_COLOR}"/>'
        )
        out.append(
            f'<text x="{tx}" y="{bottom + 18}" text-anchor="middle" fill="{AXIS_COLOR}" '
            f'font-size="11" data-date="{day.isoformat()}">{escape(label(day))}</text>'
        )
    out.append(
        f'<text class="axis-title" x="{_num((left + right) / 2)}" y="{height - 6}" '
        f'text-anchor="middle" fill="{AXIS_COLOR}">Date</text>'
    )
    out.append("</g>")
    for band in chart.bands:
        if not band.points:
            continue
        outline = [(px(day), y(upper)) for day, _, upper in band.points]
        outline += [(px(day), y(lower)) for day, lower, _ in reversed(band.points)]
        points = " ".join(f"{_num(a)},{_num(b)}" for a, b in outline)
        out.append(
            f'<polygon class="band" points="{points}" fill="{band.color}" '
            f'fill-opacity="{band.opacity}" stroke="none"/>'
        )
    for rule in chart.rules:
        rx = _num(px(rule.day))
        out.append(
            f'<g class="rule"><line x1="{rx}" x2="{rx}" y1="{top}" y2="{bottom}" '
            f'stroke="{rule.color}" stroke-width="1" stroke-dasharray="4 3"/>'
            f'<text x="{rx}" y="{top - 4}" text-anchor="middle" fill="{AXIS_COLOR}" '
            f'font-size="11">{escape(rule.label)}</text></g>'
        )
    for line in chart.lines:
        if not line.points:
            continue
        points = " ".join(f"{_num(px(day))},{_num(y(value))}" for day, value in line.points)
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        out.append(
            f'<polyline class="series-{escape(line.name)}" points="{points}" fill="none" '
            f'stroke="{line.color}" stroke-width="{line.width}" stroke-linejoin="round" '
            f'stroke-linecap="round"{dash}/>'
        )
        if line.dots:
            out.append(f'<g class="dots-{escape(line.name)}">')
            for day, value in line.points[line.dots_from :]:
                tip = line.tooltip(day, value) if line.tooltip else f"{day}: {value}"
                out.append(
                    f'<circle cx="{_num(px(day))}" cy="{_num(y(value))}" r="3.5" '
                    f'fill="#ffffff" stroke="{line.color}" stroke-width="2">'
                    f"<title>{escape(tip)}</title></circle>"
                )
            out.append("</g>")
    out.append(_legend(chart, left))
    out.append("</svg>")
    return "\n".join(out)


def _legend(chart: TimeChart, left: float) -> str:
    items: list[str] = []
    cursor = left
    entries: list[tuple[str, str, str]] = [
        ("dashed" if line.dashed else "line", line.color, line.label)
        for line in chart.lines
        if line.label
    ]
    entries += [("band", band.color, band.label) for band in chart.bands if band.label]
    seen: set[str] = set()
    for kind, color, text in entries:
        if text in seen:
            continue
        seen.add(text)
        if kind == "band":
            swatch = (
                f'<rect x="{_num(cursor)}" y="8" width="18" height="10" fill="{color}" '
                'fill-opacity="0.35"/>'
            )
        else:
            dash = ' stroke-dasharray="5 3"' if kind == "dashed" else ""
            swatch = (
                f'<line x1="{_num(cursor)}" x2="{_num(cursor + 18)}" y1="13" y2="13" '
                f'stroke="{color}" stroke-width="2.5"{dash}/>'
            )
        items.append(
            f'{swatch}<text x="{_num(cursor + 24)}" y="13" dominant-baseline="middle">'
            f"{escape(text)}</text>"
        )
        cursor += 24 + 6.8 * len(text) + 22
    return f'<g class="legend">{"".join(items)}</g>' if items else ""
