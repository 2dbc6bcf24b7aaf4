"""Errors a user can act on.

Each carries a message that says what was wrong, where (file, line, ticker,
date) and, where it helps, what to do. The command line prints the message on
one line and exits non-zero; anything else is a bug.
"""


class PricecastError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class ConfigurationError(PricecastError):
    """A setting or parameter has a value the pipeline cannot use."""


class InputFileError(PricecastError):
    """An input file is missing, unreadable or not in a known layout."""


class DatabaseUnavailableError(PricecastError):
    """The database URL cannot be connected to."""


class StatementTimeoutError(PricecastError):
    """A statement ran longer than ``PRICECAST_STATEMENT_TIMEOUT`` and was cancelled."""


class MissingDataError(PricecastError):
    """A stage needs data that earlier stages have not produced."""


class ModelStoreError(PricecastError):
    """A registered model file is missing or cannot be loaded."""


class StaleDataError(PricecastError):
    """Tickers lack the close of the last trading day and the policy is to fail."""
