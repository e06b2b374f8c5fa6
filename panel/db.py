"""Database selection and schema set-up.

The database comes from one URL (`sqlite:///path` or `postgresql://user@host:port/name`) and is
bound late to the models through `database_proxy`, so the CLI, the web app and the tests can each
point the same models at a different database.

`init_schema()` is idempotent: a new database gets the current schema — on PostgreSQL from
`sql/schema.sql` (the reviewed DDL is what production runs), on SQLite from the models; a test
keeps the two in step by introspecting both — and an older one is upgraded by the migrations in
`sql/migrations/` (panel/migrations.py).
"""
import datetime
import urllib.parse
from pathlib import Path

import peewee
from playhouse.pool import PooledPostgresqlDatabase

database_proxy = peewee.DatabaseProxy()

SCHEMA_SQL = Path(__file__).resolve().parent.parent / "sql" / "schema.sql"

# SQLite settings: WAL lets the dashboard read while an agent writes; busy_timeout makes a
# writer wait for the lock instead of failing at once under concurrent agents.
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "foreign_keys": 1,
    "busy_timeout": 10_000,
}


def utcnow():
    """Naive UTC: the schema's TIMESTAMP columns hold UTC without a zone, on both databases."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def open_database(url, max_connections=20):
    """Return an unconnected Peewee database for `url`."""
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.split("+")[0]
    if scheme == "sqlite":
        if parsed.netloc:
            raise ValueError("sqlite URLs look like sqlite:///relative/path or sqlite:////abs/path")
        # As in SQLAlchemy: three slashes then a relative path, four for an absolute one.
        path = urllib.parse.unquote(parsed.path)[1:]
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return peewee.SqliteDatabase(path, pragmas=SQLITE_PRAGMAS, check_same_thread=False)
    if scheme in ("postgres", "postgresql"):
        params = dict(urllib.parse.parse_qsl(parsed.query))
        return PooledPostgresqlDatabase(
            urllib.parse.unquote(parsed.path.lstrip("/")) or "postgres",
            user=urllib.parse.unquote(parsed.username) if parsed.username else None,
            password=urllib.parse.unquote(parsed.password) if parsed.password else None,
            host=parsed.hostname or None,
            port=parsed.port or None,
            max_connections=max_connections,
            stale_timeout=300,
            **params,
        )
    raise ValueError(f"unsupported database URL scheme {parsed.scheme!r}: "
                     "use sqlite:///path or postgresql://user@host/db")


def bind(url, max_connections=20):
    """Point the models at the database for `url` and return it."""
    database = open_database(url, max_connections=max_connections)
    database_proxy.initialize(database)
    return database


def is_postgres(database=None):
    database = database or database_proxy.obj
    return isinstance(database, peewee.PostgresqlDatabase)


def product_name(database=None):
    """'PostgreSQL' or 'SQLite', for messages that must say which database is at fault."""
    return "PostgreSQL" if is_postgres(database) else "SQLite"


def init_schema(database=None):
    """Create the schema, or upgrade it to this panel's version (panel/migrations.py); record
    the version. Safe to run again. -> the schema version."""
    from . import migrations  # late: it imports this module

    return migrations.migrate(database)[1]
