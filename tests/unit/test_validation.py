"""The request validator, checked against the jsonschema package and the published documents."""
import copy
import datetime
import json
import re
from pathlib import Path

import jsonschema
import pytest

from panel import ingest, protocol
from panel.validation import ValidationError, validate
from tests.conftest import DELETE, with_field

ROOT = Path(__file__).resolve().parents[2]


def good_sample():
    return {
        "serverId": 1,
        "timestamp": "2026-11-30T01:52:00Z",
        "metrics": {
            "cpu": {"usage": 12.5, "load1": 0.5, "load5": 0.4, "load15": 0.3, "count": 2},
            "memory": {"total": 8 << 30, "used": 2 << 30, "free": 5 << 30,
                       "available": 6 << 30, "cached": 1 << 30},
            "disk": {"mounts": [{"mountpoint": "/", "device": "/dev/vda", "fstype": "ext4",
                                 "total": 100, "used": 40, "free": 60, "percent": 40.0}],
                     "io": [{"device": "vda", "readBytesPerSec": 10.5, "writeBytesPerSec": 0,
                             "readOpsPerSec": 1, "writeOpsPerSec": 0}]},
            "network": {"interfaces": [{"interface": "eth0", "bytesSent": 1, "bytesRecv": 2,
                                        "packetsSent": 3, "packetsRecv": 4,
                                        "bytesSentPerSec": 0.5, "dropsInPerSec": 0}]},
            "processes": {"total": 80, "running": 1,
                          "topCpu": [{"pid": 1, "name": "init", "user": "root",
                                      "cpuPercent": 0.5, "rss": 1024}],
                          "topMemory": []},
            "services": {"redis": {"usedMemory": 1024, "connectedClients": 1},
                         "postgresql": {"connections": 3,
                                        "databases": [{"name": "app", "size": 8192}]}},
        },
        "unavailable": {"docker": "PermissionError: denied"},
    }


def mutate(path, value):
    """A copy of the good sample with the field at `path` set to value (or deleted)."""
    return with_field(copy.deepcopy(good_sample()), path, value)

BAD_SAMPLES = [
    (("serverId",), DELETE, "serverId"),
    (("serverId",), "1", "serverId"),
    (("serverId",), True, "serverId"),
    (("serverId",), 0, "serverId"),
    (("serverId",), 2**31, "serverId"),
    (("timestamp",), None, "timestamp"),
    (("metrics",), [], "metrics"),
    (("metrics", "cpu", "usage"), 101, "metrics.cpu.usage"),
    (("metrics", "cpu", "usage"), -0.1, "metrics.cpu.usage"),
    (("metrics", "cpu", "usage"), "12", "metrics.cpu.usage"),
    (("metrics", "cpu", "usage"), DELETE, "metrics.cpu.usage"),
    (("metrics", "memory", "total"), -1, "metrics.memory.total"),
    (("metrics", "memory", "total"), 2**63, "metrics.memory.total"),
    (("metrics", "memory", "used"), 1.5, "metrics.memory.used"),
    (("metrics", "disk"), [{"mountpoint": "/"}], "metrics.disk"),
    (("metrics", "disk", "mounts", 0, "mountpoint"), "", "metrics.disk.mounts[0].mountpoint"),
    (("metrics", "disk", "mounts", 0, "mountpoint"), "/" * 4097,
     "metrics.disk.mounts[0].mountpoint"),
    (("metrics", "disk", "mounts", 0, "free"), DELETE, "metrics.disk.mounts[0].free"),
    (("metrics", "disk", "io", 0, "readBytesPerSec"), -1, "metrics.disk.io[0].readBytesPerSec"),
    (("metrics", "network", "interfaces", 0, "interface"), 7,
     "metrics.network.interfaces[0].interface"),
    (("metrics", "network", "interfaces", 0, "bytesRecv"), -5,
     "metrics.network.interfaces[0].bytesRecv"),
    (("metrics", "processes", "topCpu", 0, "name"), None, "metrics.processes.topCpu[0].name"),
    (("metrics", "processes", "topCpu", 0, "pid"), DELETE, "metrics.processes.topCpu[0].pid"),
    (("metrics", "services", "redis", "usedMemory"), -1, "metrics.services.redis.usedMemory"),
    (("metrics", "services", "postgresql", "databases", 0, "size"), "big",
     "metrics.services.postgresql.databases[0].size"),
    (("unavailable", "docker"), 5, "unavailable.docker"),
]


