"""The schema: sql/schema.sql (what PostgreSQL runs) and the Peewee models (what SQLite gets)
describe the same tables, and init-db can run any number of times without losing data."""
import os
import subprocess
import sys

import peewee

from panel import db, migrations, models
from tests.conftest import ROOT, new_server


def model_columns(model):
    return {field.column_name: field.null for field in model._meta.sorted_fields}


def test_every_table_has_exactly_the_models_columns(database):
    """Introspect the real database (built from schema.sql on PostgreSQL, from the models on
    SQLite) and compare with the models, column by column, nullability included."""
    for model in models.ALL_MODELS:
        table = model._meta.table_name
        columns = {c.name: c.null for c in database.get_columns(table)}
        expected = model_columns(model)
        assert set(columns) == set(expected), table
        for name, null in expected.items():
            if name != model._meta.primary_key.column_name:
                assert columns[name] == null, f"{table}.{name} nullability differs"


def test_a_sample_is_keyed_by_agent_and_timestamp(database):
    assert database.get_primary_keys("server_metrics") == ["agent_id", "timestamp"]


def test_seed_design_column_names_are_kept(database):
    seed = {
        "servers_agents": ["id", "server_id", "hostname", "ip_address", "os", "arch",
                           "agent_version", "api_key_hash", "status", "last_seen", "created_at",
                           "updated_at"],
        # server_metrics drops the seed's id: (agent_id, timestamp) is its key (schema.sql).
        "server_metrics": ["agent_id", "timestamp", "cpu_usage", "cpu_load_1min",
                           "cpu_load_5min", "cpu_load_15min", "memory_total", "memory_used",
                           "memory_free", "memory_cached", "disk_total", "disk_used", "disk_free",
                           "network_rx_bytes", "network_tx_bytes", "created_at"],
    }
    for table, columns in seed.items():
        present = {c.name for c in database.get_columns(table)}
        assert set(columns) <= present, table


def test_init_db_twice_keeps_data(database, backend_url):
    server, _ = new_server("keep-me")
    env = dict(os.environ, MPANEL_DATABASE_URL=backend_url)
    for _ in range(2):
        result = subprocess.run([sys.executable, "-m", "panel", "init-db"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert f"schema version {migrations.latest()} ready" in result.stdout
    assert models.Server.get_by_id(server.id).name == "keep-me"
    assert models.SchemaVersion.select().count() == 1


def test_deleting_a_server_takes_its_agent_and_samples_with_it(database):
    server, _ = new_server("gone")
    agent = models.Agent.get(models.Agent.server == server.id)
    models.Metric.insert(agent=agent.id, timestamp=db.utcnow()).execute()
    server.delete_instance()
    assert models.Agent.select().count() == 0
    assert models.Metric.select().count() == 0


def test_a_sample_cannot_exist_without_its_agent(database):
    try:
        with database.atomic():
            models.Metric.insert(agent=999_999, timestamp=db.utcnow()).execute()
    except peewee.IntegrityError:
        return
    raise AssertionError("foreign key not enforced")
