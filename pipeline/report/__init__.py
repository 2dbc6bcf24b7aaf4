"""The forecast report: a self-contained HTML page from Jinja2 templates, with an
overview of every ticker and matplotlib charts of a bounded set.

``build_report`` returns the document; ``write_report`` writes it atomically.
"""

from pipeline.report.build import build_report, render_report, report_path, write_report
from pipeline.report.data import ReportData, latest_forecast_date, load_report_data

__all__ = [
    "ReportData",
    "build_report",
    "latest_forecast_date",
    "load_report_data",
    "render_report",
    "report_path",
    "write_report",
]
