"""Collector contracts (keys and types) on this machine, checked against psutil, and the pure
CPU-usage arithmetic."""
import psutil
import pytest

import agent
from panel import protocol
from panel.validation import validate

SECTIONS = protocol.METRICS_BODY["properties"]["metrics"]["properties"]


@pytest.fixture(scope="module")
def collected():
    metrics, status = agent.run_collectors(agent.DEFAULT_COLLECTORS, agent.CollectorState())
    return metrics, status


def test_every_default_collector_is_registered_and_on_by_default():
    for name in agent.DEFAULT_COLLECTORS:
        assert agent.COLLECTORS[name].default is True


def test_every_collector_succeeds_here_and_is_timed(collected):
    metrics, status = collected
    for name in agent.DEFAULT_COLLECTORS:
        assert status[name]["ok"], status[name]
        assert status[name]["ms"] >= 0


@pytest.mark.parametrize("name", agent.DEFAULT_COLLECTORS)
def test_collector_output_matches_the_wire_schema(collected, name):
    validate(SECTIONS[name], collected[0][name], f"metrics.{name}")


def test_cpu_contract(collected):
    cpu = collected[0]["cpu"]
    assert set(cpu) == {"usage", "load1", "load5", "load15", "count"}
    assert 0 <= cpu["usage"] <= 100
    assert cpu["count"] == psutil.cpu_count()
    assert all(isinstance(cpu[k], float) for k in ("usage", "load1", "load5", "load15"))


def test_memory_matches_psutil(collected):
    memory = collected[0]["memory"]
    assert set(memory) == {"total", "used", "free", "available", "cached"}
    assert memory["total"] == psutil.virtual_memory().total
    assert all(isinstance(v, int) for v in memory.values())


def test_disk_lists_real_filesystems_only(collected):
    disks = collected[0]["disk"]
    assert disks, "this machine has at least one real filesystem"
    for disk in disks:
        assert disk["fstype"] not in agent.PSEUDO_FILESYSTEMS
        assert disk["total"] == psutil.disk_usage(disk["mountpoint"]).total
        assert set(disk) == {"mountpoint", "device", "fstype", "total", "used", "free", "percent"}


def test_network_leaves_out_loopback_and_counts_bytes(collected):
    interfaces = collected[0]["network"]
    names = {i["interface"] for i in interfaces}
    assert "lo" not in names
    assert names == set(psutil.net_io_counters(pernic=True)) - {"lo"}
    for entry in interfaces:
        assert entry["bytesRecv"] >= 0 and isinstance(entry["bytesSent"], int)


def test_a_failing_collector_is_reported_and_the_others_still_run(monkeypatch):
    def broken(state):
        raise PermissionError("denied")

    monkeypatch.setitem(agent.COLLECTORS, "memory", broken)
    metrics, status = agent.run_collectors(("cpu", "memory", "disk"), agent.CollectorState())
    assert "memory" not in metrics
    assert status["memory"]["ok"] is False and "PermissionError" in status["memory"]["error"]
    assert "cpu" in metrics and "disk" in metrics


# ----- CPU usage from cumulative counters (pure) ----------------------------------------------

def reading(busy, total, boot=1000.0):
    return {"bootTime": boot, "busy": busy, "total": total}


def test_cpu_percent_is_busy_share_of_elapsed_time():
    assert agent.CpuUsage.percent_between(reading(10, 100), reading(35, 200)) == 25.0


def test_no_previous_reading_gives_no_value():
    assert agent.CpuUsage.percent_between(None, reading(35, 200)) is None


def test_reading_from_before_a_reboot_is_discarded():
    assert agent.CpuUsage.percent_between(reading(10, 100, boot=1000),
                                          reading(11, 120, boot=5000)) is None


def test_counters_going_backwards_give_no_value_rather_than_a_spike():
    assert agent.CpuUsage.percent_between(reading(500, 1000), reading(10, 100)) is None
    assert agent.CpuUsage.percent_between(reading(10, 100), reading(10, 100)) is None


def test_restored_reading_gives_a_real_first_value_without_waiting(monkeypatch):
    """What --once relies on: a reading saved by the previous run is used, no priming wait."""
    usage = agent.CpuUsage(agent.CpuUsage.read())
    busy_until = agent.time.monotonic() + 0.3  # let the kernel's tick counters move
    while agent.time.monotonic() < busy_until:
        pass

    def no_sleeping(seconds):
        raise AssertionError("sample() primed although a previous reading was restored")

    monkeypatch.setattr(agent.time, "sleep", no_sleeping)
    assert 0 < usage.sample() <= 100
