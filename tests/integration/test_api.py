"""The agent API over real HTTP to a real panel (Waitress, separate process), on SQLite and on
PostgreSQL. Every kind of bad input gets its own status, a JSON error naming the problem, and
writes nothing."""
import datetime
import gzip
import json

import psutil
import pytest

from panel import models
from tests.conftest import (BASE_TIME, DELETE, bearer, http_request, new_server, stamp,
                            with_field)


def now_iso(offset_seconds=0):
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset_seconds)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def sample(server_id, timestamp=None, **metrics_overrides):
    metrics = {
        "cpu": {"usage": 12.5, "load1": 0.5, "load5": 0.4, "load15": 0.3, "count": 2},
        "memory": {"total": 8 << 30, "used": 2 << 30, "free": 5 << 30, "available": 6 << 30,
                   "cached": 1 << 30},
        "disk": {"mounts": [{"mountpoint": "/", "device": "/dev/vda", "fstype": "ext4",
                             "total": 100 << 30, "used": 40 << 30, "free": 60 << 30,
                             "percent": 40.0}],
                 "io": [{"device": "vda", "readBytesPerSec": 10.0, "writeBytesPerSec": 20.0}]},
        "network": {"interfaces": [{"interface": "eth0", "bytesSent": 1000, "bytesRecv": 2000,
                                    "packetsSent": 10, "packetsRecv": 20,
                                    "bytesSentPerSec": 5.0, "bytesRecvPerSec": 7.5}]},
        "processes": {"total": 80, "running": 2,
                      "topCpu": [{"pid": 42, "name": "postgres", "user": "postgres",
                                  "cpuPercent": 12.0, "rss": 1 << 20}],
                      "topMemory": [{"pid": 42, "name": "postgres", "user": "postgres",
                                     "cpuPercent": 12.0, "rss": 1 << 20}]},
        "services": {"redis": {"usedMemory": 1 << 20, "connectedClients": 3}},
    }
    metrics.update(metrics_overrides)
    return {"serverId": server_id, "timestamp": timestamp or now_iso(), "metrics": metrics}


@pytest.fixture
def server(panel):
    server, key = new_server("web-1")
    return server, key


def post(panel, path, key, document=None, body=None, headers=None):
    all_headers = {"Content-Type": "application/json", **bearer(key), **(headers or {})}
    if document is not None:
        body = json.dumps(document).encode()
    return http_request(panel, "POST", path, body=body, headers=all_headers)


def metric_count():
    return models.Metric.select().count()


def assert_error(response, status, field=None, words=None):
    assert response.status == status, (response.status, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    if field is not None:
        assert body.get("field") == field, body
    if words:
        assert words.lower() in body["error"].lower(), body


# ===== Happy paths ==============================================================================

def test_register_records_what_the_agent_says_about_itself(panel, server):
    srv, key = server
    response = post(panel, "/api/agent/register", key,
                    {"hostname": "web-1.example.com", "os": "Linux 6.1", "arch": "x86_64",
                     "version": "0.1.0"})
    assert response.status == 200
    assert response.json() == {"serverId": srv.id, "registered": True}
    agent = models.Agent.get(models.Agent.server == srv.id)
    assert (agent.hostname, agent.os, agent.arch, agent.agent_version) == \
        ("web-1.example.com", "Linux 6.1", "x86_64", "0.1.0")
    assert agent.status == "active" and agent.last_seen is not None
    assert agent.ip_address == "127.0.0.1"


def test_metrics_are_stored_with_typed_columns_and_detail(panel, server):
    srv, key = server
    response = post(panel, "/api/agent/metrics", key, sample(srv.id, stamp(52)))
    assert response.status == 200, response.text
    assert response.json() == {"received": True, "stored": 1, "duplicates": 0,
                               "nextReportIn": 60}
    row = models.Metric.get()
    assert row.timestamp == BASE_TIME + datetime.timedelta(minutes=52)
    assert row.cpu_usage == 12.5 and row.cpu_load_5min == pytest.approx(0.4)
    assert row.memory_total == 8 << 30 and row.memory_available == 6 << 30
    assert row.disk_total == 100 << 30
    assert row.network_rx_bytes == 2000 and row.network_tx_bytes == 1000
    assert row.network_rx_rate == 7.5 and row.disk_write_rate == 20.0
    assert row.disks[0]["mountpoint"] == "/"
    assert row.interfaces[0]["packetsRecv"] == 20
    assert row.processes["topCpu"][0]["name"] == "postgres" and row.process_count == 80
    assert row.services == {"redis": {"usedMemory": 1 << 20, "connectedClients": 3}}
    assert models.Agent.get(models.Agent.server == srv.id).last_seen is not None


def test_gzip_body_is_accepted(panel, server):
    srv, key = server
    body = gzip.compress(json.dumps(sample(srv.id)).encode())
    response = post(panel, "/api/agent/metrics", key, body=body,
                    headers={"Content-Encoding": "gzip"})
    assert response.status == 200, response.text
    assert metric_count() == 1


def test_epoch_timestamp_is_accepted(panel, server):
    srv, key = server
    epoch = BASE_TIME.replace(tzinfo=datetime.timezone.utc).timestamp()
    response = post(panel, "/api/agent/metrics", key, sample(srv.id, epoch))
    assert response.status == 200, response.text
    assert models.Metric.get().timestamp == BASE_TIME


def test_sample_older_than_the_retention_is_422(panel, server):
    srv, key = server
    old = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=8))
    response = post(panel, "/api/agent/metrics", key, sample(srv.id, old.isoformat()))
    assert_error(response, 422, "timestamp", "older than the panel keeps")


