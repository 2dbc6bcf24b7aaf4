"""Prefect artifacts of a daily run: the forecasts written, and a Markdown summary."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

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
    """Publish the forecasts as a table artifact and the run's summary as Markdown.

    Artifact keys (``forecasts``, ``daily-summary``) let the Prefect UI show each
    one's history across runs.
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
