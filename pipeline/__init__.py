"""pricecast library code: ingestion, sequences, training and forecasting.

Nothing in this package imports Prefect; orchestration lives in ``flows``.
"""

__version__ = "0.1.0"
