"""The ``pricecast`` command line, on Click.

``pricecast run`` runs the ``daily-pipeline`` Prefect flow; ``ingest``,
``sequences``, ``train`` and ``forecast`` run one stage each, directly,
without starting Prefect. Every command reads its defaults from the
``PRICECAST_*`` environment, and its options override them; the common
options (``--database-url``, ``--home``, ``-q``, ``--debug``) go before or
after the command. A failure prints one line saying why and exits non-zero
(1 for an error of the pipeline, 2 for a usage error, 3 when an input was
rejected).

Importing this module imports neither pandas nor Prefect: ``pricecast --help``
answers in a fraction of a second, and each command imports what it needs.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

from flows import use_prefect_defaults
from pipeline import __version__
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


class _Date(click.ParamType):
    name = "DATE"

    def convert(self, value: Any, param: Any, ctx: Any) -> dt.date:
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a date (YYYY-MM-DD)", param, ctx)


class _Tickers(click.ParamType):
    name = "A,B"

    def convert(self, value: Any, param: Any, ctx: Any) -> list[str]:
        if isinstance(value, list):
            return value
        tickers = [item.strip().upper() for item in value.split(",") if item.strip()]
        if not tickers:
            self.fail("expected tickers separated by commas, e.g. AAPL,MSFT", param, ctx)
        return tickers


DATE = _Date()
TICKERS = _Tickers()

#: The options every command takes, before or after the command's name.
COMMON = ("database_url", "home", "quiet", "debug")


def _common_options() -> list[click.Parameter]:
    return [
        click.Option(
            ["--database-url"],
            metavar="URL",
            help="SQLAlchemy database URL (default: $PRICECAST_DATABASE_URL, "
            "else sqlite:///<home>/pricecast.db)",
        ),
        click.Option(
            ["--home"],
            metavar="PATH",
            help="folder for sequence and model files (default: $PRICECAST_HOME, "
            "else ~/.pricecast)",
        ),
        click.Option(["-q", "--quiet"], is_flag=True, help="show warnings and errors only"),
        click.Option(["--debug"], is_flag=True, help="show a traceback when a command fails"),
    ]


def _as_of_option(default_help: str) -> click.Option:
    return click.Option(["--as-of"], type=DATE, help=f"as-of date; {default_help}")


def _tickers_option() -> click.Option:
    return click.Option(
        ["--tickers"],
        type=TICKERS,
        help="tickers to process (default: $PRICECAST_TICKERS, else all)",
    )


def _mode() -> click.Option:
    return click.Option(
        ["--mode"],
        type=click.Choice(["auto", "retrain", "finetune"]),
        default="auto",
        show_default=True,
        help="retrain from fresh weights, fine-tune the current model on new windows, "
        "or let the policy choose",
    )


def _horizon() -> click.Option:
    return click.Option(
        ["--horizon"],
        type=int,
        metavar="N",
        help="trading days to forecast (default: $PRICECAST_HORIZON, else 5)",
    )


def _strict() -> click.Option:
    return click.Option(
        ["--strict"],
        is_flag=True,
        help=f"exit {EXIT_REJECTED} when any row was quarantined too (always: when an input "
        "was rejected whole)",
    )


def _fan_out() -> list[click.Option]:
    return [
        click.Option(
            ["--dask-address"],
            metavar="ADDR",
            help="Dask scheduler to run per-shard work on, e.g. tcp://10.0.0.5:8786 "
            "(default: $PRICECAST_DASK_ADDRESS, else this machine; needs pricecast[dask])",
        ),
        click.Option(
            ["--workers"],
            type=int,
            metavar="N",
            help="shards run at once (default: $PRICECAST_WORKERS, else 1, "
            "or the Dask cluster's worker threads)",
        ),
    ]


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"pricecast {__version__}")
        ctx.exit()


def _command(
    group: click.Group,
    name: str,
    handler: Callable[[Args, Settings], int],
    summary: str,
    description: str,
    params: Sequence[click.Parameter] = (),
    as_of_help: str | None = "default: the newest price",
    fixed: dict[str, Any] | None = None,
) -> click.Command:
    """Add the command ``name`` to ``group``: its options, the common ones, and (unless
    ``as_of_help`` is ``None``) ``--as-of`` and ``--tickers``; it runs ``handler`` with
    the values parsed and those of ``fixed``."""
    selection = [_as_of_option(as_of_help), _tickers_option()] if as_of_help is not None else []

    def callback(**values: Any) -> int:
        return _dispatch(handler, _args({**values, **(fixed or {})}))

    command = click.Command(
        name,
        params=[*params, *selection, *_common_options()],
        callback=callback,
        help=description,
        short_help=summary,
    )
    group.add_command(command)
    return command


def build_app() -> click.Group:
    """Every command, as one Click group."""
    app = click.Group(
        "pricecast",
        help="Daily closing prices in, LSTM forecasts out, in a SQL database.",
        params=[
            *_common_options(),
            click.Option(
                ["--version"],
                is_flag=True,
                expose_value=False,
                is_eager=True,
                callback=_show_version,
                help="show the version and exit",
            ),
        ],
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )
    _command(
        app,
        "run",
        _run,
        "run the whole daily pipeline (a Prefect flow)",
        "Ingest, rebuild sequences, train or reuse the model, and forecast.",
        [
            click.Option(
                ["--source"],
                multiple=True,
                metavar="PATH",
                help="file, folder, URL template, yahoo, or demo (the bundled sample) to "
                "ingest; repeat for several (default: $PRICECAST_SOURCE, else nothing is "
                "ingested)",
            ),
            _mode(),
            _strict(),
            _horizon(),
            *_fan_out(),
            click.Option(
                ["--rerun"],
                is_flag=True,
                help="run every stage even when nothing changed since the last run with these "
                "settings (by default such a run stops after ingesting and reports that run)",
            ),
        ],
        "default: the newest price after ingesting",
    )
    _command(
        app,
        "ingest",
        _ingest,
        "load prices into the prices table; bad rows go to the quarantine",
        "Validate and upsert prices from files (CSV, CSV.gz, Parquet; long, single-ticker or "
        "wide), folders (each new or changed file once), HTTP CSV feeds or Yahoo.\n\n"
        "SOURCE: file, folder, URL template with {ticker} (and {start}, {end}), yahoo, or "
        "demo (the bundled sample).",
        [click.Argument(["paths"], nargs=-1, required=True, metavar="SOURCE..."), _strict()],
        "rows after it are deferred (default: load every date)",
    )
    _command(
        app,
        "server",
        _server,
        "start, stop or check a Prefect server in the background that commands reuse",
        "Without PREFECT_API_URL, every flow command starts a temporary Prefect server (most "
        "of a short run's time). `pricecast server start` keeps one running for this home, "
        "which later commands use while it answers.",
        [
            click.Argument(["action"], type=click.Choice(["start", "stop", "status"])),
            click.Option(["--port"], type=int, help="port on 127.0.0.1 (default: a free one)"),
        ],
        None,
    )
    _command(
        app,
        "serve",
        _serve,
        "serve the Prefect deployments (daily, weekly-retrain, backfill) from this process",
        "Register the deployments of deployments/prefect.yaml and run their flow runs here, "
        "on their schedules, without a work pool, until interrupted.",
        (),
        None,
    )
    _command(
        app,
        "reader-role",
        _reader_role,
        "create a read-only role for SQL consumers (PostgreSQL, MariaDB/MySQL)",
        "Create or update a login role that can select from every pricecast table and view, "
        "including views recreated later, and write nothing: no temporary tables, large "
        "objects or pipeline lock. On MariaDB/MySQL the grants are per table: run it again "
        "after an upgrade adds a table.\n\nNAME: role name (lower case, digits, _).",
        [
            click.Argument(["role"], metavar="NAME"),
            click.Option(
                ["--password-env"],
                metavar="VAR",
                help="set the role's password from this environment variable (never from "
                "the command line, where it would show in process lists)",
            ),
        ],
        None,
    )
    tickers = click.Group(
        "tickers",
        short_help="list, add or deactivate tracked tickers",
        help="The universe: inactive tickers keep their history but are not trained or forecast.",
        params=_common_options(),
    )
    app.add_command(tickers)
    for action, summary, params in (
        ("list", "show the tracked tickers", []),
        (
            "add",
            "track or reactivate tickers",
            [
                click.Argument(["symbols"], type=TICKERS),
                click.Option(
                    ["--exchange"], help="exchange_calendars code (default: $PRICECAST_EXCHANGE)"
                ),
            ],
        ),
        (
            "remove",
            "deactivate tickers (history is kept)",
            [click.Argument(["symbols"], type=TICKERS)],
        ),
    ):
        _command(
            tickers,
            action,
            _tickers_command,
            summary,
            summary[0].upper() + summary[1:] + ".",
            params,
            None,
            fixed={"action": action},
        )
    _command(
        app,
        "sequences",
        _sequences,
        "build the scaled windows of each ticker",
        "Write each ticker's scaled sliding windows as Parquet.",
    )
    _command(
        app,
        "train",
        _train,
        "retrain or fine-tune the model",
        "Train on the sequences built as of the as-of date.",
        [_mode()],
    )
    _command(
        app,
        "forecast",
        _forecast,
        "write forecasts for the next trading days",
        "Forecast with the newest model trained on data up to the as-of date.",
        [
            _horizon(),
            click.Option(
                ["--model-version"],
                type=int,
                metavar="N",
                help="model version to use (default: champion)",
            ),
        ],
    )
    _command(
        app,
        "report",
        _report,
        "write an HTML report of the forecasts (overview, charts, accuracy)",
        "A self-contained HTML page: the champion's accuracy against the naive forecast, an "
        "overview table of every ticker (sortable by forecast move, interval width and "
        "error), and charts of closes and forecast fans for at most --charts tickers: those "
        "of --tickers in their order, else the largest forecast moves.",
        [
            click.Option(
                ["--output"],
                metavar="PATH",
                help="HTML file to write (default: <home>/reports/report-<as-of>.html)",
            ),
            click.Option(
                ["--history-days"],
                type=click.IntRange(min=1),
                default=60,
                show_default=True,
                metavar="N",
                help="closes shown per chart; the live error covers them too",
            ),
            click.Option(
                ["--charts"],
                type=click.IntRange(min=0),
                default=24,
                show_default=True,
                metavar="N",
                help="tickers charted at most (the overview lists every ticker)",
            ),
        ],
        "default: the newest date with forecasts",
    )
    _command(
        app,
        "gc",
        _gc,
        "delete the model files and reports the retention policy no longer keeps",
        "Keeps the newest champion's lineage, the newest PRICECAST_KEEP_UNPROMOTED unpromoted "
        "versions, and promoted versions and reports of the last PRICECAST_KEEP_DAYS days; "
        "every daily run does this at its end.",
        [
            click.Option(
                ["--dry-run"], is_flag=True, help="list what would be deleted, delete nothing"
            )
        ],
    )
    _command(
        app,
        "backtest",
        _backtest,
        "walk-forward backtest of LSTM variants against baselines",
        "Refit every model per fold on its training span; score 1..H-step forecasts against "
        "the naive forecast (MASE) and the prediction intervals (coverage).",
        [
            click.Option(
                ["--folds"], type=int, default=5, show_default=True, metavar="N", help="test folds"
            ),
            click.Option(
                ["--horizon"],
                type=int,
                default=1,
                show_default=True,
                metavar="H",
                help="steps forecast from each origin",
            ),
            click.Option(
                ["--test-fraction"],
                type=float,
                default=0.2,
                show_default=True,
                metavar="F",
                help="share of each series in the test folds",
            ),
            click.Option(
                ["--origins"],
                type=click.Choice(["expanding", "rolling"]),
                default="expanding",
                show_default=True,
                help="training span",
            ),
            click.Option(
                ["--variants"],
                default="default",
                show_default=True,
                metavar="A,B",
                help="LSTM variants: default, tutorial, ewma_intervals, static_intervals, "
                "minmax, log_ratio, per_ticker, global, mse, mae, window5, window20, units16, "
                "units100, batch32, batch256, no_early_stopping, no_damping, units50_batch256",
            ),
            click.Option(
                ["--json"],
                metavar="PATH",
                help="write one record per model, ticker and horizon step",
            ),
            click.Option(
                ["--points"],
                metavar="PATH",
                help="write every forecast point (CSV, or Parquet for a .parquet path) to "
                "recompute any metric",
            ),
            *_fan_out(),
        ],
    )
    return app


def _args(values: dict[str, Any]) -> Args:
    """A command's values, the common options given before the command filling those
    not given after it; repeated options given none are ``None``, as if absent."""
    context = click.get_current_context()
    for parent in (context.parent, context.parent and context.parent.parent):
        if parent is None:
            continue
        for name in COMMON:
            if not values.get(name) and parent.params.get(name):
                values[name] = parent.params[name]
    values = {key: (None if value == () else value) for key, value in values.items()}
    return Args(**values)


def _settings(args: Args) -> Settings:
    given: dict[str, Any] = {}
    for option, name in (
        ("database_url", "database_url"),
        ("home", "home"),
        ("tickers", "tickers"),
        ("horizon", "horizon"),
        ("source", "source"),
        ("dask_address", "dask_address"),
        ("workers", "workers"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            given[name] = list(value) if isinstance(value, tuple) else value
    return Settings(**given)


def _flag(args: Args, name: str) -> bool:
    return bool(getattr(args, name, False))


def _configure_logging(args: Args, settings: Settings) -> None:
    level = (
        logging.WARNING
        if _flag(args, "quiet")
        else getattr(logging, settings.log_level.upper(), 20)
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s | %(levelname)-7s | %(message)s", "%H:%M:%S")
    )
    library = logging.getLogger("pipeline")
    library.handlers[:] = [handler]
    library.setLevel(level)
    library.propagate = False


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
        ("tickers", ", ".join(summary.tickers) or "-"),
    ]


def _ingest(args: Args, settings: Settings) -> int:
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
        print(f"rejected: {_one_line(error)}", file=sys.stderr)
    return _input_status(summary, args.strict)


def _server(args: Args, settings: Settings) -> int:
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


def _serve(args: Args, settings: Settings) -> int:
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
    _quiet_console_tracebacks()
    serve_deployments()
    return 0


def _reader_role(args: Args, settings: Settings) -> int:
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


def _tickers_command(args: Args, settings: Settings) -> int:
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


def _sequences(args: Args, settings: Settings) -> int:
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
            ("tickers", ", ".join(result.tickers)),
            ("train windows", summary.train_windows),
            ("validation windows", summary.validation_windows),
            ("files", settings.home_path / "sequences"),
            ("skipped", skipped or "-"),
        ]
    )
    return 0


def _train(args: Args, settings: Settings) -> int:
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
            ("model", _model_line(result.summary())),
            ("tickers", ", ".join(result.tickers)),
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


def _forecast(args: Args, settings: Settings) -> int:
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
            ("tickers", ", ".join(result.tickers)),
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


def _quiet_console_tracebacks(quiet: bool = False) -> None:
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


def _gc(args: Args, settings: Settings) -> int:
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


def _report(args: Args, settings: Settings) -> int:
    from pathlib import Path

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


def _backtest(args: Args, settings: Settings) -> int:
    import json
    from pathlib import Path

    from pipeline.evaluate.backtest import BacktestConfig
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

    _quiet_console_tracebacks(_flag(args, "quiet"))
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


def _run(args: Args, settings: Settings) -> int:
    from pipeline.ingest.sources import build_sources

    # Check what fails most often before Prefect starts, for a one-line error.
    if settings.sources:
        build_sources(settings.sources, http_options=settings.http_options())
    _open(settings).dispose()

    from flows.server import use_running
    from pipeline.orphans import guard_descendants

    guard_descendants()  # a killed run takes its Prefect server and workers with it
    use_running(settings.home_path)  # before Prefect is imported
    from flows.daily import daily_pipeline
    from flows.heartbeats import for_command_runs

    _quiet_console_tracebacks(_flag(args, "quiet"))
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
            ("tickers", f"{', '.join(fc.tickers)} ({len(fc.tickers)})"),
            (
                "ingested",
                f"{ingest.rows_loaded} rows loaded, {ingest.rows_quarantined} quarantined, "
                f"{ingest.rows_deferred} deferred of {ingest.rows_read} read from "
                f"{ingest.inputs} input(s) ({ingest.inputs_unchanged} unchanged)",
            ),
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
        print(f"rejected: {_one_line(error)}", file=sys.stderr)
    return _input_status(ingest, args.strict)


#: Commands that write pipeline data; the flows take the lock themselves.
_WRITERS = (_ingest, _sequences, _train, _forecast, _backtest, _tickers_command, _gc)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _dispatch(handler: Callable[[Args, Settings], int], args: Args) -> int:
    """Run one command's handler; returns the exit status, a failure as one line."""
    try:
        settings = _settings(args)
        if handler not in (_run, _serve, _server):  # flows log through Prefect's handlers
            _configure_logging(args, settings)
        # One writer at a time per database (pipeline.db.lock); `tickers list` only reads.
        listing = handler is _tickers_command and args.action == "list"
        if handler in _WRITERS and not listing:
            from pipeline.db.lock import pipeline_lock

            with pipeline_lock(settings.resolved_database_url, settings.lock_wait_seconds):
                return handler(args, settings)
        return handler(args, settings)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        return _fail(args, ConfigurationError(f"invalid setting ({problems})"))
    except PricecastError as exc:
        return _fail(args, exc)
    except KeyboardInterrupt:
        print("pricecast: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence of a command line
        return _fail(args, exc, unexpected=True)


def _fail(args: Args, exc: BaseException, unexpected: bool = False) -> int:
    if _flag(args, "debug"):
        raise exc
    if unexpected:
        message = f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
    else:
        message = str(exc)
    print(f"pricecast: error: {_one_line(message)}", file=sys.stderr)
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (2 for a usage error, after Click's
    message naming the option and the command's usage)."""
    use_prefect_defaults()  # before any command imports Prefect
    app = build_app()
    try:
        status = app.main(
            args=list(sys.argv[1:] if argv is None else argv),
            prog_name="pricecast",
            standalone_mode=False,
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        print("pricecast: interrupted", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
