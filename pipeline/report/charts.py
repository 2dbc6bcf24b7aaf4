"""A ticker's chart, drawn by matplotlib and returned as inline SVG markup.

One figure per charted ticker: above, the last closes, the forecast's median
path from the last close and its fan (5 % to 95 % and 25 % to 75 %
quantiles); below, when one-step forecasts were scored, their absolute error
against the naive forecast's on the same dates. The x axis counts sessions,
not calendar days: weekends and holidays leave no gaps, and each forecast
step is as wide as a day of history.

matplotlib is imported when a ``Painter`` draws its first chart only
(``pipeline.stages`` imports this module, and ``pricecast --help`` must not
pay for it). Figures are ``matplotlib.figure.Figure`` objects saved as SVG,
without pyplot: no global figure state, no GUI backend. A painter keeps its
two figures (with and without the error panel) from chart to chart, since
making the axes and their ticks was a fifth of a chart's time. The charts'
options hold in an ``rc_context`` for the painter's life:

* ``svg.hashsalt`` is the chart's own id (set around each ``savefig``), so the ids matplotlib writes
  (clip paths, tick markers) are the same on every run and differ between
  the charts of one page;
* no metadata (it would hold a creation date and URLs);
* ``svg.fonttype: none``: text stays text, which the browser draws in DejaVu
  Sans or its own sans-serif font, instead of glyph outlines (19.5 kB a chart
  instead of 43.0 kB).

The SVG is then made fit for inlining in HTML: no XML prolog, no namespace
URLs, ``href`` for ``xlink:href``, an accessible ``<title>`` and
``role="img"``. Drawn series carry ids ending in ``-closes``, ``-median``,
``-fan-outer``, ``-fan-inner``, ``-error-model`` and ``-error-naive``, which
the tests read back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import math
import re
from collections.abc import Callable
from typing import Any

from markupsafe import Markup, escape

from pipeline.report.data import ForecastPoint, TickerReport

HISTORY_COLOR = "#1d4ed8"
FORECAST_COLOR = "#ea580c"
BAND_COLOR = "#fb923c"
NAIVE_COLOR = "#6b7280"
GRID_COLOR = "#e5e7eb"
TEXT_COLOR = "#374151"

#: Inches; the page shows the charts about 1,000 pixels wide, so 10 inches (720
#: SVG units) keeps 10-point text near its size on screen.
WIDTH = 10.0
PRICE_HEIGHT = 3.2
ERROR_HEIGHT = 1.5

#: The page's stylesheet has the one rule matplotlib writes into every SVG.
_MATPLOTLIB_STYLE = re.compile(r"\s*<style[^>]*>.*?</style>", re.S)
#: The ids matplotlib numbers per figure (``figure_1``, ``line2d_3``): the same in every
#: chart, so repeated in the page, and nothing refers to them. The ids that are
#: referred to (``m`` and ``p`` and a hash) and the series' ids have no ``_N``.
_NUMBERED_ID = re.compile(r' id="[A-Za-z][\w.]*_\d+"')
#: Coordinates: matplotlib writes six decimals; two (a hundredth of a point) look the same.
_GEOMETRY = re.compile(r'( (?:d|x|y|transform)=")([^"]*)"')
_DECIMALS = re.compile(r"(\.\d\d)\d+")


def _options(chart_id: str) -> dict[str, object]:
    return {
        "svg.hashsalt": chart_id,
        "svg.fonttype": "none",
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans"],
        "font.size": 10,
        "axes.edgecolor": NAIVE_COLOR,
        "axes.labelcolor": TEXT_COLOR,
        "axes.linewidth": 0.8,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "xtick.color": TEXT_COLOR,
        "ytick.color": TEXT_COLOR,
        "grid.color": GRID_COLOR,
        "grid.linewidth": 0.8,
        "legend.frameon": False,
        "legend.fontsize": 9,
        "path.simplify": False,
    }


def _runs(
    part: TickerReport,
    origin: int,
    bounds: Callable[[ForecastPoint], tuple[float | None, float | None]],
) -> tuple[list[float], list[float], list[float]]:
    """x, low and high of a band, NaN where a step has no bounds (matplotlib leaves a gap
    there); from the last close when the first step has them."""
    xs: list[float] = []
    lows: list[float] = []
    highs: list[float] = []
    first = part.forecasts[0] if part.forecasts else None
    if part.history and first is not None and None not in bounds(first):
        xs.append(origin)
        lows.append(part.history[-1][1])
        highs.append(part.history[-1][1])
    for point in part.forecasts:
        low, high = bounds(point)
        xs.append(origin + point.horizon)
        lows.append(float("nan") if low is None else low)
        highs.append(float("nan") if high is None else high)
    return xs, lows, highs


def _drawn(values: list[float]) -> bool:
    return any(not math.isnan(value) for value in values)


def _date_labels(part: TickerReport, origin: int) -> dict[int, dt.date]:
    labels = {index: day for index, (day, _) in enumerate(part.history)}
    labels.update({origin + point.horizon: point.target_date for point in part.forecasts})
    return labels


def outer_label(part: TickerReport) -> str:
    """What the fan's outer band is: the 5-95 % quantiles, else the prediction interval."""
    if part.forecasts and all(p.q05 is not None and p.q95 is not None for p in part.forecasts):
        return "5-95 % of outcomes"
    return "Prediction interval"


