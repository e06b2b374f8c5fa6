"""What each column of sql/schema.sql can hold, read from the DDL PostgreSQL runs: the tests of
the wire schema's bounds compare against this, not against the models the schema derives from."""
import datetime
import re

from tests.conftest import ROOT

_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\)", re.S)
_COLUMN = re.compile(r"\b(\w+) (SERIAL|INTEGER|BIGINT|REAL|TEXT|BYTEA|BOOLEAN|TIMESTAMP"
                     r"|VARCHAR\((\d+)\))")

INTEGER_RANGES = {"SERIAL": (-2**31, 2**31 - 1), "INTEGER": (-2**31, 2**31 - 1),
                  "BIGINT": (-2**63, 2**63 - 1)}
# float4: PostgreSQL refuses a value that would round to infinity, or to zero when it is not 0.
REAL_LARGEST = 3.4028234663852886e38
REAL_SMALLEST = 1.401298464324817e-45


def columns():
    """{table: {column: (type, varchar length or None)}}"""
    tables = {}
    for name, body in _TABLE.findall((ROOT / "sql" / "schema.sql").read_text()):
        body = re.sub(r"--[^\n]*", "", body)
        tables[name] = {column: (kind.split("(")[0], int(length) if length else None)
                        for column, kind, length in _COLUMN.findall(body)}
    return tables


def largest(kind, length=None):
    """The largest integer (or longest text) the column stores."""
    return length if kind == "VARCHAR" else INTEGER_RANGES[kind][1]


def refusal(kind, length, value):
    """Why PostgreSQL would refuse `value` in a column of this type, or None if it stores it."""
    if value is None or kind in ("BYTEA", "TEXT"):
        return None
    if kind in INTEGER_RANGES:
        low, high = INTEGER_RANGES[kind]
        return None if low <= value <= high else f"{value} is out of {kind}'s range"
    if kind == "REAL":
        size = abs(value)
        if size > REAL_LARGEST or 0 < size < REAL_SMALLEST:
            return f"{value!r} is out of range for type real"
        return None
    if kind == "VARCHAR":
        return None if len(value) <= length else f"{len(value)} characters exceed VARCHAR({length})"
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    if kind == "TIMESTAMP":
        return None if isinstance(value, datetime.datetime) else f"{value!r} is not a time"
    raise AssertionError(f"no rule for {kind}")
