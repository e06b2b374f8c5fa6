"""The panel steers the real agent without a restart: the interval it announces, the
collectors it allows (narrowing, never widening the agent's own list), and heartbeats when the
interval is longer than a minute."""
import pytest

from panel import models
from tests.conftest import (new_server, start_agent, start_panel, stop_panel, stop_process,
                            wait_for, write_agent_config)


@pytest.fixture
def steered_panel(backend_url, database, tmp_path, request):
    panel = start_panel(backend_url, tmp_path / "panel.log", request.param)
    yield panel
    stop_panel(panel)


@pytest.mark.parametrize("steered_panel", [{"MPANEL_METRICS_ENABLED": "cpu,memory,disk",
                                             "MPANEL_REPORT_INTERVAL": "1"}],
                         indirect=True)
def test_panel_narrows_the_collectors(steered_panel, tmp_path):
    _, key = new_server("narrow")
    config = write_agent_config(tmp_path, steered_panel.url, key, interval=1,
                                enabledCollectors=["cpu", "memory", "network", "processes"])
    process = start_agent(config)
    try:
        assert wait_for(lambda: models.Metric.select().count() >= 2, timeout=20)
    finally:
        stop_process(process)
    newest = models.Metric.select().order_by(models.Metric.timestamp.desc()).first()
    assert newest.cpu_usage is not None and newest.memory_total is not None
    assert newest.interfaces is None and newest.processes is None  # the panel said no
    assert newest.disks is None  # the agent's own config said no: the panel cannot widen


@pytest.mark.parametrize("steered_panel", [{"MPANEL_REPORT_INTERVAL": "600"}], indirect=True)
def test_long_interval_from_the_panel_brings_heartbeats(steered_panel, tmp_path):
    _, key = new_server("quiet")
    config = write_agent_config(tmp_path, steered_panel.url, key, interval=1,
                                heartbeatInterval=1)
    process = start_agent(config)
    try:
        assert wait_for(lambda: models.Metric.select().count() >= 1, timeout=20)
        first_seen = models.Agent.get().last_seen
        # Heartbeats move last_seen on by 2 s: the period in which no second sample may come.
        wait_for(lambda: (models.Agent.get().last_seen - first_seen).total_seconds() >= 2,
                 timeout=20)
        later_seen = models.Agent.get().last_seen
    finally:
        stop_process(process)
    assert models.Metric.select().count() == 1  # the panel's 600 s replaced the agent's 1 s
    assert (later_seen - first_seen).total_seconds() >= 2  # heartbeats kept it fresh