def render_chart(part: TickerReport, chart_id: str, as_of: dt.date, title: str) -> Markup:
    """The chart of ``part`` as an ``<svg>`` element to put in an HTML page.

    Args:
        part: the ticker's closes, forecasts and scored forecasts.
        chart_id: an id unique in the page; prefixes the ids of the drawn series.
        as_of: the report's as-of date (marked on the chart).
        title: the chart's accessible name (``<title>``, ``aria-label``).

    Returns:
        The markup, safe to insert unescaped.
    """
    with Painter() as painter:
        return painter.draw(part, chart_id, as_of, title)


def _share_text_metrics(stack: contextlib.ExitStack) -> None:
    """Until ``stack`` closes, matplotlib measures a text once for every chart, not once
    per chart.

    matplotlib keeps the sizes of the texts it measured (tick labels, legend entries,
    labels) per renderer, and ``savefig`` makes a new renderer every time, so each
    chart measured its texts again with FreeType: a fifth of a chart's time (24
    charts: 1.63-1.91 s of CPU, 1.28-1.46 s with the sizes kept; same process,
    alternating). The sizes depend on the text, its font, whether it is math, the
    dpi and the kind of renderer, which make the key here as in matplotlib's own
    cache (``matplotlib.text._get_text_metrics_with_cache``, a private function:
    when a matplotlib release renames it or changes its parameters, nothing is
    replaced and the charts are the same, only slower).
    """
    import inspect

    import matplotlib.text

    name = "_get_text_metrics_with_cache"
    measure = getattr(matplotlib.text, name, None)
    if measure is None or list(inspect.signature(measure).parameters) != [
        "renderer",
        "text",
        "fontprop",
        "ismath",
        "dpi",
    ]:
        return
    sizes: dict[tuple[object, ...], tuple[float, float, float]] = {}

    def shared(renderer: Any, text: str, fontprop: Any, ismath: Any, dpi: float) -> Any:
        key = (type(renderer), text, fontprop.copy(), ismath, dpi)
        if key not in sizes:
            sizes[key] = measure(renderer, text, fontprop, ismath, dpi)
        return sizes[key]

    setattr(matplotlib.text, name, shared)
    stack.callback(setattr, matplotlib.text, name, measure)


