"""`agent.py --once` twice in a row, as cron runs it: the second run's CPU % and network rates
are real — computed from counters the first run left in the state file — not 0 and not a
spike. Traffic goes over a veth pair into a network namespace the test creates, so it crosses
a real interface (loopback is left out by the agent)."""
import os
import shutil
import socket
import subprocess
import sys
import time

import psutil
import pytest

from panel import models
from tests.conftest import IN_CI, ROOT, new_server, require, write_agent_config

NETNS = f"mpanel-test-{os.getpid()}"
HOST_IF, PEER_IF = f"mpv{os.getpid() % 10000}a", f"mpv{os.getpid() % 10000}b"
HOST_IP, PEER_IP = "169.254.77.1", "169.254.77.2"  # link-local, on our own veth pair only


def ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


@pytest.fixture
def veth_peer():
    """A veth pair: HOST_IF here, PEER_IF inside a namespace of our own with PEER_IP."""
    can = shutil.which("ip") and os.geteuid() == 0 and ip("netns", "add", NETNS).returncode == 0
    require("a network namespace", can, "needs root and iproute2 (.ci/run installs it)")
    try:
        for command in (("link", "add", HOST_IF, "type", "veth", "peer", "name", PEER_IF,
                         "netns", NETNS),
                        ("addr", "add", f"{HOST_IP}/30", "dev", HOST_IF),
                        ("link", "set", HOST_IF, "up"),
                        ("-n", NETNS, "addr", "add", f"{PEER_IP}/30", "dev", PEER_IF),
                        ("-n", NETNS, "link", "set", PEER_IF, "up")):
            result = ip(*command)
            assert result.returncode == 0, result.stderr
        yield HOST_IF
    finally:
        ip("link", "del", HOST_IF)
        ip("netns", "del", NETNS)


def send_udp(megabytes, seconds):
    """Send about `megabytes` of UDP to the namespace's address over `seconds`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"x" * 1400
    count = int(megabytes * 1_000_000 / len(payload))
    for index in range(count):
        sock.sendto(payload, (PEER_IP, 9))
        if index % 100 == 0:
            time.sleep(seconds / (count / 100))
    sock.close()


def burn_one_core(seconds):
    return subprocess.Popen([sys.executable, "-c",
                             f"import time\nend = time.monotonic() + {seconds}\n"
                             "while time.monotonic() < end: pass"])


def once(config, path_first=None, wrapper=()):
    """agent.py --once as cron runs it; `path_first`: a folder put first on its PATH (a stand-in
    program), `wrapper`: a command it runs under (e.g. unshare)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPANEL_")}
    if path_first:
        env["PATH"] = f"{path_first}{os.pathsep}{env.get('PATH', os.defpath)}"
    return subprocess.run([*wrapper, sys.executable, str(ROOT / "agent.py"), "--config",
                           str(config), "--once"], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.timeout(120)
def test_two_once_runs_store_real_cpu_and_network_rates(panel, tmp_path, veth_peer):
    _, key = new_server("cron-box")
    config = write_agent_config(tmp_path, panel.url, key, enabledCollectors=["cpu", "network"])
    assert once(config).returncode == 0

    psutil.cpu_percent(interval=None)  # start psutil's own measurement of the same span
    burner = burn_one_core(3.0)
    send_udp(megabytes=2, seconds=2.5)
    burner.wait()
    expected = psutil.cpu_percent(interval=None)
    result = once(config)
    assert result.returncode == 0, result.stderr

    first, second = models.Metric.select().order_by(models.Metric.timestamp)
    tolerance = 20 if IN_CI else 15  # machines here are shared: another job may be busy
    assert abs(second.cpu_usage - expected) <= tolerance, (second.cpu_usage, expected)
    assert second.cpu_usage >= 100 / psutil.cpu_count() * 0.6  # one busy core shows
    veth = next(i for i in second.interfaces if i["interface"] == veth_peer)
    assert veth["bytesSentPerSec"] > 100_000, veth   # ~2 MB over ~3.5 s
    assert veth["packetsSentPerSec"] > 50
    # REAL columns keep about 7 significant digits
    assert second.network_tx_rate >= veth["bytesSentPerSec"] * (1 - 1e-6)
    assert "bytesSentPerSec" not in next(
        i for i in first.interfaces if i["interface"] == veth_peer)  # first run: no rate yet