def test_retried_sample_is_stored_once(panel, server):
    srv, key = server
    document = sample(srv.id, stamp(52))
    first = post(panel, "/api/agent/metrics", key, document)
    second = post(panel, "/api/agent/metrics", key, document)
    assert first.status == second.status == 200
    assert (second.json()["stored"], second.json()["duplicates"]) == (0, 1)
    assert metric_count() == 1


def batch(server_id, count):
    samples = []
    for index in range(count):
        one = sample(server_id, stamp(index - 30))
        del one["serverId"]
        samples.append(one)
    return {"serverId": server_id, "samples": samples}


def test_batch_stores_every_sample_with_its_own_timestamp(panel, server):
    srv, key = server
    response = post(panel, "/api/agent/metrics", key, batch(srv.id, 30))
    assert response.status == 200, response.text
    assert response.json()["stored"] == 30
    stamps = [m.timestamp for m in models.Metric.select().order_by(models.Metric.timestamp)]
    assert stamps[0] == BASE_TIME - datetime.timedelta(minutes=30)
    assert stamps[-1] == BASE_TIME - datetime.timedelta(minutes=1)


def test_replayed_batch_overlapping_stored_samples_stores_each_once(panel, server):
    srv, key = server
    assert post(panel, "/api/agent/metrics", key, batch(srv.id, 10)).status == 200
    again = post(panel, "/api/agent/metrics", key, batch(srv.id, 15))
    assert again.status == 200
    assert (again.json()["stored"], again.json()["duplicates"]) == (5, 10)
    assert metric_count() == 15


def test_batch_with_the_same_timestamp_twice_counts_one_stored(panel, server):
    srv, key = server
    document = batch(srv.id, 3)
    document["samples"][2]["timestamp"] = document["samples"][0]["timestamp"]
    response = post(panel, "/api/agent/metrics", key, document)
    assert response.status == 200, response.text
    assert (response.json()["stored"], response.json()["duplicates"]) == (2, 1)
    assert metric_count() == 2


def test_batch_with_one_bad_sample_is_refused_whole_naming_its_index(panel, server):
    srv, key = server
    document = batch(srv.id, 5)
    document["samples"][3]["metrics"]["cpu"]["usage"] = 500
    response = post(panel, "/api/agent/metrics", key, document)
    assert_error(response, 422, "samples[3].metrics.cpu.usage")
    assert metric_count() == 0


def test_batch_with_a_future_sample_names_its_index(panel, server):
    srv, key = server
    document = batch(srv.id, 3)
    document["samples"][1]["timestamp"] = now_iso(2 * 86400)
    response = post(panel, "/api/agent/metrics", key, document)
    assert_error(response, 422, "samples[1].timestamp", "a day ahead")
    assert metric_count() == 0


def test_batch_larger_than_the_maximum_is_422(panel, server):
    srv, key = server
    document = batch(srv.id, 101)
    for one in document["samples"]:
        one["metrics"] = {"cpu": {"usage": 1.0}}
    assert_error(post(panel, "/api/agent/metrics", key, document), 422, "samples")


def test_heartbeat_updates_last_seen(panel, server):
    srv, key = server
    response = post(panel, "/api/agent/heartbeat", key, {"serverId": srv.id,
                                                         "timestamp": now_iso()})
    assert response.status == 200 and response.json() == {"status": "ok"}
    assert models.Agent.get(models.Agent.server == srv.id).last_seen is not None
    assert metric_count() == 0


