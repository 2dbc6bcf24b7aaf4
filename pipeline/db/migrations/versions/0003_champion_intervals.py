"""Champion and challenger, prediction intervals, backtests: models gains validation
errors in price units and the promotion decision, model_tickers the per-ticker
damping, errors and interval widths, forecasts yhat_lower and yhat_upper; new tables
backtest_runs and backtest_metrics. Models registered before are marked
promoted (forecasts came from them), trained through their data date.

Revision ID: 0003_champion_intervals
Revises: 0002_universe_quarantine
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_champion_intervals"
down_revision = "0002_universe_quarantine"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.alter_column(
            "val_loss",
            existing_type=sa.Double,
            existing_comment="Mean squared error on scaled validation windows.",
            comment="Training loss on scaled validation windows.",
        )
        batch.add_column(
            sa.Column("train_through", sa.Date, comment="Last target date of the training windows.")
        )
        batch.add_column(
            sa.Column("val_mae", sa.Double, comment="One-step MAE in price units, validation span.")
        )
        batch.add_column(
            sa.Column("val_naive_mae", sa.Double, comment="The naive forecast's MAE, same points.")
        )
        batch.add_column(
            sa.Column(
                "val_mase", sa.Double, comment="val_mae / val_naive_mae; above 1 loses to naive."
            )
        )
        batch.add_column(
            sa.Column(
                "promoted",
                sa.Boolean,
                nullable=False,
                server_default=sa.true(),
                comment="Became the champion: forecasts come from the newest promoted version.",
            )
        )
        batch.add_column(
            sa.Column("decision", sa.String(1000), comment="Why it was or was not promoted.")
        )
        batch.add_column(
            sa.Column("champion_version", sa.Integer, comment="The champion it was compared with.")
        )
        batch.add_column(
            sa.Column(
                "champion_val_mae", sa.Double, comment="That champion's MAE on the same span."
            )
        )
    op.execute("UPDATE models SET train_through = data_through")
    with op.batch_alter_table("model_tickers") as batch:
        batch.add_column(
            sa.Column(
                "damping",
                sa.Double,
                comment="Share of the network's move kept (0: naive, 1: all).",
            )
        )
        batch.add_column(
            sa.Column("val_mae", sa.Double, comment="One-step MAE on the ticker's validation span.")
        )
        batch.add_column(
            sa.Column("val_naive_mae", sa.Double, comment="The naive forecast's MAE, same points.")
        )
        batch.add_column(
            sa.Column(
                "interval_q",
                sa.JSON,
                comment="Per horizon step, the conformal half-width in log-price units.",
            )
        )
    with op.batch_alter_table("forecasts") as batch:
        batch.add_column(
            sa.Column("yhat_lower", sa.Double, comment="Lower bound of the prediction interval.")
        )
        batch.add_column(
            sa.Column("yhat_upper", sa.Double, comment="Upper bound of the prediction interval.")
        )
    op.create_table(
        "backtest_runs",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("as_of_date", sa.Date, nullable=False, comment="Last date of data used."),
        sa.Column("folds", sa.Integer, nullable=False),
        sa.Column("horizon", sa.Integer, nullable=False),
        sa.Column("test_fraction", sa.Double, nullable=False),
        sa.Column("origins", sa.String(16), nullable=False, comment="expanding or rolling."),
        sa.Column("interval_level", sa.Double, nullable=False),
        sa.Column("tickers", sa.JSON, nullable=False),
        sa.Column("models", sa.JSON, nullable=False, comment="Each model's name and parameters."),
        sa.PrimaryKeyConstraint("run_id", name="pk_backtest_runs"),
        comment="Walk-forward backtests: one row per run.",
    )
    op.create_table(
        "backtest_metrics",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(64), nullable=False, comment="LSTM variant or baseline."),
        sa.Column("ticker", sa.String(16), nullable=False),
        sa.Column("fold", sa.Integer, nullable=False),
        sa.Column("horizon", sa.Integer, nullable=False, comment="Steps ahead, 1..horizon."),
        sa.Column("is_default", sa.Boolean, nullable=False, comment="The default LSTM config."),
        sa.Column("model_version", sa.Integer, comment="Registered version it evaluates, if any."),
        sa.Column("n", sa.Integer, nullable=False, comment="Test points."),
        sa.Column("mae", sa.Double, nullable=False),
        sa.Column("rmse", sa.Double, nullable=False),
        sa.Column("mape", sa.Double, nullable=False, comment="Percent."),
        sa.Column("mase", sa.Double, comment="MAE / the naive forecast's MAE on the same points."),
        sa.Column("coverage", sa.Double, comment="Share of points inside the interval."),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["backtest_runs.run_id"],
            name="fk_backtest_metrics_run_id_backtest_runs",
        ),
        sa.PrimaryKeyConstraint(
            "run_id", "model", "ticker", "fold", "horizon", name="pk_backtest_metrics"
        ),
        comment="Backtest errors per model, ticker, fold and horizon step.",
    )


def downgrade() -> None:
    op.drop_table("backtest_metrics")
    op.drop_table("backtest_runs")
    with op.batch_alter_table("forecasts") as batch:
        batch.drop_column("yhat_upper")
        batch.drop_column("yhat_lower")
    with op.batch_alter_table("model_tickers") as batch:
        for column in ("interval_q", "val_naive_mae", "val_mae", "damping"):
            batch.drop_column(column)
    with op.batch_alter_table("models") as batch:
        for column in (
            "champion_val_mae",
            "champion_version",
            "decision",
            "promoted",
            "val_mase",
            "val_naive_mae",
            "val_mae",
            "train_through",
        ):
            batch.drop_column(column)
        batch.alter_column(
            "val_loss",
            existing_type=sa.Double,
            existing_comment="Training loss on scaled validation windows.",
            comment="Mean squared error on scaled validation windows.",
        )
