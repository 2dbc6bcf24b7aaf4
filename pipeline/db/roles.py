"""A read-only role for SQL consumers (PostgreSQL, MariaDB/MySQL).

The role may connect and select from every pricecast table and view, now and
later (default privileges cover views recreated by upgrades), and nothing
else: no insert, update, delete, or DDL, and not the pipeline lock (its table
lock needs UPDATE, ``pipeline.db.lock``), so it cannot block a run.

Two rights every role has through ``PUBLIC`` are taken away as well:

* temporary tables: ``TEMPORARY`` on the database is revoked from ``PUBLIC``
  and granted to the role running this (pricecast's bulk loads stage rows in
  temporary tables). Other roles that need temporary tables in this database
  must be granted ``TEMPORARY`` by name.
* large objects: PostgreSQL has no privilege for creating them; ``lo_create``
  and its siblings are functions executable by ``PUBLIC``, owned by the
  bootstrap superuser. Run as a superuser, ``EXECUTE`` on them is revoked from
  ``PUBLIC`` in this database; run as anyone else it cannot be, and the result
  says so (``large_objects_revoked``).

On MariaDB/MySQL the role is a user (``'name'@'%'``) granted SELECT on each
table and view but ``pipeline_lock``: not on the database as a whole, since a
transaction left open after reading that table would hold a metadata lock that
delays the run's ``LOCK TABLES``. It has no LOCK TABLES or CREATE TEMPORARY
TABLES privilege. MariaDB has no default privileges: a table added by a later
upgrade needs the command again (views dropped and recreated keep their grants).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.db.schema import pipeline_lock
from pipeline.errors import ConfigurationError

ROLE_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

#: The functions that create large objects (the server-side ``lo_import`` also
#: needs superuser or pg_read_server_files).
LARGE_OBJECT_CREATORS = (
    "lo_create(oid)",
    "lo_creat(integer)",
    "lo_from_bytea(oid, bytea)",
    "lo_import(text)",
    "lo_import(text, oid)",
)


@dataclass(frozen=True)
class ReaderRole:
    """What ``create_reader_role`` did."""

    role: str
    #: ``EXECUTE`` on ``LARGE_OBJECT_CREATORS`` was revoked from ``PUBLIC`` (it needs a
    #: superuser); when ``False`` the role can still create large objects. Always
    #: ``True`` on MariaDB/MySQL, which have none.
    large_objects_revoked: bool
    #: Grants are per table (MariaDB/MySQL): run the command again after an upgrade.
    per_table: bool = False


def large_object_revocation(database: str) -> str:
    """The SQL a superuser runs in ``database`` so that no other role creates large objects."""
    functions = ", ".join(LARGE_OBJECT_CREATORS)
    return f"REVOKE EXECUTE ON FUNCTION {functions} FROM PUBLIC; -- in database {database}"


def create_reader_role(conn: Connection, role: str, password: str | None = None) -> ReaderRole:
    """Create (or update) a login role that can read every table and view and write nothing.

    Args:
        conn: a connection as the owner of the pricecast schema.
        role: the role name (lower case letters, digits, underscores).
        password: its password; ``None`` leaves it without one (trust or peer auth).

    Returns:
        The role, and whether large objects could be denied to it.

    Raises:
        ConfigurationError: SQLite, or an invalid role name.
    """
    if conn.dialect.name not in ("postgresql", "mysql", "mariadb"):
        raise ConfigurationError(
            "read-only roles are created on PostgreSQL and MariaDB/MySQL; this database is "
            f"{conn.dialect.name}"
        )
    if not ROLE_PATTERN.match(role):
        raise ConfigurationError(
            f"invalid role name {role!r}: use lower case letters, digits and underscores"
        )
    if conn.dialect.name != "postgresql":
        return _create_mysql_reader(conn, role, password)
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
        f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC',
        f'REVOKE TEMPORARY ON DATABASE "{database}" FROM "{role}"',
        f'GRANT TEMPORARY ON DATABASE "{database}" TO CURRENT_USER',
    ):
        conn.execute(sa.text(statement))
    superuser = conn.execute(
        sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    ).scalar_one()
    if superuser:
        conn.execute(sa.text(large_object_revocation(database).split(";")[0]))
    return ReaderRole(role=role, large_objects_revoked=bool(superuser))


def _create_mysql_reader(conn: Connection, role: str, password: str | None) -> ReaderRole:
    user = f"'{role}'@'%'"
    database = conn.execute(sa.text("SELECT DATABASE()")).scalar_one()
    conn.execute(sa.text(f"CREATE USER IF NOT EXISTS {user}"))
    if password is not None:
        conn.execute(sa.text(f"ALTER USER {user} IDENTIFIED BY {_literal(conn, password)}"))
    inspector = sa.inspect(conn)
    names = set(inspector.get_table_names()) | set(inspector.get_view_names())
    for name in sorted(names - {pipeline_lock.name}):
        conn.execute(sa.text(f"GRANT SELECT ON `{database}`.`{name}` TO {user}"))
    return ReaderRole(role=role, large_objects_revoked=True, per_table=True)


def _literal(conn: Connection, value: str) -> str:
    return (
        sa.literal(value)
        .compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        .string
    )
