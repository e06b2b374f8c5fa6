"""The Prometheus text exposition as a pure function, read back with prometheus_client's own
parser: escaping of hostile label values, HELP and TYPE once per family, units, NULLs, and which
servers get their sample figures."""
import datetime
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from panel import prometheus

NOW = datetime.datetime(2026, 11, 30, 12, 0)
NOW_EPOCH = NOW.replace(tzinfo=datetime.timezone.utc).timestamp()
GIB = 1 << 30
HOSTILE = 'a"b\\c\nd'


def row(**values):
    """One scrape row (SCRAPE_COLUMNS), for a server heard from 30 s ago unless told."""
    base = {"server_id": 1, "name": "web-1", "hostname": "web-1.example.com",
            "agent_status": "active", "agent_version": "0.2.0",
            "last_seen": NOW - datetime.timedelta(seconds=30),
            "sample_time": NOW - datetime.timedelta(seconds=40)}
    base.update(values)
    unknown = set(base) - set(prometheus.SCRAPE_COLUMNS)
    assert not unknown, unknown
    return tuple(base.get(column) for column in prometheus.SCRAPE_COLUMNS)


def parse(text):
    """{sample name: [(labels, value)]} and {family name: type}, as Prometheus's parser sees it."""
    samples, types = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples, types


def value(samples, name, **label_filter):
    matches = [v for labels, v in samples.get(name, [])
               if all(labels.get(k) == want for k, want in label_filter.items())]
    assert len(matches) == 1, (name, label_filter, samples.get(name))
    return matches[0]


# ===== Escaping =================================================================================

def test_hostile_server_names_and_hostnames_are_escaped_and_read_back_unchanged():
    hostname = '<script>alert("x")</script>\\\n"}\' 1\nmpanel_up{server="evil"} 1'
    text = prometheus.exposition([row(name=HOSTILE, hostname=hostname, cpu_usage=50.0)],
                                 NOW, 300)
    assert 'server="a\\"b\\\\c\\nd"' in text
    # Every line is a comment or a sample: nothing the agent sent started a line of its own.
    for line in text.splitlines():
        assert line.startswith("# ") or line.startswith("mpanel_"), line
    samples, _ = parse(text)
    assert [labels["server"] for labels, _ in samples["mpanel_up"]] == [HOSTILE]
    assert value(samples, "mpanel_up", server=HOSTILE, hostname=hostname) == 1
    assert value(samples, "mpanel_cpu_usage_ratio", hostname=hostname) == 0.5
    assert not any(labels.get("server") == "evil" for labels, _ in samples["mpanel_up"])


def test_hostile_mount_labels_are_escaped_too():
    disks = [{"mountpoint": '/mnt/"x"\\y\nz', "device": "/dev/\\sdb", "fstype": 'ext"4',
              "total": 100, "used": 30, "free": 70}]
    samples, _ = parse(prometheus.exposition([row(disks=disks)], NOW, 300))
    assert value(samples, "mpanel_filesystem_used_bytes", mountpoint='/mnt/"x"\\y\nz',
                 device="/dev/\\sdb", fstype='ext"4') == 30


@pytest.mark.parametrize("raw, escaped", [
    ("plain", "plain"), ('q"uote', 'q\\"uote'), ("back\\slash", "back\\\\slash"),
    ("new\nline", "new\\nline"), ("\\n", "\\\\n"), ("", ""), ("ünï ✓", "ünï ✓"),
])
def test_label_values_escape_backslash_quote_and_newline_only(raw, escaped):
    assert prometheus.escape_label_value(raw) == escaped


# ===== Families =================================================================================

