"""The ``pricecast`` command line, on Click: its commands, options and arguments.

``pricecast run`` runs the ``daily-pipeline`` Prefect flow; ``ingest``,
``sequences``, ``train`` and ``forecast`` run one stage each, directly,
without starting Prefect. Every command reads its defaults from the
``PRICECAST_*`` environment, and its options override them; the common
options (``--database-url``, ``--home``, ``-q``, ``--debug``) go before or
after the command. A failure prints one line saying why and exits non-zero
(1 for an error of the pipeline, 2 for a usage error, 3 when an input was
rejected).

This module declares the commands and runs one (``main``): it parses the
options into ``Args``, reads the settings, configures the logs, takes the
database's lock for the commands that write, and turns a failure into its one
line. What each command does is in ``flows.commands``.

Importing this module imports neither pandas nor Prefect: ``pricecast --help``
answers in a fraction of a second, and each command imports what it needs.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import click
from pydantic import ValidationError

from flows import commands, use_prefect_defaults
from flows.commands import EXIT_ERROR, EXIT_REJECTED, Args
from pipeline import __version__
from pipeline.errors import ConfigurationError, PricecastError
from pipeline.settings import Settings


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
        commands.run_command,
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
        commands.ingest_command,
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
        commands.server_command,
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
        commands.serve_command,
        "serve the Prefect deployments (daily, weekly-retrain, backfill) from this process",
        "Register the deployments of deployments/prefect.yaml and run their flow runs here, "
        "on their schedules, without a work pool, until interrupted.",
        (),
        None,
    )
    _command(
        app,
        "reader-role",
        commands.reader_role_command,
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
            commands.tickers_command,
            summary,
            summary[0].upper() + summary[1:] + ".",
            params,
            None,
            fixed={"action": action},
        )
    _command(
        app,
        "sequences",
        commands.sequences_command,
        "build the scaled windows of each ticker",
        "Write each ticker's scaled sliding windows as Parquet.",
    )
    _command(
        app,
        "train",
        commands.train_command,
        "retrain or fine-tune the model",
        "Train on the sequences built as of the as-of date.",
        [_mode()],
    )
    _command(
        app,
        "forecast",
        commands.forecast_command,
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
        commands.report_command,
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
        commands.gc_command,
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
        commands.backtest_command,
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


def _configure_logging(args: Args, settings: Settings) -> None:
    level = (
        logging.WARNING
        if commands.flag(args, "quiet")
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


def _dispatch(handler: Callable[[Args, Settings], int], args: Args) -> int:
    """Run one command's handler; returns the exit status, a failure as one line."""
    try:
        settings = _settings(args)
        if handler is commands.run_command:
            from flows.server import start_for_run

            # Prefect's API first: it starts while the run checks its inputs and imports.
            start_for_run(settings.home_path)
        if handler not in (
            commands.run_command,
            commands.serve_command,
            commands.server_command,
        ):  # flows log through Prefect's handlers
            _configure_logging(args, settings)
        # One writer at a time per database (pipeline.db.lock); `tickers list` only reads.
        listing = handler is commands.tickers_command and args.action == "list"
        if handler in commands.WRITERS and not listing:
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
    if commands.flag(args, "debug"):
        raise exc
    if unexpected:
        message = f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
    else:
        message = str(exc)
    print(f"pricecast: error: {commands.one_line(message)}", file=sys.stderr)
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (2 for a usage error, after Click's
    message naming the option and the command's usage).

    Without ``argv`` (the ``pricecast`` command itself), the process exits when the
    command is done (``exit_now``) instead of returning."""
    status = _main(argv)
    if argv is None:
        exit_now(status)
    return status


def exit_now(status: int) -> NoReturn:
    """End the process with ``status`` the way the interpreter does, minus its teardown.

    Python's exit first joins the threads still running and runs the ``atexit``
    handlers (Prefect's last logs and events, the temporary server's stop); then it
    tears down every module, which after a run that imported Prefect, pandas and torch
    takes about 1.7 s on two busy cores and does nothing a user sees. This does the
    first two, flushes the standard streams, and exits.
    """
    shutdown = getattr(threading, "_shutdown", None)  # what Py_Finalize calls first
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def _main(argv: Sequence[str] | None) -> int:
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
