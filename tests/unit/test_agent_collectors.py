"""Collector contracts (keys and types) on this machine, checked against psutil and the OS, and
the pure arithmetic behind CPU shares and rates."""
import os
import time

import psutil
import pytest

import agent
from panel import protocol
from panel.validation import validate
from tests.conftest import stop_process

SECTIONS = protocol.METRICS["properties"]
# System collectors of hardware this machine may lack: absent here, not failing. (Their parsers
# are tested on captured output: tests/unit/test_sensors.py.)
ABSENT_HERE = set() if getattr(psutil, "sensors_temperatures", lambda: {})() else {"sensors"}


@pytest.fixture(scope="module")
def collected():
    ctx = agent.CollectorContext()
    agent.run_collectors(agent.system_collectors(), ctx)  # first: counters to compare with
    time.sleep(0.3)
    metrics, unavailable = agent.run_collectors(agent.system_collectors(), ctx)
    return metrics, unavailable


def test_every_shipped_collector_runs_unconfigured():
    assert set(agent.expand_collectors(agent.Config().enabled_collectors)) == set(agent.COLLECTORS)
    assert agent.default_collectors() == agent.system_collectors() + ("services",)


def test_a_collector_registered_off_by_default_runs_only_when_named(monkeypatch):
    """The `default` flag is what decides, for system and service collectors alike."""
    monkeypatch.setitem(agent.COLLECTORS, "gpu", agent.CollectorSpec("gpu", None, False,
                                                                     "system"))
    monkeypatch.setitem(agent.COLLECTORS, "memcached", agent.CollectorSpec(
        "memcached", None, False, "services"))
    unconfigured = agent.expand_collectors(agent.Config().enabled_collectors)
    assert "gpu" not in unconfigured and "memcached" not in unconfigured
    assert "memcached" not in agent.expand_collectors(["services"])
    assert agent.expand_collectors(["cpu", "gpu", "memcached"]) == ("cpu", "gpu", "memcached")
    assert agent.Config(url="https://x", api_key="agent_x",
                        enabled_collectors=("gpu", "memcached")).problems() == []


def test_a_collector_registered_after_import_is_on_by_default(monkeypatch, tmp_path):
    """What a plugin (or the wrapper in test_new_collector.py) relies on: no second list."""
    monkeypatch.setitem(agent.COLLECTORS, "gpu", agent.CollectorSpec("gpu", None, True,
                                                                     "system"))
    assert "gpu" in agent.Config().enabled_collectors
    (tmp_path / "config.json").write_text('{"agent": {"reportInterval": 60}}')
    assert "gpu" in agent.load_config(str(tmp_path / "config.json"), env={}).enabled_collectors
    assert agent.Config(url="https://x", api_key="agent_x",
                        enabled_collectors=("gpu",)).problems() == []


def test_services_stands_for_every_service_collector():
    assert agent.expand_collectors(["cpu", "services"]) == ("cpu",) + agent.service_names()
    assert set(agent.service_names()) == {"postgresql", "mysql", "nginx", "apache",
                                          "certificates", "redis", "docker", "mailqueue",
                                          "watched", "systemd", "phpfpm"}
    assert agent.expand_collectors(["redis", "nope"]) == ("redis",)


def test_every_system_collector_succeeds_here(collected):
    metrics, unavailable = collected
    assert unavailable == {}
    assert set(metrics) == set(agent.system_collectors()) - ABSENT_HERE


# What this machine lacks is validated on captured output instead (test_sensors.py), so CI
# never skips here.
@pytest.mark.parametrize("name", [name for name in agent.system_collectors()
                                  if name not in ABSENT_HERE])
def test_collector_output_matches_the_wire_schema(collected, name):
    validate(SECTIONS[name], collected[0][name], f"metrics.{name}")


def test_cpu_contract(collected):
    cpu = collected[0]["cpu"]
    assert set(cpu) == {"usage", "iowait", "steal", "load1", "load5", "load15", "count"}
    assert 0 <= cpu["usage"] <= 100 and 0 <= cpu["iowait"] <= 100
    assert cpu["count"] == psutil.cpu_count()
    assert abs(cpu["load15"] - os.getloadavg()[2]) < 1.0


def test_memory_matches_psutil(collected):
    memory = collected[0]["memory"]
    assert set(memory) == {"total", "used", "free", "available", "cached", "swapTotal",
                           "swapUsed"}
    assert memory["total"] == psutil.virtual_memory().total
    assert memory["swapTotal"] == psutil.swap_memory().total
    assert all(isinstance(v, int) for v in memory.values())