def test_each_family_has_help_and_type_once_and_its_samples_together():
    rows = [row(server_id=i, name=f"srv-{i}", cpu_usage=float(i), memory_used=i * GIB,
                network_rx_bytes=i * 1000,
                disks=[{"mountpoint": "/", "device": "/dev/vda1", "fstype": "ext4",
                        "total": 100, "used": i, "free": 100 - i},
                       {"mountpoint": "/srv", "device": "/dev/vdb", "fstype": "xfs",
                        "total": 200, "used": 2 * i, "free": 200 - 2 * i}])
            for i in range(1, 4)]
    text = prometheus.exposition(rows, NOW, 300, {2: 1})
    helps = re.findall(r"^# HELP (\S+) ", text, re.M)
    types = re.findall(r"^# TYPE (\S+) ", text, re.M)
    assert helps == types == prometheus.all_family_names()
    assert len(set(helps)) == len(helps)
    # After a family's TYPE line come only its own samples, up to the next HELP.
    current = None
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            current = line.split()[2]
        elif not line.startswith("#"):
            assert re.split(r"[{ ]", line)[0] == current, line  # a name, labels or not
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_names_follow_the_prometheus_conventions():
    for name in prometheus.all_family_names():
        assert re.fullmatch(r"mpanel_[a-z0-9_]+", name), name
    for name, kind, *_ in prometheus.SAMPLE_FAMILIES:
        assert name.endswith("_total") == (kind == "counter"), name
        assert not name.endswith("_percent"), name


def test_figures_are_in_base_units():
    text = prometheus.exposition([row(
        cpu_usage=12.5, cpu_iowait=3.0, cpu_steal=0.0, cpu_load_1min=0.5, cpu_load_5min=0.4,
        cpu_load_15min=0.3, memory_total=8 * GIB, memory_used=2 * GIB,
        memory_available=6 * GIB, memory_cached=GIB, swap_total=2 * GIB, swap_used=0,
        disk_total=100 * GIB, disk_used=40 * GIB, disk_max_percent=87.5,
        disk_read_rate=10.0, disk_write_rate=20.0, network_rx_rate=7.5, network_tx_rate=5.0,
        network_rx_bytes=2000, network_tx_bytes=1000, process_count=80,
        disks=[{"mountpoint": "/", "device": "/dev/vda1", "fstype": "ext4",
                "total": 100 * GIB, "used": 40 * GIB, "free": 55 * GIB}])], NOW, 300, {1: 2})
    samples, types = parse(text)
    expected = {
        "mpanel_up": 1, "mpanel_cpu_usage_ratio": 0.125, "mpanel_cpu_iowait_ratio": 0.03,
        "mpanel_cpu_steal_ratio": 0.0, "mpanel_load1": 0.5, "mpanel_load5": 0.4,
        "mpanel_load15": 0.3, "mpanel_memory_total_bytes": 8 * GIB,
        "mpanel_memory_used_bytes": 2 * GIB, "mpanel_memory_available_bytes": 6 * GIB,
        "mpanel_memory_cached_bytes": GIB, "mpanel_swap_total_bytes": 2 * GIB,
        "mpanel_swap_used_bytes": 0, "mpanel_disk_total_bytes": 100 * GIB,
        "mpanel_disk_used_bytes": 40 * GIB, "mpanel_disk_max_used_ratio": 0.875,
        "mpanel_disk_read_bytes_per_second": 10.0, "mpanel_disk_written_bytes_per_second": 20.0,
        "mpanel_network_receive_bytes_per_second": 7.5,
        "mpanel_network_transmit_bytes_per_second": 5.0,
        "mpanel_network_receive_bytes_total": 2000, "mpanel_network_transmit_bytes_total": 1000,
        "mpanel_processes": 80, "mpanel_alerts_firing": 2,
        "mpanel_last_seen_timestamp_seconds": NOW_EPOCH - 30,
        "mpanel_last_sample_timestamp_seconds": NOW_EPOCH - 40,
        "mpanel_filesystem_size_bytes": 100 * GIB, "mpanel_filesystem_used_bytes": 40 * GIB,
        "mpanel_filesystem_free_bytes": 55 * GIB, "mpanel_filesystem_used_ratio": 40 / 95,
    }
    for name, want in expected.items():
        assert value(samples, name, server="web-1") == pytest.approx(want), name
    assert types["mpanel_network_receive_bytes"] == "counter"
    assert types["mpanel_memory_used_bytes"] == "gauge"
    # Byte counts stay exact integers in the text (no 8.589934592e+09).
    assert 'mpanel_memory_total_bytes{server="web-1",hostname="web-1.example.com"} 8589934592' \
        in text
    assert value(samples, "mpanel_agent_info", version="0.2.0", status="active") == 1


