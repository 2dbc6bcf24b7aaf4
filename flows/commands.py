"""What each ``pricecast`` command does, given its parsed options (``Args``) and the
settings: the handlers ``flows.cli`` declares and dispatches to.

A handler returns the command's exit status and prints its result as
``label: value`` lines; errors are raised (``flows.cli`` prints them as one
line). Each imports the library modules it needs when it runs, so that
importing this module stays as light as ``flows.cli`` (``pricecast --help``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigurationError, PricecastError
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.results import IngestSummary, ModelSummary

EXIT_ERROR = 1
EXIT_USAGE = 2
#: ``ingest`` and ``run``: the valid rows were loaded, but an input was rejected whole
#: (or, with ``--strict``, some row was quarantined).
EXIT_REJECTED = 3

#: A command's parsed options and arguments, read by attribute (``args.as_of``).
Args = SimpleNamespace


def _input_status(summary: IngestSummary, strict: bool) -> int:
    """``EXIT_REJECTED`` when an ingest rejected an input whole, or quarantined a row
    under ``--strict``; else 0."""
    if summary.inputs_rejected or (strict and summary.rows_quarantined):
        return EXIT_REJECTED
    return 0


def flag(args: Args, name: str) -> bool:
    return bool(getattr(args, name, False))


def _open(settings: Settings):  # noqa: ANN202
    from pipeline.db.migrate import open_database

    return open_database(settings.resolved_database_url)


def _open_for_reading(settings: Settings):  # noqa: ANN202
    """The database of a read-only command: it must exist with pricecast's schema."""
    from pipeline.db.migrate import open_existing_database

    return open_existing_database(settings.resolved_database_url)


def _as_of(conn: Any, args: Args, settings: Settings) -> dt.date:
    if args.as_of is not None:
        return args.as_of
    from pipeline.db.prices import latest_trade_date

    latest = latest_trade_date(conn, settings.tickers)
    if latest is None:
        if settings.tickers and latest_trade_date(conn, None) is not None:
            raise PricecastError(
                f"no prices of {', '.join(settings.tickers)} in the database; "
                "`pricecast tickers list` shows the tickers it holds"
            )
        raise PricecastError("the prices table is empty; run `pricecast ingest PATH` first")
    return latest


#: Tickers a command's summary names before it counts the rest.
TICKERS_SHOWN = 10


def _tickers(names: Sequence[str]) -> str:
    """Tickers for a summary line: all of a few; of a universe (1,000 names made one
    7,000-character line), the first ``TICKERS_SHOWN`` and a count
    (``pricecast tickers list`` lists them all)."""
    if not names:
        return "-"
    if len(names) <= TICKERS_SHOWN:
        return ", ".join(names)
    shown = ", ".join(names[:TICKERS_SHOWN])
    return f"{shown} and {len(names) - TICKERS_SHOWN:,} more ({len(names):,})"


def _print(lines: Sequence[tuple[str, object]]) -> None:
    width = max(len(label) for label, _ in lines) + 1
    for label, value in lines:
        print(f"{label + ':':<{width}} {value}")


def _database_line(settings: Settings) -> tuple[str, object]:
    from pipeline.db.engine import describe_url

    return ("database", describe_url(settings.resolved_database_url))


def _ingest_lines(summary: IngestSummary) -> list[tuple[str, object]]:
    return [
        (
            "inputs",
            f"{summary.inputs} ({summary.inputs_loaded} loaded, "
            f"{summary.inputs_unchanged} unchanged, {summary.inputs_rejected} rejected)",
        ),
        ("rows read", summary.rows_read),
        ("rows loaded", summary.rows_loaded),
        ("quarantined", summary.rows_quarantined),
        ("deferred", f"{summary.rows_deferred} (dated after the as-of date)"),
        ("superseded", f"{summary.rows_superseded} (lost to another input's row)"),
        ("flagged", summary.flags),
        ("tickers", _tickers(summary.tickers)),
    ]


