"""The engines' fast paths of ``pipeline.db.upsert.bulk_upsert``, one module each.

``rows`` turns the data frame into key-sorted NumPy columns once; ``sql`` holds
what the engines' statements share (quoting, the NULL-safe comparison, the
replace rule); ``sqlite``, ``mysql`` and ``postgresql`` write those rows by each
driver's fastest path; ``pgbinary`` builds and reads PostgreSQL's binary format
with NumPy for the PostgreSQL path. Callers use ``pipeline.db.upsert``.
"""