def test_disk_lists_real_filesystems_only(collected):
    mounts = collected[0]["disk"]["mounts"]
    assert mounts, "this machine has at least one real filesystem"
    for mount in mounts:
        assert mount["fstype"] not in agent.PSEUDO_FILESYSTEMS
        assert mount["total"] == psutil.disk_usage(mount["mountpoint"]).total


def test_disk_io_has_rates_for_whole_devices_only(collected):
    io = collected[0]["disk"]["io"]
    devices = set(psutil.disk_io_counters(perdisk=True))
    for entry in io:
        assert entry["device"] in devices
        assert not agent.IGNORED_BLOCK_DEVICES.match(entry["device"])
        assert entry["readBytesPerSec"] >= 0 and entry["writeOpsPerSec"] >= 0


def test_ignored_block_devices_are_partitions_loops_and_ram_disks():
    for name in ("loop0", "ram1", "zram0", "sda1", "vda2", "xvda1", "nvme0n1p1", "mmcblk0p1"):
        assert agent.IGNORED_BLOCK_DEVICES.match(name), name
    for name in ("sda", "vda", "nvme0n1", "dm-0", "md0", "mmcblk0"):
        assert not agent.IGNORED_BLOCK_DEVICES.match(name), name


def test_network_leaves_out_loopback_and_silent_interfaces_and_has_rates_later(collected):
    interfaces = collected[0]["network"]["interfaces"]
    names = {i["interface"] for i in interfaces}
    counters = psutil.net_io_counters(pernic=True)
    carried = {name for name, c in counters.items() if c.packets_sent or c.packets_recv}
    assert carried - {"lo"} <= names <= set(counters) - {"lo"}
    assert all(i["packetsSent"] or i["packetsRecv"] for i in interfaces)
    for entry in interfaces:
        for field in ("bytesSentPerSec", "bytesRecvPerSec", "packetsSentPerSec",
                      "errorsInPerSec", "dropsOutPerSec"):
            assert entry[field] >= 0


def test_processes_counts_and_top_lists(collected):
    processes = collected[0]["processes"]
    assert abs(processes["total"] - len(psutil.pids())) <= 10
    assert processes["running"] >= 1  # at least this test
    assert 1 <= len(processes["topMemory"]) <= agent.TOP_N
    rss = [p["rss"] for p in processes["topMemory"]]
    assert rss == sorted(rss, reverse=True)
    assert len(processes["topCpu"]) <= agent.TOP_N
    cpu = [p["cpuPercent"] for p in processes["topCpu"]]
    assert cpu == sorted(cpu, reverse=True)


def test_processes_never_carry_command_lines(collected):
    for entry in collected[0]["processes"]["topMemory"] + collected[0]["processes"]["topCpu"]:
        assert set(entry) <= {"pid", "name", "user", "cpuPercent", "rss"}
        assert " " not in entry["name"] or psutil.Process(entry["pid"]).name() == entry["name"]


def test_a_busy_process_is_listed_with_the_share_psutil_measures(monkeypatch):
    """This process burns CPU between two scans; its figure is checked against psutil's own
    reading of this process around those scans. Every busy process is listed (TOP_N raised), so
    what other processes on a shared machine do cannot change the outcome."""
    monkeypatch.setattr(agent, "TOP_N", 100_000)
    me = psutil.Process()

    def cpu_seconds():
        times = me.cpu_times()
        return times.user + times.system, time.monotonic()

    ctx = agent.CollectorContext()
    before_first = cpu_seconds()
    agent.collect_processes(ctx)
    after_first = cpu_seconds()
    deadline = time.monotonic() + 10
    # Burn until this process has had 0.3 s of CPU (however busy the machine is), bounded.
    while cpu_seconds()[0] - after_first[0] < 0.3 and time.monotonic() < deadline:
        pass
    before_second = cpu_seconds()
    top = agent.collect_processes(ctx)["topCpu"]
    after_second = cpu_seconds()
    mine = [p for p in top if p["pid"] == os.getpid()]
    assert len(mine) == 1, top
    # The collector read this process's times somewhere inside each scan: its share lies
    # between the least and the most CPU that can have passed over the longest and shortest
    # span (plus a clock tick of CPU time either way, and its rounding to 0.1).
    tick = 0.02
    lowest = 100 * (before_second[0] - after_first[0] - tick) / \
        (after_second[1] - before_first[1])
    highest = 100 * (after_second[0] - before_first[0] + tick) / \
        (before_second[1] - after_first[1])
    assert lowest > 0, "the bounds are not vacuous: this process did burn CPU"
    assert lowest - 0.1 <= mine[0]["cpuPercent"] <= highest + 0.1


