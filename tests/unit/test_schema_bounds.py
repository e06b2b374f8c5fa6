"""The wire schema never admits a value its column cannot hold. Walks every numeric field of
the published schema, drives it to its bounds (every array on the way full, so sums are at
their largest), turns the sample into a row as ingest does, and checks each column's value
against its type in sql/schema.sql. A value PostgreSQL refuses would be answered 503 "retry"
for good, and the agent's buffer would stall behind it."""
import copy

import pytest

from panel import api, ingest, models, protocol
from panel.validation import validate
from tests import sql_columns

COLUMNS = sql_columns.columns()
SMALLEST_DOUBLE = 5e-324  # schema-valid wherever the minimum is 0


def minimal(schema):
    """The smallest instance of `schema`: its required fields only, each at its minimum."""
    kind = schema.get("type")
    if kind == "object":
        return {key: minimal(schema["properties"][key]) for key in schema.get("required", ())}
    if kind == "array":
        return []
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "string":
        return "x" * schema.get("minLength", 0)
    return schema.get("minimum", 0)


def leaves(schema, path=()):
    """(path, schema) of every number field; "[]" in a path steps into an array's items."""
    kind = schema.get("type")
    if kind in ("integer", "number"):
        yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from leaves(sub, path + (key,))
    if "items" in schema:
        yield from leaves(schema["items"], path + ("[]",))


def with_leaf(schema, path, value):
    """A minimal instance with the field at `path` set to value; every array on the way holds
    its maxItems entries, each naming itself differently (sums count distinct devices)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if head == "[]":
        entries = []
        for index in range(schema["maxItems"]):
            entry = with_leaf(schema["items"], rest, value)
            if isinstance(entry, dict):
                fixed = {k for k, sub in schema["items"]["properties"].items() if "enum" in sub}
                entry = {k: f"{v}{index}" if isinstance(v, str) and v and k not in fixed else v
                         for k, v in entry.items()}
            entries.append(entry)
        return entries
    instance = minimal(schema)
    instance[head] = with_leaf(schema["properties"][head], rest, value)
    return instance


def extremes(schema):
    values = [schema["maximum"]]
    if schema["type"] == "number" and schema.get("minimum", 0) <= 0:
        values.append(SMALLEST_DOUBLE)
    return values


METRIC_LEAVES = [(".".join(path).replace(".[]", "[]"), path, leaf, value)
                 for path, leaf in leaves(protocol.METRICS) for value in extremes(leaf)]


@pytest.mark.parametrize("name,path,leaf,value", METRIC_LEAVES,
                         ids=[f"{name}={value!r}" for name, _, _, value in METRIC_LEAVES])
def test_every_metric_at_its_bounds_fits_the_columns_it_is_stored_in(name, path, leaf, value):
    metrics = with_leaf(protocol.METRICS, path, value)
    validate(protocol.METRICS, metrics)  # schema-valid, so the panel must be able to store it
    row = ingest.sample_row(copy.deepcopy(metrics))
    table = COLUMNS[models.Metric._meta.table_name]
    for column, stored in row.items():
        kind, length = table[column]
        problem = sql_columns.refusal(kind, length, stored)
        assert problem is None, f"metrics.{name} = {value!r}: server_metrics.{column}: {problem}"
    if row["detail"] is not None:
        models.pack_detail(row["detail"])


# Where /api/agent/register keeps each field (api.register).
REGISTER_COLUMNS = {"hostname": "hostname", "os": "os", "arch": "arch",
                    "version": "agent_version"}


@pytest.mark.parametrize("field,column", sorted(REGISTER_COLUMNS.items()))
def test_register_text_is_no_longer_than_its_column(field, column):
    kind, length = COLUMNS[models.Agent._meta.table_name][column]
    assert protocol.REGISTER["properties"][field]["maxLength"] <= length, (field, kind, length)


def test_boot_time_at_its_maximum_is_a_storable_time():
    moment = api._boot_time(protocol.REGISTER["properties"]["bootTime"]["maximum"])
    assert sql_columns.refusal("TIMESTAMP", None, moment) is None


def test_server_id_fits_the_servers_id_column():
    kind, _ = COLUMNS[models.Server._meta.table_name]["id"]
    assert protocol.SERVER_ID["maximum"] <= sql_columns.largest(kind)


def test_the_walk_covers_every_stored_column():
    """A column filled from the sample but not reached by the walk would go unchecked."""
    reached = set()
    for _, path, _, value in METRIC_LEAVES:
        row = ingest.sample_row(with_leaf(protocol.METRICS, path, value))
        reached.update(column for column, stored in row.items() if stored is not None)
    numeric = {column for column, (kind, _) in COLUMNS["server_metrics"].items()
                if kind in ("INTEGER", "BIGINT", "REAL")}
    assert numeric - {"agent_id"} <= reached
