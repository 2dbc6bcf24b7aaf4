"""The daily run's summary as Markdown, for people (Prefect artifacts, logs)."""

from __future__ import annotations

from typing import Any

from pipeline.freshness import describe_stale


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_markdown(summary: dict[str, Any]) -> str:
    """A short report of one daily run: freshness, ingestion, training, accuracy, forecasts.

    Args:
        summary: the ``daily-pipeline`` flow's result.
    """
    ingest, model, forecast = summary["ingest"], summary["model"], summary["forecast"]
    lines = [
        f"# pricecast as of {summary['as_of']}",
        "",
        f"Database `{summary['database']}`.",
        "",
    ]
    if summary.get("unchanged"):
        lines += [
            "**Nothing changed** since the run that finished at "
            f"{summary.get('finished_at', '?')}: same prices, champion and forecasts; "
            "its results below stand and no stage ran again.",
            "",
        ]
    lines += [
        "## Data",
        "",
        f"- Inputs: {ingest['inputs']} ({ingest['inputs_loaded']} loaded, "
        f"{ingest['inputs_unchanged']} unchanged, {ingest['inputs_rejected']} rejected whole)",
        f"- Rows: {ingest['rows_read']} read, {ingest['rows_loaded']} loaded, "
        f"{ingest['rows_quarantined']} quarantined (`rejected_prices`), "
        f"{ingest['rows_deferred']} deferred to a later as-of date",
    ]
    stale = summary.get("stale") or {}
    if stale:
        lines.append(f"- **Stale, not forecast**: {describe_stale(stale)}")
    else:
        lines.append("- Freshness: every ticker has the close of the last trading day")
    for error in ingest.get("errors", []):
        lines.append(f"- Rejected: {error}")
    mase = model.get("champion_val_mase")
    verdict = ""
    if mase is not None:
        verdict = (
            " (loses to the naive forecast)" if mase > 1 else " (beats or ties the naive forecast)"
        )
    lines += [
        "",
        "## Model",
        "",
        f"- Decision: **{model['action']}**, {model['reason']}",
    ]
    if model.get("created"):
        lines.append(f"- New version v{model['model_version']}: {model['decision']}")
    lines += [
        f"- Forecasting with champion v{model['champion_version']}; "
        f"validation MASE {_number(mase)}{verdict}",
    ]
    backtest = summary.get("backtest")
    if backtest:
        lines += [
            "",
            f"## Backtest (run {backtest['run_id'][:12]}, as of {backtest['as_of']}, one step)",
            "",
            "| model | MASE | coverage |",
            "|---|---|---|",
        ]
        for row in backtest["models"]:
            name = row["model"]
            if row["default"] and name != "default":
                name += " (default)"
            lines.append(f"| {name} | {_number(row['mase'])} | {_number(row['coverage'], 3)} |")
    lines += [
        "",
        "## Forecasts",
        "",
        f"{forecast['forecasts_written']} forecasts for {len(forecast['tickers'])} tickers, "
        f"{forecast['horizon']} trading days after {summary['as_of']}.",
    ]
    if summary.get("report"):
        lines += ["", f"Report: `{summary['report']}`"]
    return "\n".join(lines) + "\n"
