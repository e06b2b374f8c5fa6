"""The agent wire protocol: JSON Schemas of every request body, and the OpenAPI 3 document built
from them. `docs/protocol.md` explains each field; tests check that its example validates here.

Field names are camelCase on the wire; units are raw (bytes, seconds, percent 0-100).
Unknown fields are ignored rather than refused, so agents newer than the panel keep reporting
during a staggered upgrade; every known field is checked strictly.
"""
from . import __version__

MAX_INT64 = 2**63 - 1
MAX_SERVER_ID = 2**31 - 1
MAX_DISKS = 256
MAX_INTERFACES = 512

BYTES = {"type": "integer", "minimum": 0, "maximum": MAX_INT64}
COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_INT64}
PERCENT = {"type": "number", "minimum": 0, "maximum": 100}
LOAD = {"type": "number", "minimum": 0, "maximum": 1_000_000}


def _described(schema, description):
    return dict(schema, description=description)


SERVER_ID = {"type": "integer", "minimum": 1, "maximum": MAX_SERVER_ID,
             "description": "The id the panel returned from /api/agent/register."}
TIMESTAMP = {
    "type": ["string", "number"], "maxLength": 40,
    "description": "When the sample was taken: ISO 8601 with a zone "
                   "(2026-11-30T01:52:00Z) or seconds since the Unix epoch. At most 5 minutes "
                   "in the future by the panel's clock.",
}

REGISTER = {
    "type": "object",
    "required": ["hostname", "os", "arch", "version"],
    "properties": {
        "hostname": {"type": "string", "minLength": 1, "maxLength": 255},
        "os": {"type": "string", "minLength": 1, "maxLength": 50,
               "description": "Operating system, e.g. 'Linux 6.1.0-28-amd64'."},
        "arch": {"type": "string", "minLength": 1, "maxLength": 50, "description": "e.g. x86_64"},
        "version": {"type": "string", "minLength": 1, "maxLength": 20,
                    "description": "agent.py's version"},
    },
}

CPU = {
    "type": "object",
    "required": ["usage"],
    "properties": {
        "usage": _described(PERCENT, "Busy share of all cores since the previous sample, 0-100."),
        "load1": _described(LOAD, "Load average over 1 minute."),
        "load5": _described(LOAD, "Load average over 5 minutes."),
        "load15": _described(LOAD, "Load average over 15 minutes."),
        "count": {"type": "integer", "minimum": 1, "maximum": 1_000_000,
                  "description": "Logical CPUs."},
    },
}

MEMORY = {
    "type": "object",
    "required": ["total", "used"],
    "properties": {
        "total": _described(BYTES, "Physical memory, bytes."),
        "used": _described(BYTES, "Used memory as psutil counts it, bytes."),
        "free": _described(BYTES, "Unused memory, bytes."),
        "available": _described(BYTES, "Memory that can be given to programs without swapping."),
        "cached": _described(BYTES, "Page cache, bytes (0 where the OS has no such figure)."),
    },
}

DISK = {
    "type": "array", "maxItems": MAX_DISKS,
    "description": "One entry per mounted file system.",
    "items": {
        "type": "object",
        "required": ["mountpoint", "total", "used", "free"],
        "properties": {
            "mountpoint": {"type": "string", "minLength": 1, "maxLength": 4096},
            "device": {"type": "string", "maxLength": 4096},
            "fstype": {"type": "string", "maxLength": 64},
            "total": _described(BYTES, "Size, bytes."),
            "used": _described(BYTES, "Used, bytes."),
            "free": _described(BYTES, "Free for unprivileged users, bytes."),
            "percent": PERCENT,
        },
    },
}

NETWORK = {
    "type": "array", "maxItems": MAX_INTERFACES,
    "description": "One entry per network interface; counters since boot.",
    "items": {
        "type": "object",
        "required": ["interface", "bytesSent", "bytesRecv"],
        "properties": {
            "interface": {"type": "string", "minLength": 1, "maxLength": 256},
            "bytesSent": BYTES,
            "bytesRecv": BYTES,
            "packetsSent": COUNT,
            "packetsRecv": COUNT,
        },
    },
}

METRICS_BODY = {
    "type": "object",
    "required": ["serverId", "timestamp", "metrics"],
    "properties": {
        "serverId": SERVER_ID,
        "timestamp": TIMESTAMP,
        "metrics": {
            "type": "object",
            "description": "One section per collector; a disabled or failed collector's "
                           "section is absent.",
            "properties": {"cpu": CPU, "memory": MEMORY, "disk": DISK, "network": NETWORK},
        },
    },
}

HEARTBEAT = {
    "type": "object",
    "required": ["serverId", "timestamp"],
    "properties": {"serverId": SERVER_ID, "timestamp": TIMESTAMP},
}

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What is wrong, for a person to read."},
        "field": {"type": "string", "description": "The offending field, e.g. metrics.cpu.usage"},
    },
}

REQUEST_SCHEMAS = {
    "RegisterRequest": REGISTER,
    "MetricsRequest": METRICS_BODY,
    "HeartbeatRequest": HEARTBEAT,
}


def _ok(description, properties):
    return {"200": {"description": description, "content": {"application/json": {"schema": {
        "type": "object", "required": list(properties), "properties": properties}}}}}


def _errors(*statuses):
    meaning = {
        "400": "Body is not valid JSON (or not gzip when it says so).",
        "401": "Missing or rejected API key.",
        "403": "serverId is not this key's server.",
        "413": "Body larger than the panel accepts, before or after gzip.",
        "415": "Content-Type is not application/json.",
        "422": "JSON does not match the schema; `field` names the first problem.",
    }
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {s: {"description": meaning[s], "content": ref} for s in statuses}


def _post(summary, schema_name, ok):
    return {"post": {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{schema_name}"}}}},
        "responses": {**ok, **_errors("400", "401", "403", "413", "415", "422")},
    }}


def openapi_document():
    """OpenAPI 3.1 description of the agent API, from the schemas the code validates with."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "mPanel agent API", "version": __version__,
                 "description": "Agents push; the panel never connects to them. "
                                "Request bodies may be gzip-compressed (Content-Encoding: gzip)."},
        "security": [{"agentKey": []}],
        "paths": {
            "/api/agent/register": _post(
                "Register (or re-register) the agent of this key's server", "RegisterRequest",
                _ok("Registered", {"serverId": SERVER_ID, "registered": {"type": "boolean"}})),
            "/api/agent/metrics": _post(
                "Submit one sample", "MetricsRequest",
                _ok("Stored (or already stored: the same timestamp is kept once)", {
                    "received": {"type": "boolean"},
                    "nextReportIn": {"type": "integer",
                                     "description": "Seconds until the next report."}})),
            "/api/agent/heartbeat": _post(
                "Say the agent is alive between reports", "HeartbeatRequest",
                _ok("Noted", {"status": {"type": "string", "enum": ["ok"]}})),
            "/api/agent/config": {"get": {
                "summary": "What the panel wants this agent to do",
                "responses": {**_ok("Settings", {
                    "reportInterval": {"type": "integer", "description": "Seconds."},
                    "metricsEnabled": {"type": "array", "items": {"type": "string"}}}),
                    **_errors("401")},
            }},
        },
        "components": {
            "securitySchemes": {"agentKey": {"type": "http", "scheme": "bearer",
                                             "description": "agent_<key id>_<secret>"}},
            "schemas": {**REQUEST_SCHEMAS, "Error": ERROR},
        },
    }
