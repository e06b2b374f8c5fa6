"""Schema versions and migrations: a new database is created at the latest version; an
existing one is upgraded by the ordered files in sql/migrations/ (see its README).

Everything pending is applied in one transaction under a lock (PostgreSQL: a transaction-scoped
advisory lock; SQLite: BEGIN IMMEDIATE), and the version is read again inside it, so replicas
starting together upgrade once and a failed migration leaves the database as it was. Before an
SQLite database is upgraded, an online backup of it is written beside it.
"""
import logging
import re
from pathlib import Path


from .db import database_proxy, is_postgres, utcnow

log = logging.getLogger("mpanel.migrations")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "sql" / "migrations"
BASELINE = 1  # the first release's schema
LOCK_KEY = 7_341_100
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+?)(?:\.(postgresql|sqlite))?\.sql$")


class SchemaError(ValueError):
    """The database's schema cannot be used or upgraded by this panel."""


def available(dialect):
    """[(version, name, path)] of the migrations for `dialect` ("postgresql" or "sqlite")."""
    found = {}
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            continue
        version, name, only = int(match.group(1)), match.group(2), match.group(3)
        if only in (None, dialect):
            if version in found and only is None:
                continue  # a dialect's own file wins over a shared one
            found[version] = (version, name, path)
    return [found[v] for v in sorted(found)]


def latest():
    versions = [v for v, _, _ in available("postgresql")] + \
        [v for v, _, _ in available("sqlite")]
    return max(versions + [BASELINE])


def dialect_of(database):
    return "postgresql" if is_postgres(database) else "sqlite"


def current_version(database):
    """The database's schema version, or None for a database without mPanel's tables."""
    if "schema_version" not in database.get_tables():
        return None
    return database.execute_sql("SELECT MAX(version) FROM schema_version").fetchone()[0]


def statements(path):
    """The SQL statements of a migration file: split at `;` ending a line, comments dropped."""
    text = "\n".join(line for line in path.read_text().splitlines()
                     if not line.strip().startswith("--"))
    return [part.strip() for part in re.split(r";\s*$", text, flags=re.M) if part.strip()]


def pending(database):
    version = current_version(database)
    if version is None:
        return []
    return [m for m in available(dialect_of(database)) if m[0] > version]


def sqlite_path(database):
    return None if is_postgres(database) else database.database


def backup_sqlite(database, target):
    """An online, consistent copy of an SQLite database (sqlite3's backup API): safe while the
    panel is writing to it."""
    import sqlite3

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    source = database.connection()
    copy = sqlite3.connect(str(target))
    try:
        source.backup(copy)
    finally:
        copy.close()
    return target


def migrate(database=None, backup=True):
    """Create or upgrade the schema. -> (version before or None, version now, [applied names])."""
    from . import alerts, models, rollups  # late: they import db

    database = database or database_proxy.obj
    target = latest()
    with database.bind_ctx(models.ALL_MODELS), database.connection_context():
        before = current_version(database)
        if before is not None and before > target:
            raise SchemaError(f"the database is at schema version {before}, newer than this "
                              f"panel's {target}: upgrade the panel (never run an older one on "
                              "an upgraded database)")
        if before is not None and before < target and backup and not is_postgres(database):
            stamp = utcnow().strftime("%Y%m%dT%H%M%S")
            copy = backup_sqlite(database, f"{sqlite_path(database)}.v{before}-{stamp}.bak")
            log.info("backed up the database before upgrading path=%s", copy)
        applied = []
        lock = {} if is_postgres(database) else {"lock_type": "IMMEDIATE"}
        with database.atomic(**lock):
            if is_postgres(database):
                database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            version = current_version(database)  # again, under the lock
            seeded_from = version
            if version is None:
                _create(database)
                models.SchemaVersion.create(version=target, applied_at=utcnow())
                applied.append(f"created at version {target}")
            else:
                for number, name, path in available(dialect_of(database)):
                    if number <= version:
                        continue
                    for statement in statements(path):
                        database.execute_sql(statement)
                    models.SchemaVersion.create(version=number, applied_at=utcnow())
                    applied.append(f"{number:03d} {name}")
                    log.info("migration applied version=%s name=%s", number, name)
            if version != target:
                alerts.ensure_default_rules(seeded_from)
        rollups.ensure_partitions()
        return before, target, applied


def _create(database):
    from . import db, models

    if is_postgres(database):
        database.execute_sql(db.SCHEMA_SQL.read_text())
    else:
        database.create_tables(models.ALL_MODELS, safe=True)


# ===== Does the live schema match? =============================================================

# One query lists the live tables' columns (and, on PostgreSQL, whether this role may read and
# write each table), so /healthz can afford to ask on every poll. pg_catalog, not
# information_schema: the latter hides the columns of a table the role has no privilege on,
# which would read as "missing" instead of "not allowed".
_LIVE_COLUMNS = {
    "postgresql": """
        SELECT c.relname, a.attname,
               has_table_privilege(c.oid, 'SELECT') AND has_table_privilege(c.oid, 'INSERT')
               AND has_table_privilege(c.oid, 'UPDATE') AND has_table_privilege(c.oid, 'DELETE')
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
          AND c.relname = ANY(%s)""",
    "sqlite": """
        SELECT m.name, p.name, 1
        FROM sqlite_master m JOIN pragma_table_info(m.name) p
        WHERE m.type = 'table'""",
}


def expected_columns():
    """{table: {column}} as the models declare them (tests/integration/test_schema.py keeps
    sql/schema.sql the same)."""
    from . import models

    return {model._meta.table_name: {f.column_name for f in model._meta.sorted_fields}
            for model in models.ALL_MODELS}


def schema_problems(database=None):
    """What keeps this panel from using the live schema: missing tables and columns, columns
    the models do not know, tables this role may not read and write. [] when it matches."""
    database = database or database_proxy.obj
    expected = expected_columns()
    dialect = dialect_of(database)
    # PostgreSQL: only this panel's tables, not the daily partitions of server_metrics (their
    # columns are the parent's) nor anyone else's in the schema.
    params = (list(expected),) if dialect == "postgresql" else ()
    live, allowed = {}, {}
    for table, column, writable in database.execute_sql(_LIVE_COLUMNS[dialect],
                                                        params).fetchall():
        live.setdefault(table, set()).add(column)
        allowed[table] = bool(writable)
    problems = []
    for table, columns in expected.items():
        if table not in live:
            problems.append(f"table {table} is missing")
            continue
        problems += [f"column {table}.{c} is missing" for c in sorted(columns - live[table])]
        problems += [f"column {table}.{c} is not in this panel's schema"
                     for c in sorted(live[table] - columns)]
        if not allowed[table]:
            problems.append(f"table {table}: this role may not select, insert, update and "
                            "delete")
    return problems


def describe(before, now, applied):
    if before is None:
        return f"schema version {now} created"
    if not applied:
        return f"schema version {now}: up to date"
    return f"schema version {before} -> {now}: applied {', '.join(applied)}"