class Painter:
    """Draws charts one after the other on two figures it keeps (``render_chart``'s charts).

    A chart costs most in matplotlib's axes: making them (the ticks, their lines
    and labels, 0.05 s a chart) and drawing the ticks. The figures with and
    without the error panel are made at a painter's first chart of each kind;
    each chart removes the last one's series, legend and marker, resets the data
    limits and draws its own, so the ticks matplotlib made are reused. The SVG
    is the same, byte for byte, as on a new figure (``tests/report``).

    Use as a context manager: the chart options (``_options``) hold from the first
    chart to the exit.
    """

    #: Measure each text once for all the painter's charts (``_share_text_metrics``).
    shared_metrics = True

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._figures: dict[bool, tuple[Any, Any, Any]] = {}
        #: The x labels of the chart being drawn: the formatter of every figure reads them.
        self._labels: dict[int, dt.date] = {}

    def __enter__(self) -> Painter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._figures.clear()
        self._stack.close()

    def _figure(self, scored: bool) -> tuple[Any, Any, Any]:
        """The figure with (``scored``) or without the error panel, and its axes."""
        if scored in self._figures:
            return self._figures[scored]
        import matplotlib
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        if not self._figures:
            self._stack.enter_context(matplotlib.rc_context(_options("")))
            if self.shared_metrics:
                _share_text_metrics(self._stack)
        height = PRICE_HEIGHT + (ERROR_HEIGHT if scored else 0.0)
        figure = Figure(figsize=(WIDTH, height))
        # Fixed margins in inches, not matplotlib's constrained layout (half of the
        # drawing time): room for 8-character tick labels and the legend above.
        margins = {
            "left": 0.75 / WIDTH,
            "right": 1 - 0.3 / WIDTH,
            "top": 1 - 0.35 / height,
            "bottom": 0.35 / height,
        }
        if scored:
            price, error = figure.subplots(
                2,
                1,
                sharex=True,
                gridspec_kw={
                    "height_ratios": [PRICE_HEIGHT - 0.45, ERROR_HEIGHT - 0.3],
                    "hspace": 0.35 / (height - 0.7) * 2,
                    **margins,
                },
            )
            error.set_ylabel("|error|, 1 step")
            error.grid(True, axis="y")
        else:
            price, error = figure.subplots(gridspec_kw=margins), None
        price.grid(True, axis="y")
        price.set_ylabel("Close")
        for axes in (price, error):
            if axes is not None:
                # No x label: fixed coordinates spare matplotlib measuring every tick
                # label again to place an empty text (7 % of a chart's time).
                axes.xaxis.set_label_coords(0.5, 0.0)
        labels = self._labels
        bottom = error if error is not None else price
        bottom.xaxis.set_major_locator(MaxNLocator(nbins=9, integer=True))
        bottom.xaxis.set_major_formatter(
            FuncFormatter(
                lambda x, _: (
                    f"{labels[int(x)]:%b} {labels[int(x)].day}"
                    if float(x).is_integer() and int(x) in labels
                    else ""
                )
            )
        )
        self._figures[scored] = (figure, price, error)
        return self._figures[scored]

    @staticmethod
    def _legend(axes: Any, **options: Any) -> None:
        """The legend of ``axes``' series; the last chart's when its entries were the same.

        A legend draws copies of its series' looks, made with it, and every series
        with a label has the same look on every chart: a legend kept when the labels
        are the same draws the same (making one was 6 % of a chart's time).
        """
        handles, labels = axes.get_legend_handles_labels()
        legend = axes.get_legend()
        if legend is not None:
            if [text.get_text() for text in legend.get_texts()] == labels:
                return
            legend.remove()
        axes.legend(handles, labels, **options)

    def draw(self, part: TickerReport, chart_id: str, as_of: dt.date, title: str) -> Markup:
        """The chart of ``part`` (see ``render_chart``)."""
        import matplotlib
        from matplotlib.transforms import Bbox

        origin = len(part.history) - 1  # the last close's position; forecasts follow it
        labels = _date_labels(part, origin)
        positions = {day: index for index, (day, _) in enumerate(part.history)}
        scored = [
            (positions[point.target_date], point)
            for point in part.scored
            if point.target_date in positions
        ]
        figure, price, error = self._figure(bool(scored))
        self._labels.clear()
        self._labels.update(labels)
        for axes in (price, error):
            if axes is None:
                continue
            for artist in [*axes.lines, *axes.collections, *axes.texts]:
                artist.remove()
            axes.dataLim.set_points(Bbox.null().get_points())
            axes.ignore_existing_data_limits = True
            axes.set_autoscale_on(True)
        if part.history:
            price.plot(
                range(len(part.history)),
                [close for _, close in part.history],
                color=HISTORY_COLOR,
                linewidth=1.6,
                label="Close",
                gid=f"{chart_id}-closes",
            )
            price.axvline(origin, color=NAIVE_COLOR, linewidth=0.8, linestyle=(0, (2, 3)))
            price.annotate(
                f"as of {as_of:%b} {as_of.day}",
                (origin, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(-4, -2),
                textcoords="offset points",
                ha="right",
                va="top",
                fontsize=9,
                color=NAIVE_COLOR,
            )
        if part.forecasts:
            xs, lows, highs = _runs(part, origin, lambda point: point.outer)
            if _drawn(lows):
                price.fill_between(
                    xs,
                    lows,
                    highs,
                    color=BAND_COLOR,
                    alpha=0.28,
                    linewidth=0,
                    label=outer_label(part),
                    gid=f"{chart_id}-fan-outer",
                )
            xs, lows, highs = _runs(part, origin, lambda point: point.inner)
            if _drawn(lows):
                price.fill_between(
                    xs,
                    lows,
                    highs,
                    color=BAND_COLOR,
                    alpha=0.5,
                    linewidth=0,
                    label="25-75 % of outcomes",
                    gid=f"{chart_id}-fan-inner",
                )
            median = [(origin + p.horizon, p.yhat) for p in part.forecasts]
            if part.history:
                median.insert(0, (origin, part.history[-1][1]))
            price.plot(
                [x for x, _ in median],
                [y for _, y in median],
                color=FORECAST_COLOR,
                linewidth=2.0,
                marker="o",
                markersize=3.5,
                markevery=list(range(1 if part.history else 0, len(median))),
                label=f"Forecast, median (model v{part.model_version})",
                gid=f"{chart_id}-median",
            )
        self._legend(price, loc="lower left", bbox_to_anchor=(0, 1.0), ncols=4, borderaxespad=0.2)
        if error is not None:
            xs = [position for position, _ in scored]
            error.plot(
                xs,
                [point.naive_abs_error for _, point in scored],
                color=NAIVE_COLOR,
                linewidth=1.4,
                linestyle=(0, (4, 2)),
                label="Naive forecast",
                gid=f"{chart_id}-error-naive",
            )
            error.plot(
                xs,
                [point.abs_error for _, point in scored],
                color=FORECAST_COLOR,
                linewidth=1.6,
                marker="o",
                markersize=2.5,
                label="Model",
                gid=f"{chart_id}-error-model",
            )
            error.set_ylim(bottom=0)
            self._legend(error, loc="upper left", ncols=2)
        price.set_xlim(-0.5, max(labels, default=0) + 0.5)
        buffer = io.StringIO()
        with matplotlib.rc_context({"svg.hashsalt": chart_id}):
            figure.savefig(
                buffer,
                format="svg",
                metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
            )
        return _inline(buffer.getvalue(), chart_id, title, part.ticker)


def _inline(svg: str, chart_id: str, title: str, ticker: str) -> Markup:
    """matplotlib's SVG document as an element for an HTML page."""
    svg = svg[svg.index("<svg") :]
    svg = _MATPLOTLIB_STYLE.sub("", svg, count=1)
    svg = _NUMBERED_ID.sub("", svg).replace("xlink:href=", "href=")
    # Indentation between elements and line breaks inside path data, the rotation by
    # zero degrees of every label, and four of the six decimals of every coordinate:
    # with the numbered ids, 28.2 kB down to 19.5 kB (-31 %) on a chart of 60 closes,
    # 5 forecasts and 30 scored forecasts.
    svg = re.sub(r">\s+<", "><", svg)
    svg = re.sub(r"\s*\n\s*", " ", svg).replace(' z "', ' z"')
    svg = re.sub(r' transform="rotate\(-?0 [^"]*\)"', "", svg)
    svg = _GEOMETRY.sub(lambda m: m.group(1) + _DECIMALS.sub(r"\1", m.group(2)) + '"', svg)
    opening = re.match(r"<svg\b[^>]*>", svg)
    assert opening is not None  # matplotlib always writes one
    attributes = re.sub(r'\s+(xmlns(:\w+)?|version)="[^"]*"', "", opening.group(0)[4:-1])
    head = (
        f'<svg{attributes} id="{escape(chart_id)}" class="chart" role="img" '
        f'aria-label="{escape(title)}" data-ticker="{escape(ticker)}">'
        f"<title>{escape(title)}</title>"
    )
    return Markup(head + svg[opening.end() :].strip())
