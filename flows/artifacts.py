"""Prefect artifacts of a daily run: the forecasts written, and a Markdown summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from pipeline.summary import render_markdown

FORECAST_COLUMNS = (
    "ticker",
    "target_date",
    "horizon",
    "yhat",
    "yhat_lower",
    "yhat_upper",
    "model_version",
)


def publish_artifacts(summary: dict[str, Any], forecasts: list[dict[str, Any]]) -> None:
    """Publish the forecasts as a table, the run's summary as Markdown, and a link
    to the HTML report (``pricecast report``) when the run wrote one.

    Artifact keys (``forecasts``, ``daily-summary``, ``report``) let the Prefect UI
    show each one's history across runs.
    """
    rows = [
        {
            column: round(row[column], 4) if isinstance(row[column], float) else row[column]
            for column in FORECAST_COLUMNS
        }
        for row in forecasts
    ]
    version = summary["model"]["champion_version"]
    create_table_artifact(
        key="forecasts",
        table=rows,
        description=f"Forecasts as of {summary['as_of']} by model v{version}",
    )
    create_markdown_artifact(
        key="daily-summary",
        markdown=render_markdown(summary),
        description=f"pricecast daily run as of {summary['as_of']}",
    )
    if summary.get("report"):
        report = Path(summary["report"])
        create_link_artifact(
            key="report",
            link=report.as_uri(),
            link_text=f"HTML report as of {summary['as_of']}",
            description="Closes, forecasts with intervals and forecast errors per ticker",
        )