def test_timestamps_are_unix_seconds_of_naive_utc():
    assert prometheus.epoch_seconds(NOW) == NOW_EPOCH == 1796040000


# ===== NULLs, offline servers, the fleet ========================================================

def test_null_figures_are_left_out_not_printed_as_nan():
    text = prometheus.exposition([row(cpu_usage=None, memory_used=5, cpu_load_1min=float("nan"),
                                      disk_read_rate=float("inf"))], NOW, 300)
    printed = [line.rsplit(" ", 1)[1] for line in text.splitlines() if not line.startswith("#")]
    assert not {"NaN", "nan", "+Inf", "inf", "None"} & set(printed)
    samples, _ = parse(text)
    assert "mpanel_cpu_usage_ratio" not in samples
    assert "mpanel_load1" not in samples
    assert "mpanel_disk_read_bytes_per_second" not in samples
    assert value(samples, "mpanel_memory_used_bytes") == 5


def test_a_mount_with_no_space_has_sizes_but_no_ratio():
    disks = [{"mountpoint": "/empty", "device": "none", "fstype": "tmpfs",
              "total": 0, "used": 0, "free": 0},
             {"mountpoint": "/odd", "device": "x", "fstype": "ext4", "total": 10}]
    samples, _ = parse(prometheus.exposition([row(disks=disks)], NOW, 300))
    assert "mpanel_filesystem_used_ratio" not in samples
    assert value(samples, "mpanel_filesystem_size_bytes", mountpoint="/empty") == 0
    assert value(samples, "mpanel_filesystem_size_bytes", mountpoint="/odd") == 10
    assert "mpanel_filesystem_used_bytes" in samples  # /empty's 0 is a value, not a NULL


def test_a_mountpoint_listed_twice_gives_one_series():
    disks = [{"mountpoint": "/", "device": "/dev/vda1", "fstype": "ext4", "total": 10,
              "used": 1, "free": 9},
             {"mountpoint": "/", "device": "overlay", "fstype": "overlay", "total": 20,
              "used": 2, "free": 18}]
    samples, _ = parse(prometheus.exposition([row(disks=disks)], NOW, 300))
    assert value(samples, "mpanel_filesystem_size_bytes", mountpoint="/") == 10


def test_a_silent_server_is_down_and_its_old_figures_are_not_exported():
    old = NOW - datetime.timedelta(seconds=301)
    rows = [row(server_id=1, name="quiet", last_seen=old, sample_time=old, cpu_usage=95.0,
                disks=[{"mountpoint": "/", "total": 1, "used": 1, "free": 0}]),
            row(server_id=2, name="edge", last_seen=NOW - datetime.timedelta(seconds=300),
                cpu_usage=10.0),
            row(server_id=3, name="new", hostname="", last_seen=None, sample_time=None,
                agent_status="pending", agent_version=None)]
    samples, _ = parse(prometheus.exposition(rows, NOW, 300, {1: 1}))
    assert value(samples, "mpanel_up", server="quiet") == 0
    assert value(samples, "mpanel_up", server="edge") == 1
    assert value(samples, "mpanel_up", server="new") == 0
    assert [labels["server"] for labels, _ in samples["mpanel_cpu_usage_ratio"]] == ["edge"]
    assert "mpanel_filesystem_size_bytes" not in samples
    assert value(samples, "mpanel_last_seen_timestamp_seconds", server="quiet") == \
        prometheus.epoch_seconds(old)
    assert {labels["server"] for labels, _ in samples["mpanel_last_seen_timestamp_seconds"]} \
        == {"quiet", "edge"}
    assert value(samples, "mpanel_alerts_firing", server="quiet") == 1
    assert value(samples, "mpanel_alerts_firing", server="new") == 0
    assert value(samples, "mpanel_agent_info", server="new") == 1
    assert {labels["state"]: v for labels, v in samples["mpanel_servers"]} == \
        {"online": 1, "offline": 1, "never_seen": 1}


