"""A read-only role for SQL consumers (PostgreSQL).

The role may connect and select from every pricecast table and view, now and
later (default privileges cover views recreated by upgrades), and nothing
else: no insert, update, delete, or DDL.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.errors import ConfigurationError

ROLE_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def create_reader_role(conn: Connection, role: str, password: str | None = None) -> None:
    """Create (or update) a login role that can read every table and view and write nothing.

    Args:
        conn: a connection as the owner of the pricecast schema.
        role: the role name (lower case letters, digits, underscores).
        password: its password; ``None`` leaves it without one (trust or peer auth).

    Raises:
        ConfigurationError: not PostgreSQL, or an invalid role name.
    """
    if conn.dialect.name != "postgresql":
        raise ConfigurationError(
            f"read-only roles are created on PostgreSQL; this database is {conn.dialect.name}"
        )
    if not ROLE_PATTERN.match(role):
        raise ConfigurationError(
            f"invalid role name {role!r}: use lower case letters, digits and underscores"
        )
    exists = conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
    if not exists:
        conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE'))
    if password is not None:
        conn.execute(sa.text(f'ALTER ROLE "{role}" PASSWORD {_literal(conn, password)}'))
    database = conn.execute(sa.text("SELECT current_database()")).scalar_one()
    schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
    for statement in (
        f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"',
        f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"',
        f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"',
        f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{schema}" GRANT SELECT ON TABLES TO "{role}"',
        f'REVOKE CREATE ON SCHEMA "{schema}" FROM "{role}"',
    ):
        conn.execute(sa.text(statement))


def _literal(conn: Connection, value: str) -> str:
    return (
        sa.literal(value)
        .compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        .string
    )
