"""The request validator, checked against the jsonschema package and the published documents."""
import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest

from panel import protocol
from panel.validation import ValidationError, validate

ROOT = Path(__file__).resolve().parents[2]


def good_sample():
    return {
        "serverId": 1,
        "timestamp": "2026-11-30T01:52:00Z",
        "metrics": {
            "cpu": {"usage": 12.5, "load1": 0.5, "load5": 0.4, "load15": 0.3, "count": 2},
            "memory": {"total": 8 << 30, "used": 2 << 30, "free": 5 << 30,
                       "available": 6 << 30, "cached": 1 << 30},
            "disk": [{"mountpoint": "/", "device": "/dev/vda", "fstype": "ext4",
                      "total": 100, "used": 40, "free": 60, "percent": 40.0}],
            "network": [{"interface": "eth0", "bytesSent": 1, "bytesRecv": 2,
                         "packetsSent": 3, "packetsRecv": 4}],
        },
    }


def mutate(path, value):
    """A copy of the good sample with the field at `path` set to value (or deleted)."""
    doc = copy.deepcopy(good_sample())
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


DELETE = object()

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
    (("metrics", "disk"), {"mountpoint": "/"}, "metrics.disk"),
    (("metrics", "disk", 0, "mountpoint"), "", "metrics.disk[0].mountpoint"),
    (("metrics", "disk", 0, "mountpoint"), "/" * 4097, "metrics.disk[0].mountpoint"),
    (("metrics", "disk", 0, "free"), DELETE, "metrics.disk[0].free"),
    (("metrics", "network", 0, "interface"), 7, "metrics.network[0].interface"),
    (("metrics", "network", 0, "bytesRecv"), -5, "metrics.network[0].bytesRecv"),
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
    disk = good_sample()["metrics"]["disk"][0]
    doc = mutate(("metrics", "disk"), [disk] * (protocol.MAX_DISKS + 1))
    with pytest.raises(ValidationError) as caught:
        validate(protocol.METRICS_BODY, doc)
    assert caught.value.field == "metrics.disk"


@pytest.mark.parametrize("text", ["web\x00evil", "\ud800"])
def test_strings_postgresql_cannot_store_are_refused(text):
    doc = mutate(("metrics", "disk", 0, "mountpoint"), text)
    with pytest.raises(ValidationError) as caught:
        validate(protocol.METRICS_BODY, doc)
    assert caught.value.field == "metrics.disk[0].mountpoint"


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


def test_protocol_doc_lists_every_metrics_field():
    text = (ROOT / "docs" / "protocol.md").read_text()
    sections = protocol.METRICS_BODY["properties"]["metrics"]["properties"]
    for section, schema in sections.items():
        fields = schema.get("properties") or schema["items"]["properties"]
        for field in fields:
            assert f"`{field}`" in text, f"docs/protocol.md does not describe {section}.{field}"