def test_a_failing_collector_is_reported_and_the_others_still_run(monkeypatch):
    def broken(ctx):
        raise PermissionError("denied")

    ctx = agent.CollectorContext()
    with monkeypatch.context() as patch:
        patch.setitem(agent.COLLECTORS, "memory", agent.CollectorSpec("memory", broken, True,
                                                                      "system"))
        metrics, unavailable = agent.run_collectors(("cpu", "memory", "disk"), ctx)
    assert "memory" not in metrics
    assert unavailable == {"memory": "PermissionError: denied"}
    assert "cpu" in metrics and "disk" in metrics
    # A failure disables nothing: once the collector works again, the next sample has it.
    metrics, unavailable = agent.run_collectors(("cpu", "memory", "disk"), ctx)
    assert unavailable == {}
    assert metrics["memory"]["total"] == psutil.virtual_memory().total


def test_a_failing_collector_is_logged_once_and_its_recovery_once(monkeypatch, caplog):
    calls = {"n": 0}

    def flaky(ctx):
        calls["n"] += 1
        if calls["n"] <= 3:
            raise TimeoutError("slow")
        return {"ok": 1}

    monkeypatch.setitem(agent.COLLECTORS, "flaky", agent.CollectorSpec("flaky", flaky, True,
                                                                       "services"))
    ctx = agent.CollectorContext()
    with caplog.at_level("WARNING", logger="mpanel-agent"):
        for _ in range(5):
            agent.run_collectors(("flaky",), ctx)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("collector failed name=flaky" in m for m in messages) == 1
    assert sum("collector recovered name=flaky" in m for m in messages) == 1


def test_an_absent_service_is_left_out_silently_and_not_probed_every_cycle(monkeypatch):
    calls = {"n": 0}

    def absent(ctx):
        calls["n"] += 1
        raise agent.ServiceAbsent("not here")

    monkeypatch.setitem(agent.COLLECTORS, "ghost", agent.CollectorSpec("ghost", absent, True,
                                                                       "services"))
    ctx = agent.CollectorContext()
    for _ in range(3):
        metrics, unavailable = agent.run_collectors(("ghost",), ctx)
        assert metrics == {} and unavailable == {}
    assert calls["n"] == 1


# ----- CPU shares and rates from cumulative counters (pure) ---------------------------------

def reading(busy, total, boot=1000.0, iowait=0.0, steal=0.0):
    return {"bootTime": boot, "busy": busy, "total": total, "iowait": iowait, "steal": steal}


def test_cpu_shares_are_parts_of_elapsed_time():
    shares = agent.CpuTimes.shares_between(reading(10, 100, iowait=5, steal=1),
                                           reading(35, 200, iowait=15, steal=3))
    assert shares == {"usage": 25.0, "iowait": 10.0, "steal": 2.0}


def test_no_previous_reading_gives_no_value():
    assert agent.CpuTimes.shares_between(None, reading(35, 200)) is None


def test_reading_from_before_a_reboot_is_discarded():
    assert agent.CpuTimes.shares_between(reading(10, 100, boot=1000),
                                         reading(11, 120, boot=5000)) is None


def test_cpu_counters_going_backwards_give_no_value_rather_than_a_spike():
    assert agent.CpuTimes.shares_between(reading(500, 1000), reading(10, 100)) is None
    assert agent.CpuTimes.shares_between(reading(10, 100), reading(10, 100)) is None


def test_restored_cpu_reading_gives_a_real_first_value_without_waiting(monkeypatch):
    """What --once relies on: a reading saved by the previous run is used, no priming wait."""
    times = agent.CpuTimes(agent.CpuTimes.read())
    busy_until = time.monotonic() + 0.3  # let the kernel's tick counters move
    while time.monotonic() < busy_until:
        pass

    def no_sleeping(seconds):
        raise AssertionError("sample() primed although a previous reading was restored")

    monkeypatch.setattr(agent.time, "sleep", no_sleeping)
    assert 0 < times.sample()["usage"] <= 100


def test_rate_is_delta_over_elapsed_time():
    rates = agent.Rates(boot_time=1000)
    assert rates.per_second("eth0", 1000, now=10.0) is None  # first reading: no rate
    rates.end_cycle()
    assert rates.per_second("eth0", 3000, now=20.0) == 200.0


