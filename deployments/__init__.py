"""Prefect deployments of pricecast: ``prefect.yaml`` and the ``serve`` entrypoint."""
