"""Turning validated samples into rows: timestamps and the typed columns."""
import datetime

import pytest

from panel import ingest
from panel.validation import ValidationError

NOW = datetime.datetime(2026, 11, 30, 12, 0, 0)


@pytest.mark.parametrize("value,expected", [
    ("2026-11-30T11:59:00Z", datetime.datetime(2026, 11, 30, 11, 59)),
    ("2026-11-30T12:59:00+01:00", datetime.datetime(2026, 11, 30, 11, 59)),
    ("2026-11-30T11:59:00.250000+00:00", datetime.datetime(2026, 11, 30, 11, 59, 0, 250000)),
    (1796039940, datetime.datetime(2026, 11, 30, 11, 59)),
    (1796039940.5, datetime.datetime(2026, 11, 30, 11, 59, 0, 500000)),
    # A clock two hours ahead: kept as stamped (the panel warns of the clock), not refused.
    ("2026-11-30T14:00:00Z", datetime.datetime(2026, 11, 30, 14, 0)),
])
def test_timestamps_become_naive_utc(value, expected):
    assert ingest.parse_timestamp(value, NOW) == expected


@pytest.mark.parametrize("value,message", [
    ("2026-11-30T11:59:00", "time zone"),
    ("yesterday", "ISO 8601"),
    ("2026-12-01T12:06:00Z", "more than a day ahead"),
    (1796039940 * 1000, "usable epoch"),  # milliseconds sent as seconds
    ("1999-12-31T23:59:59Z", "2000"),
])
def test_unusable_timestamps_are_refused_with_a_reason(value, message):
    with pytest.raises(ValidationError) as caught:
        ingest.parse_timestamp(value, NOW)
    assert message in caught.value.message
    assert caught.value.field == "timestamp"


@pytest.mark.parametrize("date_header,agent_time,offset", [
    ("Mon, 30 Nov 2026 14:00:00 GMT", None, 7200),
    ("Mon, 30 Nov 2026 11:00:00 GMT", None, -3600),
    ("Mon, 30 Nov 2026 13:00:00 +0100", None, 0),
    (None, datetime.datetime(2026, 11, 30, 11, 59, 30), -30),
    # The body's own time (a heartbeat's, to the millisecond) beats the header's second.
    ("Mon, 30 Nov 2026 14:00:00 GMT", datetime.datetime(2026, 11, 30, 12, 0, 5), 5),
    (None, None, None),
    ("yesterday at noon", None, None),
    ("Mon, 30 Nov 2026 14:00:00 -0000", None, None),  # RFC 5322: "-0000" means no zone known
    ("Sat, 01 Jan 1972 00:00:00 GMT", None, None),  # a clock never set is no reading
    # Hostile or absurd: still a number the column holds, never an exception.
    ("Fri, 31 Dec 9999 23:59:59 GMT", None, ingest.MAX_CLOCK_OFFSET),
    ("Mon, 01 Jan 99999999999999999999 00:00:00 GMT", None, None),
    ("x" * 5000, None, None),
])
def test_clock_offset_is_what_the_agent_says_its_time_is(date_header, agent_time, offset):
    assert ingest.clock_offset(NOW, date_header, agent_time) == offset


def test_sample_row_fills_typed_columns_and_keeps_detail():
    row = ingest.sample_row({
        "cpu": {"usage": 12.5, "iowait": 1.5, "steal": 0.5, "load1": 1.0, "load5": 0.5,
                "load15": 0.25},
        "memory": {"total": 1000, "used": 400, "free": 100, "available": 600, "cached": 300,
                   "swapTotal": 50, "swapUsed": 5},
        "disk": {
            "mounts": [
                {"mountpoint": "/", "device": "/dev/vda1", "total": 100, "used": 40, "free": 60},
                {"mountpoint": "/srv", "device": "/dev/vdb1", "total": 50, "used": 10,
                 "free": 40},
            ],
            "io": [{"device": "vda", "readBytesPerSec": 100.0, "writeBytesPerSec": 50.0},
                   {"device": "vdb", "readBytesPerSec": 1.0, "writeBytesPerSec": 2.0}],
        },
        "network": {"interfaces": [
            {"interface": "eth0", "bytesSent": 5, "bytesRecv": 7, "bytesSentPerSec": 1.5,
             "bytesRecvPerSec": 2.5},
            {"interface": "eth1", "bytesSent": 1, "bytesRecv": 2, "packetsSent": 3},
        ]},
        "processes": {"total": 80, "running": 2,
                      "topCpu": [{"pid": 1, "name": "init", "cpuPercent": 1.0}],
                      "topMemory": []},
        "services": {"redis": {"usedMemory": 10, "connectedClients": 1}},
    }, {"docker": "PermissionError: denied"})
    assert row["cpu_usage"] == 12.5 and row["cpu_load_15min"] == 0.25
    assert (row["cpu_iowait"], row["cpu_steal"]) == (1.5, 0.5)
    assert row["memory_available"] == 600 and row["memory_cached"] == 300
    assert (row["swap_total"], row["swap_used"]) == (50, 5)
    assert (row["disk_total"], row["disk_used"], row["disk_free"]) == (150, 50, 100)
    assert (row["disk_read_rate"], row["disk_write_rate"]) == (101.0, 52.0)
    assert (row["network_rx_bytes"], row["network_tx_bytes"]) == (9, 6)
    assert (row["network_rx_rate"], row["network_tx_rate"]) == (2.5, 1.5)
    assert row["process_count"] == 80
    detail = row["detail"]
    assert [d["mountpoint"] for d in detail["disks"]] == ["/", "/srv"]
    assert detail["interfaces"][1] == {"interface": "eth1", "bytesSent": 1, "bytesRecv": 2,
                                       "packetsSent": 3}
    assert detail["disk_io"][0]["device"] == "vda"
    assert detail["processes"]["topCpu"][0]["name"] == "init"
    assert detail["services"] == {"redis": {"usedMemory": 10, "connectedClients": 1}}
    assert detail["unavailable"] == {"docker": "PermissionError: denied"}


