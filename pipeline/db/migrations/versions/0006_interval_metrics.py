"""Interval metrics and quantiles: backtest_metrics gains the coverage on the most
volatile test days, the interval's relative width, interval score and MSIS, and the
scaled pinball loss of each quantile and their mean; forecasts gain the predicted
scale and the quantiles of a fan chart; models gain the MSIS the champion gate
compares.

Revision ID: 0006_interval_metrics
Revises: 0005_run_states
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_interval_metrics"
down_revision = "0005_run_states"
branch_labels = None
depends_on = None

COLUMNS = (
    ("coverage_high_vol", sa.Double, "Coverage on the ticker's most volatile fifth of test days."),
    ("n_high_vol", sa.Integer, "Test points among those most volatile days."),
    ("width", sa.Double, "Mean interval width relative to the last close."),
    ("interval_score", sa.Double, "Mean interval score (width plus 2/alpha times any miss)."),
    ("msis", sa.Double, "Interval score over the training span's mean absolute daily change."),
    ("spl", sa.Double, "Mean scaled pinball loss over the quantiles q05 .. q95."),
    ("spl_q05", sa.Double, "Scaled pinball loss of the 5 % quantile."),
    ("spl_q25", sa.Double, "Scaled pinball loss of the 25 % quantile."),
    ("spl_q50", sa.Double, "Scaled pinball loss of the median."),
    ("spl_q75", sa.Double, "Scaled pinball loss of the 75 % quantile."),
    ("spl_q95", sa.Double, "Scaled pinball loss of the 95 % quantile."),
)


FORECAST_COLUMNS = (
    ("scale", "Predicted std. dev. of log(close on target_date / last close); NULL: static."),
    ("yhat_q05", "5 % quantile of the forecast close."),
    ("yhat_q25", "25 % quantile of the forecast close."),
    ("yhat_q75", "75 % quantile of the forecast close."),
    ("yhat_q95", "95 % quantile of the forecast close."),
)


MODEL_COLUMNS = (
    ("val_msis", "MSIS of one-step intervals on the validation span (calibrated on it)."),
    ("champion_val_msis", "That champion's MSIS on the same span."),
)


def upgrade() -> None:
    for name, kind, comment in COLUMNS:
        op.add_column("backtest_metrics", sa.Column(name, kind, comment=comment))
    for name, comment in FORECAST_COLUMNS:
        op.add_column("forecasts", sa.Column(name, sa.Double, comment=comment))
    for name, comment in MODEL_COLUMNS:
        op.add_column("models", sa.Column(name, sa.Double, comment=comment))


def downgrade() -> None:
    # SQLite drops a column by rebuilding the table, which its views would block; the
    # views are created again from sql/ when the schema is next ensured.
    for view in ("model_leaderboard", "forecast_accuracy", "latest_forecasts"):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    with op.batch_alter_table("models") as batch:
        for name, _ in reversed(MODEL_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table("forecasts") as batch:
        for name, _ in reversed(FORECAST_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table("backtest_metrics") as batch:
        for name, _, _ in reversed(COLUMNS):
            batch.drop_column(name)
