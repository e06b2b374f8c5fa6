"""Turning validated samples into rows: timestamps and the typed columns."""
import datetime

import pytest

from panel import ingest, protocol
from panel.validation import ValidationError

NOW = datetime.datetime(2026, 11, 30, 12, 0, 0)
SECTIONS = protocol.METRICS_BODY["properties"]["metrics"]["properties"]


@pytest.mark.parametrize("value,expected", [
    ("2026-11-30T11:59:00Z", datetime.datetime(2026, 11, 30, 11, 59)),
    ("2026-11-30T12:59:00+01:00", datetime.datetime(2026, 11, 30, 11, 59)),
    ("2026-11-30T11:59:00.250000+00:00", datetime.datetime(2026, 11, 30, 11, 59, 0, 250000)),
    (1796039940, datetime.datetime(2026, 11, 30, 11, 59)),
    (1796039940.5, datetime.datetime(2026, 11, 30, 11, 59, 0, 500000)),
])
def test_timestamps_become_naive_utc(value, expected):
    assert ingest.parse_timestamp(value, NOW) == expected


@pytest.mark.parametrize("value,message", [
    ("2026-11-30T11:59:00", "time zone"),
    ("yesterday", "ISO 8601"),
    ("2026-11-30T12:06:00Z", "future"),
    (1796039940 * 1000, "usable epoch"),  # milliseconds sent as seconds
    ("1999-12-31T23:59:59Z", "2000"),
])
def test_unusable_timestamps_are_refused_with_a_reason(value, message):
    with pytest.raises(ValidationError) as caught:
        ingest.parse_timestamp(value, NOW)
    assert message in caught.value.message
    assert caught.value.field == "timestamp"


def test_sample_row_fills_typed_columns_and_keeps_detail():
    row = ingest.sample_row({
        "cpu": {"usage": 12.5, "load1": 1.0, "load5": 0.5, "load15": 0.25},
        "memory": {"total": 1000, "used": 400, "free": 100, "available": 600, "cached": 300},
        "disk": [
            {"mountpoint": "/", "device": "/dev/vda1", "total": 100, "used": 40, "free": 60},
            {"mountpoint": "/srv", "device": "/dev/vdb1", "total": 50, "used": 10, "free": 40},
        ],
        "network": [
            {"interface": "eth0", "bytesSent": 5, "bytesRecv": 7},
            {"interface": "eth1", "bytesSent": 1, "bytesRecv": 2, "packetsSent": 3},
        ],
    }, SECTIONS)
    assert row["cpu_usage"] == 12.5 and row["cpu_load_15min"] == 0.25
    assert row["memory_available"] == 600 and row["memory_cached"] == 300
    assert (row["disk_total"], row["disk_used"], row["disk_free"]) == (150, 50, 100)
    assert (row["network_rx_bytes"], row["network_tx_bytes"]) == (9, 6)
    assert [d["mountpoint"] for d in row["disks"]] == ["/", "/srv"]
    assert row["interfaces"][1] == {"interface": "eth1", "bytesSent": 1, "bytesRecv": 2,
                                    "packetsSent": 3}


def test_a_device_mounted_twice_is_counted_once_in_totals():
    row = ingest.sample_row({"disk": [
        {"mountpoint": "/", "device": "/dev/vda1", "total": 100, "used": 40, "free": 60},
        {"mountpoint": "/var/lib/docker", "device": "/dev/vda1", "total": 100, "used": 40,
         "free": 60},
    ]}, SECTIONS)
    assert row["disk_total"] == 100
    assert len(row["disks"]) == 2


def test_unknown_fields_from_the_agent_are_not_stored():
    row = ingest.sample_row({"network": [
        {"interface": "eth0", "bytesSent": 1, "bytesRecv": 2, "secret": "x" * 1000}]}, SECTIONS)
    assert "secret" not in row["interfaces"][0]


def test_sums_past_64_bits_are_refused_not_overflowed():
    huge = 2**62
    with pytest.raises(ValidationError) as caught:
        ingest.sample_row({"network": [
            {"interface": f"eth{i}", "bytesSent": huge, "bytesRecv": 0} for i in range(3)]},
            SECTIONS)
    assert caught.value.field == "metrics.network"


def test_absent_sections_leave_their_columns_empty():
    row = ingest.sample_row({"cpu": {"usage": 1.0}}, SECTIONS)
    assert row["memory_total"] is None
    assert "disks" not in row and "interfaces" not in row