def test_counter_reset_gives_no_rate_then_recovers():
    rates = agent.Rates(boot_time=1000)
    rates.per_second("eth0", 5_000_000, now=10.0)
    rates.end_cycle()
    assert rates.per_second("eth0", 100, now=20.0) is None  # interface re-created
    rates.end_cycle()
    assert rates.per_second("eth0", 600, now=30.0) == 50.0


def test_rates_survive_a_restart_through_the_state_file():
    rates = agent.Rates(boot_time=1000)
    rates.per_second("eth0", 1000, now=10.0)
    rates.end_cycle()
    restored = agent.Rates(rates.to_json(), boot_time=1000)
    assert restored.per_second("eth0", 2000, now=20.0) == 100.0


def test_saved_rates_from_before_a_reboot_are_ignored():
    rates = agent.Rates(boot_time=1000)
    rates.per_second("eth0", 9_999_999, now=10.0)
    rates.end_cycle()
    after_reboot = agent.Rates(rates.to_json(), boot_time=9000)
    assert after_reboot.per_second("eth0", 10, now=20.0) is None


def test_counters_that_vanish_are_forgotten():
    rates = agent.Rates(boot_time=1000)
    rates.per_second("veth1", 1, now=1.0)
    rates.end_cycle()
    rates.end_cycle()
    assert rates.previous == {}


def test_processes_and_watched_share_one_walk_per_collection(monkeypatch):
    """Both need every process (issue 12's footprint): one walk of /proc serves the two within
    a collection, and the next collection walks afresh. The walk is the real one, counted."""
    walks = []
    walk = "_proc_stat_table" if agent.LINUX else "_psutil_table"
    real = getattr(agent, walk)

    def counted():
        walks.append(1)
        return real()

    monkeypatch.setattr(agent, walk, counted)
    me = psutil.Process().name()
    ctx = agent.CollectorContext(services={"watched": {"names": [me, "mpanel-not-running"]}})
    metrics, unavailable = agent.run_collectors(("processes", "watched"), ctx)
    assert not unavailable and len(walks) == 1
    watched = {p["name"]: p for p in metrics["services"]["watched"]["processes"]}
    assert watched[me]["count"] >= 1 and watched[me]["rss"] > 0
    assert watched["mpanel-not-running"]["count"] == 0
    assert metrics["processes"]["total"] >= watched[me]["count"]
    agent.run_collectors(("processes", "watched"), ctx)
    assert len(walks) == 2
    assert ctx.cycle is None  # nothing of a collection is held between them


def test_the_process_table_reads_what_psutil_reads(tmp_path):
    """One read of /proc/<pid>/stat per process gives psutil's figures (issue 12's footprint):
    the same pids, names (a name the kernel cut at 15 characters completed from the command
    line, as psutil does), start times, resident memory and CPU seconds. A sleeper under a long
    name is among them; figures that move are compared for processes that are not running."""
    import shutil
    import subprocess

    long_name = tmp_path / "mpanel-a-long-sleeper-name"
    shutil.copy(shutil.which("sleep"), long_name)
    sleeper = subprocess.Popen([str(long_name), "300"])
    try:
        table = {row["pid"]: row for row in agent.process_table(agent.CollectorContext())}
        assert table[sleeper.pid]["name"] == "mpanel-a-long-sleeper-name"
        assert table[os.getpid()]["running"] is True
        compared = 0
        processes = list(psutil.process_iter(["name", "status", "create_time", "memory_info",
                                              "cpu_times"]))
        # Read again after psutil: a process whose memory moved between the two agent reads
        # (one just starting, on a busy machine) is not one the two can be compared on.
        again = {row["pid"]: row for row in agent.process_table(agent.CollectorContext())}
        for proc in processes:
            row = table.get(proc.pid)
            if row is None or proc.info["status"] != psutil.STATUS_SLEEPING or \
                    (again.get(proc.pid) or {}).get("rss") != row["rss"]:
                continue  # started after the table, or moving
            assert row["name"] == proc.info["name"]
            assert row["started"] == proc.info["create_time"]
            assert abs(row["rss"] - proc.info["memory_info"].rss) <= 1 << 20
            assert 0 <= sum(proc.info["cpu_times"][:2]) - row["cpu"] < 1
            compared += 1
        assert compared >= 1 and sleeper.pid in table
    finally:
        stop_process(sleeper)
