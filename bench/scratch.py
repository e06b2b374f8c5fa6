"""A throwaway PostgreSQL database for a benchmark run, on the server the tests use."""
import contextlib
import os

PG_BASE = os.environ.get("MPANEL_TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def scratch_postgres(prefix):
    """Yield the URL of a new, empty database; drop it afterwards whatever happened."""
    import psycopg2

    admin = psycopg2.connect(PG_BASE)
    admin.autocommit = True
    name = f"{prefix}_{os.getpid()}"
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_BASE.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
