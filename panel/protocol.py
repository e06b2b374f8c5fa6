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
MAX_TOP = 20
MAX_BATCH = 100

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
                   "(2026-11-30T01:52:00Z) or seconds since the Unix epoch. At most a day "
                   "ahead of the panel's clock.",
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
        "bootTime": {"type": "number", "minimum": 0, "maximum": 1e11,
                     "description": "When the server booted, seconds since the Unix epoch "
                                    "(optional; the dashboard shows uptime from it)."},
    },
}

RATE = {"type": "number", "minimum": 0, "maximum": 1e15}


def _rates(description, *names):
    return {name: _described(RATE, description) for name in names}


CPU = {
    "type": "object",
    "required": ["usage"],
    "properties": {
        "usage": _described(PERCENT, "Busy share of all cores since the previous sample, 0-100."),
        "iowait": _described(PERCENT, "Share of time idle waiting for I/O (Linux)."),
        "steal": _described(PERCENT, "Share of time taken by the hypervisor (Linux VMs)."),
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
        "swapTotal": _described(BYTES, "Swap space, bytes."),
        "swapUsed": _described(BYTES, "Swap in use, bytes."),
    },
}

MOUNT = {
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
}

DISK_IO = {
    "type": "object",
    "required": ["device"],
    "properties": {
        "device": {"type": "string", "minLength": 1, "maxLength": 256},
        **_rates("Per second since the previous sample.", "readBytesPerSec", "writeBytesPerSec",
                 "readOpsPerSec", "writeOpsPerSec"),
    },
}

DISK = {
    "type": "object",
    "properties": {
        "mounts": {"type": "array", "maxItems": MAX_DISKS, "items": MOUNT,
                   "description": "One entry per mounted file system."},
        "io": {"type": "array", "maxItems": MAX_DISKS, "items": DISK_IO,
               "description": "One entry per block device; absent on the first sample."},
    },
}

INTERFACE = {
    "type": "object",
    "required": ["interface", "bytesSent", "bytesRecv"],
    "properties": {
        "interface": {"type": "string", "minLength": 1, "maxLength": 256},
        "bytesSent": _described(BYTES, "Since boot."),
        "bytesRecv": _described(BYTES, "Since boot."),
        "packetsSent": COUNT,
        "packetsRecv": COUNT,
        **_rates("Per second since the previous sample; absent on the first.",
                 "bytesSentPerSec", "bytesRecvPerSec", "packetsSentPerSec", "packetsRecvPerSec",
                 "errorsInPerSec", "errorsOutPerSec", "dropsInPerSec", "dropsOutPerSec"),
    },
}

NETWORK = {
    "type": "object",
    "properties": {
        "interfaces": {"type": "array", "maxItems": MAX_INTERFACES, "items": INTERFACE,
                       "description": "One entry per network interface."},
    },
}

PROCESS = {
    "type": "object",
    "required": ["pid", "name"],
    "properties": {
        "pid": {"type": "integer", "minimum": 0, "maximum": 2**32},
        "name": {"type": "string", "maxLength": 256,
                 "description": "Executable name only: never the command line."},
        "user": {"type": "string", "maxLength": 256},
        "cpuPercent": {"type": "number", "minimum": 0, "maximum": 100_000,
                       "description": "Share of one core, as top shows it."},
        "rss": _described(BYTES, "Resident memory, bytes."),
    },
}

PROCESSES = {
    "type": "object",
    "properties": {
        "total": COUNT,
        "running": COUNT,
        "topCpu": {"type": "array", "maxItems": MAX_TOP, "items": PROCESS},
        "topMemory": {"type": "array", "maxItems": MAX_TOP, "items": PROCESS},
    },
}

SERVICES = {
    "type": "object",
    "description": "One entry per service found on the server.",
    "properties": {
        "postgresql": {"type": "object", "properties": {
            "connections": COUNT,
            "databases": {"type": "array", "maxItems": 1000, "items": {
                "type": "object", "required": ["name", "size"], "properties": {
                    "name": {"type": "string", "maxLength": 256}, "size": BYTES}}},
        }},
        "nginx": {"type": "object", "properties": {
            "activeConnections": COUNT, "reading": COUNT, "writing": COUNT, "waiting": COUNT,
            "requestsPerSec": RATE,
        }},
        "apache": {"type": "object", "properties": {
            "busyWorkers": COUNT, "idleWorkers": COUNT, "requestsPerSec": RATE,
        }},
        "redis": {"type": "object", "properties": {
            "usedMemory": BYTES, "connectedClients": COUNT, "opsPerSec": RATE,
        }},
        "docker": {"type": "object", "properties": {
            "containersTotal": COUNT, "containersRunning": COUNT, "images": COUNT,
        }},
    },
}

METRICS = {
    "type": "object",
    "description": "One section per collector; a disabled, absent or failed collector's "
                   "section is left out.",
    "properties": {"cpu": CPU, "memory": MEMORY, "disk": DISK, "network": NETWORK,
                   "processes": PROCESSES, "services": SERVICES},
}

UNAVAILABLE = {
    "type": "object", "maxProperties": 64,
    "description": "Collectors that failed in this sample, with the reason (e.g. permission "
                   "denied, timeout).",
    "additionalProperties": {"type": "string", "maxLength": 300},
}

SAMPLE = {
    "type": "object",
    "required": ["timestamp", "metrics"],
    "properties": {"timestamp": TIMESTAMP, "metrics": METRICS, "unavailable": UNAVAILABLE},
}

METRICS_BODY = {
    "type": "object",
    "required": ["serverId", "timestamp", "metrics"],
    "properties": {"serverId": SERVER_ID, **SAMPLE["properties"]},
}

BATCH_BODY = {
    "type": "object",
    "required": ["serverId", "samples"],
    "description": "Several samples in one request (replay after an outage), oldest first. "
                   "Validated as a whole: one bad sample refuses the request, naming its index.",
    "properties": {
        "serverId": SERVER_ID,
        "samples": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": SAMPLE},
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
    "MetricsBatchRequest": BATCH_BODY,
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


def _post(summary, schema_names, ok):
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in schema_names.split("|")]
    return {"post": {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": refs[0] if len(refs) == 1 else {"oneOf": refs}}}},
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
                "Submit one sample, or a batch of buffered samples",
                "MetricsRequest|MetricsBatchRequest",
                _ok("Stored; a sample already stored (same timestamp) is not stored again", {
                    "received": {"type": "boolean"},
                    "stored": {"type": "integer", "description": "Samples newly stored."},
                    "duplicates": {"type": "integer",
                                   "description": "Samples that were already stored."},
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