def test_a_device_mounted_twice_is_counted_once_in_totals():
    row = ingest.sample_row({"disk": {"mounts": [
        {"mountpoint": "/", "device": "/dev/vda1", "total": 100, "used": 40, "free": 60},
        {"mountpoint": "/var/lib/docker", "device": "/dev/vda1", "total": 100, "used": 40,
         "free": 60},
    ]}})
    assert row["disk_total"] == 100
    assert len(row["detail"]["disks"]) == 2


def test_rates_absent_on_a_first_sample_leave_the_rate_columns_empty():
    row = ingest.sample_row({"network": {"interfaces": [
        {"interface": "eth0", "bytesSent": 5, "bytesRecv": 7}]}})
    assert row["network_rx_rate"] is None and row["network_rx_bytes"] == 7


def test_unknown_fields_from_the_agent_are_not_stored():
    row = ingest.sample_row({
        "network": {"interfaces": [{"interface": "eth0", "bytesSent": 1, "bytesRecv": 2,
                                    "secret": "x" * 1000}]},
        "processes": {"total": 1, "topCpu": [{"pid": 1, "name": "x", "cmdline": "pw=1"}]},
        "services": {"redis": {"usedMemory": 1, "password": "hunter2"}, "mystery": {"a": 1}},
    })
    assert "secret" not in row["detail"]["interfaces"][0]
    assert "cmdline" not in row["detail"]["processes"]["topCpu"][0]
    assert row["detail"]["services"] == {"redis": {"usedMemory": 1}}


def test_a_sum_past_its_column_is_left_empty_and_the_sample_kept():
    """Each counter is within the schema's bounds; only their sum passes BIGINT. Refusing the
    sample would refuse data the published schema allows, so the sum is unknown instead."""
    huge = 2**62
    row = ingest.sample_row({"network": {"interfaces": [
        {"interface": f"eth{i}", "bytesSent": huge, "bytesRecv": 1} for i in range(3)]}})
    assert row["network_tx_bytes"] is None and row["network_rx_bytes"] == 3
    assert [i["bytesSent"] for i in row["detail"]["interfaces"]] == [huge] * 3


def test_a_figure_too_small_for_a_real_column_is_stored_as_zero():
    """PostgreSQL's REAL refuses 1e-50 ("out of range"), which the schema's minimum 0 allows."""
    row = ingest.sample_row({"cpu": {"usage": 1e-50, "load1": 5e-324, "load5": 0.5}})
    assert (row["cpu_usage"], row["cpu_load_1min"], row["cpu_load_5min"]) == (0.0, 0.0, 0.5)


def test_absent_sections_leave_their_columns_empty():
    row = ingest.sample_row({"cpu": {"usage": 1.0}})
    assert row["memory_total"] is None and row["detail"] is None


def test_detail_round_trips_through_its_compressed_form():
    from panel import models

    detail = {"disks": [{"mountpoint": "/srv/ünïcode", "total": 1, "used": 0, "free": 1}],
              "processes": {"total": 3, "topCpu": [], "topMemory": []}}
    packed = models.pack_detail(detail)
    assert packed[:1] == models.DETAIL_FORMAT
    assert models.unpack_detail(packed) == detail
    assert models.unpack_detail(memoryview(packed)) == detail


def test_a_highest_figure_is_the_largest_value_of_the_entries_that_send_it():
    from panel.ingest import REDUCERS
    highest = REDUCERS["highest"]
    assert highest([{"x": 3.0}, {}, {"x": 7.5}, {"x": None}], ("x",), None) == 7.5
    assert highest([{}, {"y": 1}], ("x",), None) is None