def test_good_sample_is_accepted_by_ours_and_by_jsonschema():
    validate(protocol.METRICS_BODY, good_sample())
    jsonschema.Draft202012Validator(protocol.METRICS_BODY).validate(good_sample())


@pytest.mark.parametrize("path,value,field", BAD_SAMPLES)
def test_bad_sample_names_its_field_and_jsonschema_agrees(path, value, field):
    doc = mutate(path, value)
    with pytest.raises(ValidationError) as caught:
        validate(protocol.METRICS_BODY, doc)
    assert caught.value.field == field
    assert not jsonschema.Draft202012Validator(protocol.METRICS_BODY).is_valid(doc)


def test_integral_float_counts_as_integer_as_in_json_schema():
    doc = mutate(("metrics", "memory", "total"), 1024.0)
    validate(protocol.METRICS_BODY, doc)
    assert jsonschema.Draft202012Validator(protocol.METRICS_BODY).is_valid(doc)


def test_too_many_disks_is_refused():
    disk = good_sample()["metrics"]["disk"]["mounts"][0]
    doc = mutate(("metrics", "disk", "mounts"), [disk] * (protocol.MAX_DISKS + 1))
    with pytest.raises(ValidationError) as caught:
        validate(protocol.METRICS_BODY, doc)
    assert caught.value.field == "metrics.disk.mounts"


def test_batch_names_the_index_of_the_bad_sample():
    good = {k: v for k, v in good_sample().items() if k != "serverId"}
    bad = copy.deepcopy(good)
    bad["metrics"]["cpu"]["usage"] = 300
    batch = {"serverId": 1, "samples": [good, good, bad]}
    with pytest.raises(ValidationError) as caught:
        validate(protocol.BATCH_BODY, batch)
    assert caught.value.field == "samples[2].metrics.cpu.usage"
    batch["samples"] = [good] * (protocol.MAX_BATCH + 1)
    with pytest.raises(ValidationError):
        validate(protocol.BATCH_BODY, batch)
    assert not jsonschema.Draft202012Validator(protocol.BATCH_BODY).is_valid(batch)


@pytest.mark.parametrize("text", ["web\x00evil", "\ud800"])
def test_strings_postgresql_cannot_store_are_refused(text):
    doc = mutate(("metrics", "disk", "mounts", 0, "mountpoint"), text)
    with pytest.raises(ValidationError) as caught:
        validate(protocol.METRICS_BODY, doc)
    assert caught.value.field == "metrics.disk.mounts[0].mountpoint"


def test_unknown_fields_are_ignored_for_forward_compatibility():
    doc = good_sample()
    doc["metrics"]["gpu"] = {"usage": 3}
    doc["metrics"]["cpu"]["frequency"] = 2400
    validate(protocol.METRICS_BODY, doc)


@pytest.mark.parametrize("name", sorted(protocol.REQUEST_SCHEMAS))
def test_every_published_schema_is_valid_json_schema(name):
    jsonschema.Draft202012Validator.check_schema(protocol.REQUEST_SCHEMAS[name])


def test_openapi_document_publishes_the_schemas_the_code_validates_with():
    document = protocol.openapi_document()
    assert document["openapi"].startswith("3.1")
    assert document["components"]["schemas"]["MetricsRequest"] is protocol.METRICS_BODY
    for path in ("/api/agent/register", "/api/agent/metrics", "/api/agent/heartbeat",
                 "/api/agent/config"):
        assert path in document["paths"]
    json.dumps(document)  # serialisable as served


