"""Boundary values over real HTTP to a real panel, on SQLite and on real PostgreSQL: the largest
value a column holds is stored, one more is a 422 naming the field, never a 503 "retry" that
would block the agent's buffer behind a sample the panel can never store. The limits come from
sql/schema.sql, the DDL PostgreSQL runs."""
import pytest

from panel import models
from tests import sql_columns
from tests.conftest import new_server, stamp
from tests.integration.test_api import metric_count, post, sample

COLUMNS = sql_columns.columns()


@pytest.fixture
def server(panel):
    return new_server("edge-1")


def _largest(table, column):
    return sql_columns.largest(*COLUMNS[table][column])


# wire field of a sample -> the server_metrics column it lands in, alone
SAMPLE_FIELDS = [
    (("processes", "total"), "process_count"),
    (("memory", "total"), "memory_total"),
    (("memory", "swapUsed"), "swap_used"),
]


@pytest.mark.parametrize("path,column", SAMPLE_FIELDS, ids=[c for _, c in SAMPLE_FIELDS])
def test_the_largest_storable_count_stores_and_one_more_is_422(panel, server, path, column):
    srv, key = server
    largest = _largest("server_metrics", column)
    document = sample(srv.id)
    section, name = path
    document["metrics"][section][name] = largest
    response = post(panel, "/api/agent/metrics", key, document)
    assert response.status == 200, response.text
    assert getattr(models.Metric.get(), column) == largest

    document = sample(srv.id)  # a new timestamp, so it is not a duplicate
    document["metrics"][section][name] = largest + 1
    response = post(panel, "/api/agent/metrics", key, document)
    assert response.status == 422, response.text
    assert response.json()["field"] == f"metrics.{section}.{name}"
    assert metric_count() == 1


REGISTER_FIELDS = [("hostname", "hostname"), ("os", "os"), ("arch", "arch"),
                   ("version", "agent_version")]


@pytest.mark.parametrize("field,column", REGISTER_FIELDS, ids=[f for f, _ in REGISTER_FIELDS])
def test_the_longest_storable_text_registers_and_one_more_is_422(panel, server, field, column):
    srv, key = server
    longest = _largest("servers_agents", column)
    document = {"hostname": "edge-1", "os": "Linux", "arch": "x86_64", "version": "0.1.0"}
    # Non-ASCII: VARCHAR(n) counts characters, not bytes.
    response = post(panel, "/api/agent/register", key, dict(document, **{field: "é" * longest}))
    assert response.status == 200, response.text
    assert getattr(models.Agent.get(models.Agent.server == srv.id), column) == "é" * longest

    response = post(panel, "/api/agent/register", key,
                    dict(document, **{field: "é" * (longest + 1)}))
    assert response.status == 422, response.text
    assert response.json()["field"] == field


def test_a_figure_too_small_for_real_is_stored_as_zero(panel, server):
    """1e-50 is schema-valid (minimum 0); PostgreSQL's REAL refuses it as out of range."""
    srv, key = server
    document = sample(srv.id)
    document["metrics"]["cpu"]["usage"] = 1e-50
    document["metrics"]["disk"]["io"][0]["readBytesPerSec"] = 5e-324
    response = post(panel, "/api/agent/metrics", key, document)
    assert response.status == 200, response.text
    row = models.Metric.get()
    assert (row.cpu_usage, row.disk_read_rate) == (0.0, 0.0)


def test_counters_summing_past_bigint_store_the_sample_without_the_sum(panel, server):
    srv, key = server
    largest = _largest("server_metrics", "network_tx_bytes")
    document = sample(srv.id)
    document["metrics"]["network"]["interfaces"] = [
        {"interface": f"eth{i}", "bytesSent": largest, "bytesRecv": 10} for i in range(2)]
    response = post(panel, "/api/agent/metrics", key, document)
    assert response.status == 200, response.text
    row = models.Metric.get()
    assert (row.network_tx_bytes, row.network_rx_bytes) == (None, 20)
    assert [i["bytesSent"] for i in row.interfaces] == [largest, largest]


def test_an_alert_threshold_too_small_for_real_is_stored_as_zero(database):
    """The same mistake elsewhere: the rules page and CLI take a threshold of 0 to 1,000,000,
    and 1e-50 is in range, but PostgreSQL's REAL column refuses it."""
    from panel import operations

    operations.set_rule("cpu", 1e-50, 5)
    assert models.AlertRule.get(models.AlertRule.metric == "cpu").threshold == 0.0


@pytest.fixture
def narrowed_postgresql(postgresql_url, tmp_path):
    """A scratch PostgreSQL database whose process_count is a SMALLINT: the wire schema's bound
    (INTEGER's) is then looser than the column, as after a careless schema change."""
    import secrets
    import urllib.parse

    from panel import db as panel_db
    from tests.conftest import _pg_admin_connection

    name = f"mpanel_narrowed_{secrets.token_hex(3)}"
    admin = _pg_admin_connection(postgresql_url)
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    url = urllib.parse.urlunsplit(urllib.parse.urlsplit(postgresql_url)._replace(path="/" + name))
    try:
        database = panel_db.open_database(url)
        panel_db.init_schema(database)
        database.execute_sql("ALTER TABLE server_metrics ALTER COLUMN process_count TYPE smallint")
        database.close()
        yield url
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_a_sample_the_database_refuses_is_422_not_an_endless_503(narrowed_postgresql, tmp_path):
    """The last line of defence: should a bound ever drift from its column again, the sample
    the database can never store is refused for good (the agent drops it), not 'retry'."""
    from panel import db as panel_db
    from tests.conftest import start_panel, stop_panel

    bound = panel_db.bind(narrowed_postgresql)
    server, key = new_server("narrow-1")
    panel = start_panel(narrowed_postgresql, tmp_path / "panel.log")
    try:
        document = sample(server.id)
        document["metrics"]["processes"]["total"] = 40_000  # past SMALLINT
        response = post(panel, "/api/agent/metrics", key, document)
        assert response.status == 422, response.text
        assert "cannot store" in response.json()["error"]
        assert models.Metric.select().count() == 0
        document = sample(server.id, stamp(5))
        assert post(panel, "/api/agent/metrics", key, document).status == 200
        assert models.Metric.select().count() == 1
    finally:
        stop_panel(panel)
        bound.close()