def test_config_tells_interval_and_leaves_collectors_to_the_agent(panel, server):
    """Not narrowed by an admin (MPANEL_ENABLED_COLLECTORS unset), the answer names no
    collectors: agents run whatever they have, so a collector the panel never heard of is on
    (test_new_collector.py); a fixed list here would switch it off (issue 11)."""
    _, key = server
    response = http_request(panel, "GET", "/api/agent/config", headers=bearer(key))
    assert response.status == 200
    assert response.json() == {"reportInterval": 60}


def test_openapi_document_is_served(panel):
    response = http_request(panel, "GET", "/api/openapi.json")
    assert response.status == 200
    document = response.json()
    assert "MetricsRequest" in document["components"]["schemas"]


def test_security_headers_on_api_answers(panel):
    response = http_request(panel, "GET", "/api/openapi.json")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


# ===== 401 =====================================================================================

@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not-a-key",
    "Bearer agent_000000000000_" + "A" * 40,
])
def test_missing_or_malformed_key_is_401(panel, server, header):
    srv, _ = server
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Authorization"] = header
    response = http_request(panel, "POST", "/api/agent/metrics", headers=headers,
                            body=json.dumps(sample(srv.id)))
    assert_error(response, 401, "Authorization")
    assert metric_count() == 0


def test_wrong_secret_for_a_real_key_id_is_401(panel, server):
    srv, key = server
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    response = post(panel, "/api/agent/metrics", forged, sample(srv.id))
    assert_error(response, 401, "Authorization", "rejected")
    assert metric_count() == 0


def test_every_agent_endpoint_needs_a_key(panel, server):
    for method, path in (("POST", "/api/agent/register"), ("POST", "/api/agent/metrics"),
                         ("POST", "/api/agent/heartbeat"), ("GET", "/api/agent/config")):
        response = http_request(panel, method, path, headers={"Content-Type": "application/json"},
                                body=b"{}" if method == "POST" else None)
        assert_error(response, 401)


def test_api_key_never_reaches_the_log(panel, server):
    srv, key = server
    post(panel, "/api/agent/metrics", key, sample(srv.id))
    post(panel, "/api/agent/metrics", key[:-2] + "zz", sample(srv.id))
    secret = key.split("_", 2)[2]
    assert secret not in panel.log_text()


# ===== 403 =====================================================================================

def test_other_servers_id_is_403_and_nothing_is_written(panel, server):
    srv, key = server
    other, _ = new_server("web-2")
    response = post(panel, "/api/agent/metrics", key, sample(other.id))
    assert_error(response, 403, "serverId")
    response = post(panel, "/api/agent/heartbeat", key, {"serverId": other.id,
                                                         "timestamp": now_iso()})
    assert_error(response, 403, "serverId")
    assert metric_count() == 0
    assert models.Agent.get(models.Agent.server == other.id).last_seen is None


# ===== 413 =====================================================================================

def test_oversized_body_is_413(panel, server):
    srv, key = server
    document = sample(srv.id)
    document["padding"] = "x" * (1100 * 1024)
    response = post(panel, "/api/agent/metrics", key, document)
    assert_error(response, 413, words="limit")
    assert metric_count() == 0


def test_gzip_bomb_is_413_not_a_full_memory(panel, server):
    srv, key = server
    document = sample(srv.id)
    document["padding"] = " " * (64 * 1024 * 1024)  # 64 MiB of spaces, ~64 KiB gzipped
    bomb = gzip.compress(json.dumps(document).encode(), compresslevel=9)
    assert len(bomb) < 256 * 1024
    response = post(panel, "/api/agent/metrics", key, body=bomb,
                    headers={"Content-Encoding": "gzip"})
    assert_error(response, 413, words="decompressed")
    assert metric_count() == 0


# ===== 400 / 415 ===============================================================================

@pytest.mark.parametrize("body,words", [
    (b"{not json", "not valid json"),
    (b"", "not valid json"),
    (b'{"serverId": NaN}', "nan"),
    (b'{"serverId": 1e999}', "out of range"),
    (b"\xff\xfe{}", "utf-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested"),
])
def test_malformed_body_is_400(panel, server, body, words):
    _, key = server
    response = post(panel, "/api/agent/metrics", key, body=body)
    assert_error(response, 400, words=words)
    assert metric_count() == 0


def test_broken_gzip_is_400(panel, server):
    _, key = server
    response = post(panel, "/api/agent/metrics", key, body=b"\x1f\x8b not really gzip",
                    headers={"Content-Encoding": "gzip"})
    assert_error(response, 400, "Content-Encoding")


def test_truncated_gzip_is_400(panel, server):
    srv, key = server
    body = gzip.compress(json.dumps(sample(srv.id)).encode())[:-10]
    response = post(panel, "/api/agent/metrics", key, body=body,
                    headers={"Content-Encoding": "gzip"})
    assert_error(response, 400, "Content-Encoding")