def ingest_command(args: Args, settings: Settings) -> int:
    from pipeline.ingest.load import ingest
    from pipeline.ingest.sources import FileSource, build_sources

    sources = build_sources(args.paths, http_options=settings.http_options())
    if settings.tickers and any(isinstance(source, FileSource) for source in sources):
        # A file is ingested whole and remembered by its hash: loading part of it would
        # mark the rest as done. Feeds fetch the selected tickers only.
        raise ConfigurationError(
            "--tickers (PRICECAST_TICKERS) selects the tickers feeds fetch; files and "
            "folders are ingested whole, so filter the file instead, or leave --tickers out"
        )
    engine = _open(settings)
    with engine.begin() as conn:
        report = ingest(
            conn,
            sources,
            as_of=args.as_of,
            tickers=settings.tickers,
            jump_threshold=settings.jump_threshold,
            max_price=settings.max_price,
            max_input_bytes=settings.max_input_bytes,
            exchange=settings.exchange,
        )
    summary = report.summary()
    _print([_database_line(settings), *_ingest_lines(summary)])
    for error in summary.errors:
        print(f"rejected: {one_line(error)}", file=sys.stderr)
    return _input_status(summary, args.strict)


def server_command(args: Args, settings: Settings) -> int:
    from flows import server

    home = settings.home_path
    if args.action == "start":
        url = server.start(home, args.port)
        print(
            f"prefect server: {url} (commands with home {home} use it; stop with "
            "`pricecast server stop`)"
        )
    elif args.action == "stop":
        stopped = server.stop(home)
        print("prefect server: stopped" if stopped else "prefect server: none was running")
    else:
        url = server.running(home)
        print(f"prefect server: {url}" if url else "prefect server: not running")
    return 0