def _json_blocks(markdown):
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", markdown, re.S)]


def test_protocol_doc_examples_validate():
    """Every JSON request example in docs/protocol.md is accepted as written."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    examples = {}
    for match in re.finditer(r"<!-- example: (\w+) -->\s*```json\n(.*?)```", text, re.S):
        examples[match.group(1)] = json.loads(match.group(2))
    assert set(examples) >= {"RegisterRequest", "MetricsRequest", "HeartbeatRequest"}
    for name, example in examples.items():
        if name in protocol.REQUEST_SCHEMAS:
            validate(protocol.REQUEST_SCHEMAS[name], example)


# ===== The published schema says what the validator enforces ===================================

def _published_verdict(schema, document):
    return jsonschema.Draft202012Validator(schema).is_valid(document)


TEXT_PATHS = [
    ("metrics", "disk", "mounts", 0, "mountpoint"),
    ("metrics", "processes", "topCpu", 0, "name"),
    ("metrics", "services", "postgresql", "databases", 0, "name"),
    ("unavailable", "docker"),
]


@pytest.mark.parametrize("path", TEXT_PATHS)
def test_a_nul_the_panel_refuses_is_refused_by_the_published_schema_too(path):
    doc = mutate(path, "web\x00evil")
    with pytest.raises(ValidationError):
        validate(protocol.METRICS_BODY, doc)
    assert not _published_verdict(protocol.METRICS_BODY, doc)
    emoji = mutate(path, "disk \U0001f4be")  # a surrogate pair in JSON: one character, fine
    validate(protocol.METRICS_BODY, emoji)
    assert _published_verdict(protocol.METRICS_BODY, emoji)


@pytest.mark.parametrize("path", TEXT_PATHS)
def test_a_lone_surrogate_is_refused_as_the_document_says(path):
    with pytest.raises(ValidationError):
        validate(protocol.METRICS_BODY, mutate(path, "\ud800"))
    assert "lone surrogate" in protocol.openapi_document()["info"]["description"]


def test_an_unavailable_collector_name_is_bounded_in_the_schema_as_in_the_validator():
    for name in ("x" * 257, "dock\x00er"):
        doc = mutate(("unavailable",), {name: "failed"})
        with pytest.raises(ValidationError):
            validate(protocol.METRICS_BODY, doc)
        assert not _published_verdict(protocol.METRICS_BODY, doc)


FAR_FUTURE = datetime.datetime.max - protocol.MAX_FUTURE  # now + MAX_FUTURE must not overflow


@pytest.mark.parametrize("value", [
    "2026-11-30T01:52:00Z", "2026-11-30T01:52:00.125Z", "2026-11-30T02:52:00.123456+01:00",
    "2026-11-30T01:52:00-00:00", "2000-01-01T00:00:00Z", "2024-02-29T23:59:59+23:59",
    946684800, 1796003520, 1796003520.5,
])
def test_a_timestamp_the_published_schema_allows_is_one_the_panel_reads(value):
    doc = mutate(("timestamp",), value)
    assert _published_verdict(protocol.METRICS_BODY, doc)
    validate(protocol.METRICS_BODY, doc)
    ingest.parse_timestamp(value, FAR_FUTURE)  # the window aside, which moves with the clock


@pytest.mark.parametrize("value", [
    "2026-11-30T01:52:00", "2026-11-30 01:52:00Z", "2026-11-30t01:52:00z",
    "2026-11-30T01:52:00.1234567Z", "2026-11-30T23:59:60Z", "2026-13-01T00:00:00Z",
    "2026-11-30T01:52Z", "20261130T015200Z", "2026-11-30T01:52:00Z\n", "yesterday",
    "\u0662\u0660\u0662\u0666-11-30T01:52:00Z",  # Arabic-Indic digits: \d would take them
    946684799, -1, 1e300, True,
])
def test_a_timestamp_the_panel_cannot_read_is_refused_by_the_published_schema(value):
    doc = mutate(("timestamp",), value)
    with pytest.raises(ValidationError):
        validate(protocol.METRICS_BODY, doc)
    assert not _published_verdict(protocol.METRICS_BODY, doc)


def test_an_impossible_date_is_refused_by_the_date_time_format():
    """The pattern lets 30 February through; `format: date-time` does not (jsonschema only
    checks formats with an extra package, so this one is ours alone)."""
    with pytest.raises(ValidationError) as caught:
        validate(protocol.METRICS_BODY, mutate(("timestamp",), "2026-02-30T00:00:00Z"))
    assert caught.value.field == "timestamp"
    assert protocol.TIMESTAMP["format"] == "date-time"


def test_the_year_2000_floor_is_in_the_schema_and_in_the_docs():
    assert datetime.datetime(1970, 1, 1) + datetime.timedelta(
        seconds=protocol.TIMESTAMP["minimum"]) == protocol.EARLIEST
    text = (ROOT / "docs" / "protocol.md").read_text()
    assert f"year {protocol.EARLIEST.year}" in text


def test_a_body_with_samples_is_only_the_batch_form_in_the_schema_as_in_the_panel():
    doc = dict(good_sample(), samples="not a list")
    assert not _published_verdict(protocol.METRICS_BODY, doc)


AGENT_OPERATIONS = [("/api/agent/register", "post"), ("/api/agent/metrics", "post"),
                    ("/api/agent/heartbeat", "post"), ("/api/agent/config", "get")]


@pytest.mark.parametrize("path,method", AGENT_OPERATIONS)
def test_every_agent_operation_documents_the_refusals_it_can_answer(path, method):
    responses = protocol.openapi_document()["paths"][path][method]["responses"]
    expected = {"200", "401", "403", "429", "503"}
    if method == "post":
        expected |= {"400", "413", "415", "422"}
    assert set(responses) == expected
    assert "Retry-After" in responses["429"]["headers"]
    assert "Retry-After" in responses["503"]["headers"]
    assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True


@pytest.mark.parametrize("path,method", AGENT_OPERATIONS)
def test_every_success_documents_the_rotated_key_it_may_carry(path, method):
    ok = protocol.openapi_document()["paths"][path][method]["responses"]["200"]
    schema = ok["content"]["application/json"]["schema"]
    assert "newApiKey" in schema["properties"] and "newApiKey" not in schema["required"]


def _string_schemas(schema, path="body"):
    if schema.get("type") == "string":
        yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from _string_schemas(sub, f"{path}.{key}")
    for keyword in ("items", "additionalProperties", "propertyNames"):
        if isinstance(schema.get(keyword), dict):
            yield from _string_schemas(schema[keyword], f"{path}<{keyword}>")


@pytest.mark.parametrize("name", sorted(protocol.REQUEST_SCHEMAS))
def test_every_text_field_publishes_the_no_nul_rule(name):
    """A new text field that forgot it would be refused by the validator for a NUL the
    published schema allows: a generated client's valid request, rejected."""
    for path, schema in _string_schemas(protocol.REQUEST_SCHEMAS[name]):
        assert schema.get("pattern") == protocol.PLAIN_TEXT, path
        assert "maxLength" in schema, path


def test_the_timestamp_bounds_are_times_python_can_hold():
    """The schema's epoch maximum once rounded up to one second past datetime.max."""
    epoch = datetime.datetime(1970, 1, 1)
    latest = epoch + datetime.timedelta(seconds=protocol.TIMESTAMP["maximum"])
    assert latest.year == 9999
    with pytest.raises(OverflowError):
        epoch + datetime.timedelta(seconds=protocol.TIMESTAMP["maximum"] + 1)