def test_no_servers_still_gives_a_valid_exposition():
    text = prometheus.exposition([], NOW, 300)
    samples, types = parse(text)
    assert {labels["state"]: v for labels, v in samples["mpanel_servers"]} == \
        {"online": 0, "offline": 0, "never_seen": 0}
    assert "mpanel_up" in types


# ===== Request parsing ==========================================================================

@pytest.mark.parametrize("header, token", [
    ("Bearer s3cret", b"s3cret"), ("bearer  s3cret ", b"s3cret"), ("BEARER s3cret", b"s3cret"),
    ("Basic czNjcmV0", None), ("Bearer", None), ("Bearer ", None), ("", None), (None, None),
    ("Bearer caf\xc3\xa9", "café".encode()),  # UTF-8 bytes, as WSGI hands them over (latin-1)
])
def test_bearer_token_is_read_from_the_authorization_header(header, token):
    assert prometheus.bearer_token(header) == token


# ===== Documentation ============================================================================

def test_every_metric_is_documented():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "prometheus.md").read_text()
    missing = [name for name in prometheus.all_family_names() if f"`{name}`" not in docs]
    assert not missing, f"docs/prometheus.md does not list {missing}"


# ===== Bounds ===================================================================================

def hostile_mounts(count, length):
    """`count` mounts whose paths are `length` characters and differ only at the end."""
    return [{"mountpoint": "/" + "m" * (length - 6) + f"{index:05d}", "device": "/dev/x",
             "fstype": "ext4", "total": 100, "used": 10, "free": 90} for index in range(count)]


def test_a_hostile_agent_cannot_bloat_the_scrape():
    """250 mounts with 4 KB paths (one scrape of 3.9 MB, issue 10): at most MOUNTS_PER_SERVER
    mounts are exported, each label value at most LABEL_VALUE_MAX characters and still
    distinct, and both cuts are counted; the result still parses."""
    system = {"mountpoint": "/", "device": "/dev/vda1", "fstype": "ext4", "total": 100,
              "used": 50, "free": 50}
    disks = hostile_mounts(250, 4096) + [system]
    text = prometheus.exposition([row(cpu_usage=1.0, hostname="h" * 300, disks=disks),
                                  row(server_id=2, name="web-2", disks=[system])], NOW, 300)
    samples, _ = parse(text)
    limit, kept = prometheus.LABEL_VALUE_MAX, prometheus.MOUNTS_PER_SERVER
    assert len(text.encode()) < 100_000  # it was 3.9 MB; a quiet server's part is ~4 KB
    mountpoints = [labels["mountpoint"] for labels, _ in
                   samples["mpanel_filesystem_size_bytes"] if labels["server"] == "web-1"]
    assert len(mountpoints) == len(set(mountpoints)) == kept
    assert "/" in mountpoints  # the system's own mount is kept, the deep paths go first
    assert all(len(v) <= limit for labels, _ in sum(samples.values(), [])
               for v in labels.values())
    assert value(samples, "mpanel_filesystems_omitted", server="web-1") == 250 + 1 - kept
    assert value(samples, "mpanel_filesystems_omitted", server="web-2") == 0
    # Counted once per value: web-1's hostname, and the 31 long paths among the kept mounts.
    assert value(samples, "mpanel_label_values_truncated") == 1 + kept - 1


@pytest.mark.parametrize("raw", ["x" * 128, "é" * 129, "a" * 5000, 'q"\\n' * 60])
def test_a_long_label_value_is_cut_to_the_limit_and_stays_distinct(raw):
    shown = prometheus.bounded_label_value(raw)
    assert len(shown) <= prometheus.LABEL_VALUE_MAX
    assert shown == raw if len(raw) <= prometheus.LABEL_VALUE_MAX else \
        shown.startswith(raw[:100]) and shown != prometheus.bounded_label_value(raw + "!")
    assert shown == prometheus.bounded_label_value(raw)  # the same series on every scrape