def serve_command(args: Args, settings: Settings) -> int:
    import os

    from flows.server import use_running

    use_running(settings.home_path)
    from deployments.serve import main as serve_deployments

    # Flow runs are subprocesses that read PRICECAST_*: pass the options on.
    for option, variable in (
        ("database_url", "PRICECAST_DATABASE_URL"),
        ("home", "PRICECAST_HOME"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            os.environ[variable] = str(value)
    _open(settings).dispose()
    quiet_console_tracebacks()
    serve_deployments()
    return 0


def reader_role_command(args: Args, settings: Settings) -> int:
    import os

    import sqlalchemy as sa

    from pipeline.db.roles import create_reader_role, large_object_revocation

    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise ConfigurationError(f"environment variable {args.password_env} is not set")
    engine = _open(settings)
    with engine.begin() as conn:
        made = create_reader_role(conn, args.role, password)
        if not made.large_objects_revoked:  # PostgreSQL
            database = conn.execute(sa.text("SELECT current_database()")).scalar_one()
    print(
        f"role {args.role} can read every pricecast table and view, and write nothing "
        "(no temporary tables, not the pipeline lock)"
    )
    if made.per_table:
        print("its grants are per table: run this again after an upgrade adds a table")
    if not made.large_objects_revoked:
        print(
            f"it can still create large objects: only a superuser can forbid that, with\n  "
            f"{large_object_revocation(database)}"
        )
    return 0


def tickers_command(args: Args, settings: Settings) -> int:
    from pipeline.db.tickers import add_tickers, read_tickers, set_active
    from pipeline.trading_calendar import check_exchange

    engine = _open(settings) if args.action != "list" else _open_for_reading(settings)
    with engine.begin() as conn:
        if args.action == "add":
            exchange = check_exchange(args.exchange or settings.exchange)
            new = add_tickers(conn, args.symbols, exchange, activate=True)
            print(f"tracking {', '.join(args.symbols)} on {exchange} ({len(new)} new)")
        elif args.action == "remove":
            unknown = set_active(conn, args.symbols, False)
            if unknown:
                raise ConfigurationError(f"not tracked: {', '.join(unknown)}")
            print(f"deactivated {', '.join(args.symbols)}; their history is kept")
        rows = read_tickers(conn)
    if args.action == "list":
        print(f"{'symbol':<10} {'exchange':<8} {'active':<6} {'first':<10} {'last':<10}")
        for row in rows:
            print(
                f"{row['symbol']:<10} {row['exchange']:<8} {'yes' if row['active'] else 'no':<6} "
                f"{row['first_date'] or '-'!s:<10} {row['last_date'] or '-'!s:<10}"
            )
    return 0


def sequences_command(args: Args, settings: Settings) -> int:
    from pipeline.sequences.build import build_sequences

    engine = _open(settings)
    with engine.begin() as conn:
        as_of = _as_of(conn, args, settings)
        result = build_sequences(
            conn, settings.home_path, as_of, settings.tickers, settings.sequence_config()
        )
    summary = result.summary()
    skipped = "; ".join(f"{ticker}: {why}" for ticker, why in result.skipped.items())
    _print(
        [
            _database_line(settings),
            ("as of", as_of),
            ("tickers", _tickers(result.tickers)),
            ("train windows", summary.train_windows),
            ("validation windows", summary.validation_windows),
            ("files", settings.home_path / "sequences"),
            ("skipped", skipped or "-"),
        ]
    )
    return 0


def train_command(args: Args, settings: Settings) -> int:
    from pipeline.model.train import train

    engine = _open(settings)
    with engine.begin() as conn:
        as_of = _as_of(conn, args, settings)
        result = train(
            conn,
            settings.home_path,
            as_of,
            settings.tickers,
            args.mode,
            settings.sequence_config(),
            settings.training_config(),
            workers=settings.train_workers,
        )
    _print(
        [
            _database_line(settings),
            ("as of", as_of),
            ("model", _model_line(result)),
            ("tickers", _tickers(result.tickers)),
        ]
    )
    return 0


def _model_line(model: ModelSummary) -> str:
    line = f"v{model.model_version} ({model.action}: {model.reason})"
    if model.created:
        line += f"; {model.decision}"
    if model.champion_version != model.model_version:
        line += f"; forecasts from champion v{model.champion_version}"
    mase = model.champion_val_mase
    if mase is not None:
        verdict = "loses to" if mase > 1 else "beats or ties"
        line += f"; champion MASE {mase:.4f} on the newest span ({verdict} naive)"
    return line


def forecast_command(args: Args, settings: Settings) -> int:
    from pipeline.model.forecast import forecast

    engine = _open(settings)
    with engine.begin() as conn:
        as_of = _as_of(conn, args, settings)
        result = forecast(conn, as_of, settings.tickers, settings.horizon, args.model_version)
    _print(
        [
            _database_line(settings),
            ("as of", as_of),
            ("model", f"v{result.model_version}"),
            ("tickers", _tickers(result.tickers)),
            ("forecasts", f"{result.rows} written ({result.horizon} trading days)"),
        ]
    )
    return 0


class _HideKnownTracebacks(logging.Filter):
    """Keep the pipeline's own errors to their one-line message on the console.

    Prefect logs a failed flow's exception with its traceback; for the
    pipeline's deliberate errors the message says everything, and the command
    ends with it anyway. Flow-run logs sent to the API keep the traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PricecastError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_console_tracebacks(quiet: bool = False) -> None:
    """Hide known tracebacks on the console; with ``quiet``, show warnings and errors
    only there (the flow run's logs in Prefect's API keep every level)."""
    names = [""] + [name for name in logging.root.manager.loggerDict if name.startswith("prefect")]
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if type(handler).__name__ == "PrefectConsoleHandler" or (
                isinstance(handler, logging.StreamHandler)
                and not isinstance(handler, logging.FileHandler)
            ):
                handler.addFilter(_HideKnownTracebacks())
                if quiet:
                    handler.setLevel(max(handler.level, logging.WARNING))


def gc_command(args: Args, settings: Settings) -> int:
    from pipeline.retention import collect

    engine = _open(settings)
    with engine.begin() as conn:
        as_of = _as_of(conn, args, settings)
        result = collect(
            conn,
            settings.home_path,
            as_of,
            keep_unpromoted=settings.keep_unpromoted,
            keep_days=settings.keep_days,
            now=dt.datetime.now(dt.UTC),
            dry_run=args.dry_run,
        )
    verb = "would delete" if args.dry_run else "deleted"
    _print(
        [
            _database_line(settings),
            ("as of", as_of),
            (
                f"{verb}",
                f"files of model versions {', '.join(map(str, result.versions)) or 'none'}; "
                f"{len(result.reports)} reports; {result.bytes_freed / 1e6:.1f} MB",
            ),
        ]
    )
    return 0


def report_command(args: Args, settings: Settings) -> int:

    from pipeline.report import latest_forecast_date, report_path, write_report

    engine = _open_for_reading(settings)
    with engine.connect() as conn:
        as_of = args.as_of or latest_forecast_date(conn)
        if as_of is None:
            raise PricecastError("the forecasts table is empty; run `pricecast forecast` first")
        output = Path(args.output) if args.output else report_path(settings.home_path, as_of)
        path = write_report(conn, output, as_of, settings.tickers, args.history_days, args.charts)
    _print([_database_line(settings), ("as of", as_of), ("report", path)])
    return 0


def backtest_command(args: Args, settings: Settings) -> int:
    from pathlib import Path

    from pipeline.evaluate.plan import BacktestConfig
    from pipeline.evaluate.stage import run_backtest
    from pipeline.evaluate.variants import variants
    from pipeline.files import write_text

    try:
        config = BacktestConfig(
            folds=args.folds,
            horizon=args.horizon,
            test_fraction=args.test_fraction,
            origins=args.origins,
            interval_level=settings.interval_level,
        )
        chosen = variants(
            [name.strip() for name in args.variants.split(",") if name.strip()],
            settings.sequence_config(),
            settings.training_config(),
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    engine = _open(settings)
    if settings.dask_address or (settings.workers or 1) > 1:  # units fan out: the flow
        with engine.connect() as conn:
            as_of = _as_of(conn, args, settings)
        run_id, rows, records = _backtest_flow(args, settings, as_of)
    else:  # in this process, as one job
        with engine.begin() as conn:
            as_of = _as_of(conn, args, settings)
            run = run_backtest(conn, as_of, chosen, config, settings.tickers)
        run_id, rows = run.run_id, run.result.table().to_dict("records")
        records = run.result.records()
        if args.points:
            run.result.write_points(Path(args.points))
    print(
        f"backtest {run_id} as of {as_of}: {config.folds} folds, horizon {config.horizon}, "
        f"last {config.test_fraction:.0%} of each series; intervals at "
        f"{config.interval_level:.0%}"
    )
    print(
        f"{'model':<20} {'h':>2} {'MASE mean':>9} {'MASE max':>9} {'worst':<8} "
        f"{'coverage':>8} {'cov min':>7} {'cov vol':>7} {'width':>7} {'MSIS':>7} {'SPL':>7} "
        f"{'points':>8}"
    )

    def number(value: object, digits: int) -> str:
        return "-" if pd_isna(value) else f"{value:.{digits}f}"

    for row in rows:
        name = row["model"] + (" *" if row["default"] else "")
        print(
            f"{name:<20} {row['horizon']:>2} {row['mase_mean']:>9.4f} {row['mase_max']:>9.4f} "
            f"{row['worst_ticker']:<8} {number(row['coverage'], 3):>8} "
            f"{number(row['coverage_min'], 3):>7} {number(row['coverage_high_vol'], 3):>7} "
            f"{number(row['width'], 4):>7} {number(row['msis'], 3):>7} "
            f"{number(row['spl'], 4):>7} {row['points']:>8}"
        )
    print(
        "* the default LSTM configuration; MASE 1.00 = the naive forecast; coverage: mean over "
        "tickers (cov min: the lowest ticker's; cov vol: on each ticker's most volatile fifth "
        "of test days); width: interval width / last close; MSIS and SPL (scaled pinball "
        "loss, mean of q05..q95): lower is better"
    )
    if args.points:
        print(f"points: {args.points}")
    if args.json:
        path = Path(args.json)
        write_text(path, json.dumps(records, indent=1), "backtest")
        print(f"records: {path}")
    return 0


def _backtest_flow(
    args: Args, settings: Settings, as_of: dt.date
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """The backtest as the ``backtest`` flow, its units on a Dask cluster or local threads."""
    from flows.server import use_running
    from pipeline.orphans import guard_descendants

    guard_descendants()  # a killed run takes its Prefect server and workers with it
    use_running(settings.home_path)  # before Prefect is imported
    from flows.backtest import backtest_flow
    from flows.heartbeats import for_command_runs

    quiet_console_tracebacks(flag(args, "quiet"))
    with for_command_runs():
        result = backtest_flow(
            as_of_date=as_of,
            tickers=settings.tickers,
            folds=args.folds,
            horizon=args.horizon,
            test_fraction=args.test_fraction,
            origins=args.origins,
            variants=[name.strip() for name in args.variants.split(",") if name.strip()],
            points_path=args.points,
            database_url=settings.resolved_database_url,
            overrides={"workers": settings.workers} if settings.workers else None,
            dask_address=settings.dask_address,
        )
    return result.run_id, result.table, result.records


def pd_isna(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def ingested_line(ingest: IngestSummary) -> str:
    """The run's ``ingested:`` line: where the rows read went (loaded, quarantined,
    deferred and, when some lost to another input's row, superseded), from how many
    inputs."""
    superseded = f"{ingest.rows_superseded} superseded, " if ingest.rows_superseded else ""
    return (
        f"{ingest.rows_loaded} rows loaded, {ingest.rows_quarantined} quarantined, "
        f"{superseded}{ingest.rows_deferred} deferred of {ingest.rows_read} read from "
        f"{ingest.inputs} input(s) ({ingest.inputs_unchanged} unchanged)"
    )


def run_command(args: Args, settings: Settings) -> int:
    from pipeline.ingest.sources import build_sources

    # Check what fails most often before Prefect starts, for a one-line error.
    if settings.sources:
        build_sources(settings.sources, http_options=settings.http_options())
    _open(settings).dispose()

    from flows.server import start_temporary, use_running
    from pipeline.orphans import guard_descendants

    guard_descendants()  # a killed run takes its Prefect server and workers with it
    use_running(settings.home_path)  # before Prefect is imported
    # Else a temporary server, started now: it starts while Prefect and the pipeline import.
    temporary = start_temporary()
    from flows.daily import daily_pipeline
    from flows.heartbeats import for_command_runs

    quiet_console_tracebacks(flag(args, "quiet"))
    if temporary is not None:
        temporary.wait()
    with for_command_runs():
        summary = daily_pipeline(
            as_of_date=args.as_of,
            tickers=settings.tickers,
            sources=settings.sources,
            mode=args.mode,
            horizon=settings.horizon,
            database_url=settings.resolved_database_url,
            home=str(settings.home_path),
            overrides={"workers": settings.workers} if settings.workers else None,
            dask_address=settings.dask_address,
            rerun=args.rerun,
        )
    ingest, fc = summary.ingest, summary.forecast
    _print(
        [
            ("database", summary.database),
            ("home", summary.home),
            ("as of", summary.as_of),
            (
                "tickers",
                _tickers(fc.tickers)
                if len(fc.tickers) > TICKERS_SHOWN
                else f"{_tickers(fc.tickers)} ({len(fc.tickers)})",
            ),
            ("ingested", ingested_line(ingest)),
            ("model", _model_line(summary.model)),
            (
                "forecasts",
                f"{fc.forecasts_written} written ({fc.horizon} trading days after {summary.as_of})",
            ),
            *(
                [
                    (
                        "unchanged",
                        f"nothing changed since the run that finished at "
                        f"{summary.finished_at}; its results stand (--rerun runs every stage)",
                    )
                ]
                if summary.unchanged
                else []
            ),
        ]
    )
    for error in ingest.errors:
        print(f"rejected: {one_line(error)}", file=sys.stderr)
    return _input_status(ingest, args.strict)


#: Commands that write pipeline data; the flows take the lock themselves.
WRITERS = (
    ingest_command,
    sequences_command,
    train_command,
    forecast_command,
    backtest_command,
    tickers_command,
    gc_command,
)


def one_line(text: str) -> str:
    return " ".join(str(text).split())