def test_wrong_content_type_is_415(panel, server):
    srv, key = server
    response = post(panel, "/api/agent/metrics", key, sample(srv.id),
                    headers={"Content-Type": "text/plain"})
    assert_error(response, 415, "Content-Type")


def test_unknown_content_encoding_is_415(panel, server):
    srv, key = server
    response = post(panel, "/api/agent/metrics", key, sample(srv.id),
                    headers={"Content-Encoding": "br"})
    assert_error(response, 415, "Content-Encoding")


# ===== 422 =====================================================================================

@pytest.mark.parametrize("path,value,field", [
    (("serverId",), DELETE, "serverId"),
    (("serverId",), "1", "serverId"),
    (("timestamp",), DELETE, "timestamp"),
    (("timestamp",), "2026-11-30T01:52:00", "timestamp"),
    (("timestamp",), "soon", "timestamp"),
    (("metrics",), DELETE, "metrics"),
    (("metrics", "cpu", "usage"), 250, "metrics.cpu.usage"),
    (("metrics", "memory", "total"), -1, "metrics.memory.total"),
    (("metrics", "memory", "used"), "a lot", "metrics.memory.used"),
    (("metrics", "disk", "mounts", 0, "mountpoint"), "/mnt/\x00evil",
     "metrics.disk.mounts[0].mountpoint"),
    (("metrics", "network", "interfaces", 0, "bytesSent"), 2**64,
     "metrics.network.interfaces[0].bytesSent"),
    (("metrics", "processes", "topCpu", 0, "name"), "x" * 257,
     "metrics.processes.topCpu[0].name"),
    (("unavailable",), {"docker": ["not", "a", "string"]}, "unavailable.docker"),
])
def test_schema_violation_is_422_naming_the_field(panel, server, path, value, field):
    srv, key = server
    response = post(panel, "/api/agent/metrics", key, with_field(sample(srv.id), path, value))
    assert_error(response, 422, field)
    assert metric_count() == 0


def test_timestamp_more_than_a_day_ahead_is_422(panel, server):
    srv, key = server
    response = post(panel, "/api/agent/metrics", key, sample(srv.id, now_iso(86400 + 600)))
    assert_error(response, 422, "timestamp", "more than a day ahead")


def test_body_that_is_not_an_object_is_422(panel, server):
    _, key = server
    response = post(panel, "/api/agent/metrics", key, body=b"[1, 2, 3]")
    assert_error(response, 422)


def test_too_many_interfaces_is_422(panel, server):
    srv, key = server
    interfaces = [{"interface": f"veth{i}", "bytesSent": 1, "bytesRecv": 1} for i in range(513)]
    response = post(panel, "/api/agent/metrics", key,
                    sample(srv.id, network={"interfaces": interfaces}))
    assert_error(response, 422, "metrics.network.interfaces")


@pytest.mark.parametrize("field,value", [
    ("hostname", "h" * 256), ("hostname", ""), ("os", 5), ("version", "v" * 21),
    ("hostname", "web\x00"),
])
def test_bad_registration_is_422_and_changes_nothing(panel, server, field, value):
    srv, key = server
    document = {"hostname": "web-1", "os": "Linux", "arch": "x86_64", "version": "0.1.0"}
    document[field] = value
    response = post(panel, "/api/agent/register", key, document)
    assert_error(response, 422, field)
    agent = models.Agent.get(models.Agent.server == srv.id)
    assert agent.hostname == "" and agent.status == "pending"


# ===== Routing errors are JSON too =============================================================

def test_unknown_api_path_is_json_404(panel):
    response = http_request(panel, "GET", "/api/agent/nope")
    assert_error(response, 404)


def test_wrong_method_is_json_405(panel, server):
    _, key = server
    response = http_request(panel, "GET", "/api/agent/metrics", headers=bearer(key))
    assert_error(response, 405)


def test_memory_total_of_a_real_machine_round_trips(panel, server):
    """Big integers survive both databases exactly."""
    srv, key = server
    total = psutil.virtual_memory().total
    document = sample(srv.id, memory={"total": total, "used": 2**62})
    assert post(panel, "/api/agent/metrics", key, document).status == 200
    row = models.Metric.get()
    assert row.memory_total == total and row.memory_used == 2**62


def test_agent_answers_carry_no_browser_only_headers(panel, server):
    """Every byte counts on a metered customer link; these answers are never rendered."""
    _, key = server
    response = http_request(panel, "GET", "/api/agent/config", headers=bearer(key))
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in response.headers
