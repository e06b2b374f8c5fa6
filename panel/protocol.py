"""The agent wire protocol: JSON Schemas of every request body, and the OpenAPI 3 document built
from them. Every field carries its description here: the field tables of `docs/protocol.md` are
generated from these schemas (`python -m panel.docs`), and tests check that its examples
validate here.

Field names are camelCase on the wire; units are raw (bytes, seconds, percent 0-100).
Unknown fields are ignored rather than refused, so agents newer than the panel keep reporting
during a staggered upgrade; every known field is checked strictly.

A field the panel keeps in a column takes its bounds from that column (`models.column_max`,
the models' `max_length`), so the schema never admits a value the database would refuse. (Were
one to slip through, the writer answers 422 rather than 503 "retry", which would stall the
agent's buffer behind it for good; that is the last line of defence, not the rule.)
"""
import datetime

from . import __version__, charts, exports, figures, models
from .errors import NO_NUL_PATTERN

# Byte counts and counters are kept in BIGINT columns (or the JSON detail, which holds as much).
MAX_INT64 = models.column_max(models.Metric.memory_total)
MAX_DISKS = 256
MAX_INTERFACES = 512
MAX_TOP = 20
MAX_BATCH = 100

# Sample times: a sanity floor (a server whose clock was never set says 1970), and how far
# ahead of the panel's clock a sample may be. A clock ahead by up to a day is a wrong time zone
# or a hand-set clock, and its samples are kept (and the admin told, docs/protocol.md "Clocks"):
# refusing them would make the agent drop them for good. A day also stays inside the daily
# partitions PostgreSQL has made ahead (rollups.ensure_partitions). The other bound, the
# panel's retention, is relative to now too: JSON Schema cannot say either, so the
# descriptions do.
EARLIEST = datetime.datetime(2000, 1, 1)
MAX_FUTURE = datetime.timedelta(days=1)
_EPOCH = datetime.datetime(1970, 1, 1)
# RFC 3339 date-time with a zone, narrowed to what Python's datetime.fromisoformat reads the
# same way: no leap second (60), no lower-case t/z, at most 6 fraction digits (microseconds).
# [0-9], not \d, which in Python takes other scripts' digits too; `$(?!\n)` because Python's
# `$` also matches before a final newline (ECMA's does not; the lookahead makes them agree).
RFC3339 = (r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
           r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
           r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$(?!\n)")
# Every text field: PostgreSQL text cannot hold NUL. (Nor a lone surrogate, which a JSON \ud800
# escape can carry: that is refused too, as I-JSON (RFC 7493) does, and the document's
# description says so. A pattern could say it, `[^\u0000\ud800-\udfff]`, but Schemathesis
# 4.32 reads such a class wrongly and sends NUL: the schema would mislead generated clients.)
PLAIN_TEXT = NO_NUL_PATTERN

BYTES = {"type": "integer", "minimum": 0, "maximum": MAX_INT64}
COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_INT64}
PERCENT = {"type": "number", "minimum": 0, "maximum": 100}
LOAD = {"type": "number", "minimum": 0, "maximum": 1_000_000}


def _described(schema, description):
    return dict(schema, description=description)


def _text(max_length, min_length=0, description=None):
    """A text field of at most `max_length` characters (a column's max_length where stored)."""
    schema = {"type": "string", "maxLength": max_length, "pattern": PLAIN_TEXT}
    if min_length:
        schema["minLength"] = min_length
    return _described(schema, description) if description else schema


def _count_in(field, description):
    """A count stored in `field`'s column: bounded by what that column holds."""
    return {"type": "integer", "minimum": 0, "maximum": models.column_max(field),
            "description": description}


SERVER_ID = {"type": "integer", "minimum": 1, "maximum": models.MAX_ID,
             "description": "The id the panel returned from /api/agent/register: the key's own "
                            "server (another server's id is refused with 403)."}
TIMESTAMP = {
    "type": ["string", "number"],
    "format": "date-time", "pattern": RFC3339, "maxLength": 32,
    "minimum": int((EARLIEST - _EPOCH).total_seconds()),
    "maximum": (datetime.datetime.max - _EPOCH) // datetime.timedelta(seconds=1),
    "description": "When the sample was taken: an RFC 3339 date-time with a zone "
                   "(2026-11-30T01:52:00Z, 2026-11-30T02:52:00.125+01:00; upper-case T and Z, "
                   "at most 6 fraction digits, no leap second) or seconds since the "
                   "Unix epoch. Not before the year 2000; at most a day ahead of the "
                   "panel's clock; and for a sample, not older than the panel keeps samples "
                   "(its MPANEL_RETENTION_RAW_DAYS). Those two bounds move with the clock, so "
                   "this schema cannot carry them: outside them the answer is 422.",
}

REGISTER = {
    "type": "object",
    "required": ["hostname", "os", "arch", "version"],
    "properties": {
        "hostname": _text(models.Agent.hostname.max_length, 1,
                          "The server's host name (the agent's agent.hostname; auto-detect, "
                          "the default, asks the system)."),
        "os": _text(models.Agent.os.max_length, 1,
                    "Operating system and release, e.g. 'Linux 6.1.0-28-amd64'."),
        "arch": _text(models.Agent.arch.max_length, 1, "Machine architecture, e.g. x86_64."),
        "version": _text(models.Agent.agent_version.max_length, 1, "agent.py's version."),
        "bootTime": {"type": "number", "minimum": 0, "maximum": 1e11,
                     "description": "When the server booted, seconds since the Unix epoch "
                                    "(optional; the dashboard shows uptime from it)."},
        "autoUpdate": {"type": "boolean",
                       "description": "The agent's agent.autoUpdate: whether it takes the "
                                      "upgrades a rollout offers (optional; absent: no)."},
        "upgradeFailed": {
            "type": "object", "required": ["version"],
            "description": "The agent's last upgrade failed and its previous agent.py runs "
                           "again (optional; sent while that is the latest upgrade).",
            "properties": {
                "version": _text(models.Rollout.version.max_length, 0,
                                 "The version it could not run."),
                "reason": _text(200, 0, "Why, as the agent's fallback recorded it.")}},
    },
}

# Rates are per second since the previous sample, and absent on the first (docs/protocol.md).
RATE = {"type": "number", "minimum": 0, "maximum": 1e15}


_FIGURE_SCHEMAS = {"percent": PERCENT, "load": LOAD, "bytes": BYTES}
_UNIT_SUFFIX = {"percent": ", 0-100", "bytes": ", bytes"}


def _figure_fields(section):
    """The fields of `section` that figures take as sent, from the figure table: each bounded
    by its unit, described as the table describes it."""
    return {figure.keys[0]: _described(_FIGURE_SCHEMAS[figure.unit],
                                       figure.description[:1].upper() + figure.description[1:]
                                       + _UNIT_SUFFIX.get(figure.unit, "") + ".")
            for figure in figures.FIGURES if figure.section == section and figure.entries is None}


CPU = {
    "type": "object",
    "required": ["usage"],
    "properties": {
        **_figure_fields("cpu"),
        "count": {"type": "integer", "minimum": 1, "maximum": 1_000_000,
                  "description": "Logical CPUs."},
    },
}

MEMORY = {
    "type": "object",
    "required": ["total", "used"],
    "properties": _figure_fields("memory"),
}

# Degrees Celsius: agent.py sends -50 to 200 only (past that a sensor is unconnected or misread).
CELSIUS = {"type": "number", "minimum": -273.15, "maximum": 1000}

SENSOR = {
    "type": "object",
    "required": ["name", "current"],
    "properties": {
        "name": _text(200, 1, "The chip, as psutil names it after its hwmon driver: coretemp, "
                              "k10temp, acpitz, nvme, ..."),
        "label": _text(200, description="The reading's label on that chip, e.g. 'Package id "
                                        "0', 'Core 3', 'Tctl'; empty when the chip gives "
                                        "none."),
        "current": _described(CELSIUS, "Temperature now, °C."),
        "high": _described(CELSIUS, "The chip's high threshold, °C (when it has one)."),
        "critical": _described(CELSIUS, "The chip's critical threshold, °C (when it has one)."),
    },
}

SENSORS = {
    "type": "object",
    "description": "Temperatures, where the machine has sensors (psutil: Linux's hwmon); "
                   "absent elsewhere, virtual machines included.",
    "required": ["readings"],
    "properties": {
        "cpuMax": _described(CELSIUS, "The hottest CPU reading (package or core: coretemp, "
                                      "k10temp, zenpower, cpu_thermal, ...), °C; absent when "
                                      "no chip is a CPU's."),
        "readings": {"type": "array", "maxItems": 50, "items": SENSOR,
                     "description": "Every temperature reading, hottest first (agent.py sends "
                                    "at most 50)."},
        "omitted": _described(COUNT, "Readings left out past the 50 sent."),
    },
}

_INPUT_SCHEMAS = {"count": COUNT, "bytes": BYTES, "percent": PERCENT}


def _with_inputs(section, entries, schema):
    """`schema` of a list's entries plus the fields figures read from them alone (figures.Input),
    so a figure added to the table is accepted on the wire without an edit here."""
    extra = {put.key: _described(_INPUT_SCHEMAS[put.kind], put.description)
             for figure in figures.FIGURES if (figure.section, figure.entries) == (section, entries)
             for put in figure.inputs}
    return dict(schema, properties={**schema["properties"], **extra})


MOUNT = _with_inputs("disk", "mounts", {
    "type": "object",
    "required": ["mountpoint", "total", "used", "free"],
    "properties": {
        "mountpoint": _text(4096, 1, "Where it is mounted, e.g. /."),
        "device": _text(4096, description="The mounted device, e.g. /dev/vda1: the totals "
                                          "count each device once (bind mounts repeat one)."),
        "fstype": _text(64, description="File system type, e.g. ext4."),
        "total": _described(BYTES, "Size, bytes."),
        "used": _described(BYTES, "Used, bytes."),
        "free": _described(BYTES, "Free for unprivileged users, bytes."),
        "percent": _described(PERCENT, "Used share as the system reports it (psutil), 0-100."),
    },
})

DISK_IO = {
    "type": "object",
    "required": ["device"],
    "properties": {
        "device": _text(256, 1, "Kernel name, e.g. sda, nvme0n1, dm-0."),
        "readBytesPerSec": _described(RATE, "Bytes read per second."),
        "writeBytesPerSec": _described(RATE, "Bytes written per second."),
        "readOpsPerSec": _described(RATE, "Read operations per second."),
        "writeOpsPerSec": _described(RATE, "Write operations per second."),
    },
}

DISK = {
    "type": "object",
    "properties": {
        "mounts": {"type": "array", "maxItems": MAX_DISKS, "items": MOUNT,
                   "description": "One entry per real mounted file system (agent.py leaves "
                                  "out tmpfs, overlay, squashfs, proc, ..., and a bind mount "
                                  "of one already listed)."},
        "io": {"type": "array", "maxItems": MAX_DISKS, "items": DISK_IO,
               "description": "One entry per block device (agent.py leaves out RAM disks, "
                              "loop devices and partitions); empty on the first sample, which "
                              "has no rates."},
    },
}

INTERFACE = {
    "type": "object",
    "required": ["interface", "bytesSent", "bytesRecv"],
    "properties": {
        "interface": _text(256, 1, "Interface name, e.g. eth0."),
        "bytesSent": _described(BYTES, "Bytes sent since boot."),
        "bytesRecv": _described(BYTES, "Bytes received since boot."),
        "packetsSent": _described(COUNT, "Packets sent since boot."),
        "packetsRecv": _described(COUNT, "Packets received since boot."),
        "bytesSentPerSec": _described(RATE, "Bytes sent per second."),
        "bytesRecvPerSec": _described(RATE, "Bytes received per second."),
        "packetsSentPerSec": _described(RATE, "Packets sent per second."),
        "packetsRecvPerSec": _described(RATE, "Packets received per second."),
        "errorsInPerSec": _described(RATE, "Receive errors per second."),
        "errorsOutPerSec": _described(RATE, "Transmit errors per second."),
        "dropsInPerSec": _described(RATE, "Incoming packets dropped per second."),
        "dropsOutPerSec": _described(RATE, "Outgoing packets dropped per second."),
    },
}

NETWORK = {
    "type": "object",
    "properties": {
        "interfaces": {"type": "array", "maxItems": MAX_INTERFACES, "items": INTERFACE,
                       "description": "One entry per network interface (agent.py leaves "
                                      "out loopback, and interfaces that have carried no "
                                      "packet since boot)."},
    },
}

PROCESS = {
    "type": "object",
    "required": ["pid", "name"],
    "properties": {
        "pid": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1, "description": "Process id."},
        "name": _text(256, description="Executable name only: never the command line or the "
                                       "environment, which carry passwords and keys."),
        "user": _text(256, description="The user it runs as."),
        "cpuPercent": {"type": "number", "minimum": 0, "maximum": 100_000,
                       "description": "Share of one core since the previous sample, as top "
                                      "shows it (past 100 on several cores)."},
        "rss": _described(BYTES, "Resident memory, bytes."),
    },
}

PROCESSES = {
    "type": "object",
    "properties": {
        "total": _count_in(models.Metric.process_count, "Processes."),
        "running": _described(COUNT, "Processes in the running state."),
        "topCpu": {"type": "array", "maxItems": MAX_TOP, "items": PROCESS,
                   "description": "The processes that used the most CPU since the previous "
                                  "sample (agent.py sends 5; none on its very first sample)."},
        "topMemory": {"type": "array", "maxItems": MAX_TOP, "items": PROCESS,
                      "description": "The processes with the largest resident memory "
                                     "(agent.py sends 5)."},
    },
}

DATABASE = {
    "type": "object",
    "required": ["name", "size"],
    "properties": {
        "name": _text(256, description="Database name."),
        "size": _described(BYTES, "pg_database_size, bytes."),
    },
}


MYSQL_DATABASE = {
    "type": "object",
    "required": ["name", "size"],
    "properties": {
        "name": _text(200, description="Schema (database) name."),
        "size": _described(BYTES, "Data and indexes of its tables (information_schema.tables "
                                  "data_length + index_length), bytes."),
    },
}
SECONDS = {"type": "integer", "minimum": 0, "maximum": MAX_INT64}
ERRNO = {"type": "integer", "minimum": 1, "maximum": 65535}

# Service lists (watched processes, systemd units, PHP-FPM pools): at most this many entries, names this long
# (agent.py's WATCHED_LIMIT, NAME_LENGTH).
MAX_SERVICE_ENTRIES = 50
MAX_SERVICE_NAME = 200
OMITTED = _described(COUNT, "Entries past the first 50, left out.")

WATCHED_PROCESS = {
    "type": "object",
    "required": ["name", "count"],
    "properties": {
        "name": _text(MAX_SERVICE_NAME, 1, "The name as configured (services.watched.names): "
                                           "a process name or its first argument's base name."),
        "count": _described(COUNT, "Processes of that name running; 0 is a down."),
        "cpuPercent": {"type": "number", "minimum": 0, "maximum": 100_000,
                       "description": "Their summed share of one core since the previous "
                                      "sample, as top shows it (absent on the first sample)."},
        "rss": _described(BYTES, "Their summed resident memory, bytes."),
    },
}

_UNIT_STATE = 64
SYSTEMD_UNIT = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": _text(MAX_SERVICE_NAME, 1, "Unit name as configured (services.systemd.units) "
                                           "or as systemd lists a failed one, e.g. "
                                           "nginx.service."),
        "activeState": _text(_UNIT_STATE, description="ActiveState: active, reloading, "
                                                      "inactive, failed, activating, "
                                                      "deactivating."),
        "subState": _text(_UNIT_STATE, description="SubState, e.g. running, exited, dead, "
                                                   "failed."),
        "loadState": _text(_UNIT_STATE, description="LoadState: loaded, not-found, masked, "
                                                    "error, ..."),
    },
}


# A pool's workers and queue: far below what a BIGINT holds, so the figures summed over 50 pools
# (figures.py: fpm_active, fpm_listen_queue) always fit their column.
FPM_COUNT = {"type": "integer", "minimum": 0, "maximum": 10_000_000}
FPM_POOL = {
    "type": "object",
    "required": ["name", "source"],
    "properties": {
        "name": _text(MAX_SERVICE_NAME, 1, "The pool's name, its [section] in the FPM config."),
        "listen": _text(MAX_SERVICE_NAME, description="Its listen address: a unix socket "
                                                      "path or host:port (empty when only its "
                                                      "workers were seen)."),
        "source": dict(_text(9, 1, "Where the figures come from: \"status\", the pool's "
                                   "status page (pm.status_path, read over FastCGI); "
                                   "\"processes\", its worker processes counted (no status "
                                   "page, or it did not answer: active, idle and the counters "
                                   "are then unknown)."), enum=["status", "processes"]),
        "processManager": dict(_text(8, 1, "pm, how FPM sizes the pool: static, dynamic or "
                                           "ondemand."), enum=["static", "dynamic", "ondemand"]),
        "maxChildren": _described(FPM_COUNT, "pm.max_children: the most workers the pool may "
                                         "have."),
        "total": _described(FPM_COUNT, "Worker processes."),
        "active": _described(FPM_COUNT, "Workers serving a request (the one serving the agent's "
                                    "own status request left out)."),
        "idle": _described(FPM_COUNT, "Workers waiting for a request."),
        "listenQueue": _described(FPM_COUNT, "Connections waiting for a free worker (for a unix "
                                         "socket, from the kernel: FPM cannot see it there)."),
        "listenQueueLen": _described(FPM_COUNT, "The listen socket's backlog: how many may wait."),
        "maxListenQueue": _described(FPM_COUNT, "The most connections that waited at once since "
                                            "FPM started (TCP sockets only: FPM cannot see a "
                                            "unix socket's)."),
        "maxChildrenReached": _described(COUNT, "Times the pool hit pm.max_children since the "
                                                "previous sample (absent on the first)."),
        "slowRequests": _described(COUNT, "Requests past request_slowlog_timeout since the "
                                          "previous sample (absent on the first)."),
        "acceptedPerSec": _described(RATE, "Connections accepted per second."),
        "statusError": _text(MAX_SERVICE_NAME,
                             description="Why the status page was not read (timed out with "
                                         "every worker busy, permission denied, not the "
                                         "status path)."),
    },
}


def _service(description, **properties):
    return {"type": "object", "description": description, "properties": properties}


# A certificate's expiry: a GeneralizedTime may say any year from 1 to 9999.
_CERTIFICATE_TIME = {"type": "integer", "minimum": -62135596800, "maximum": 253402300799}

CERTIFICATE = {
    "type": "object",
    "required": ["name", "source"],
    "properties": {
        "name": _text(200, 1, "The first name the site serves (nginx server_name, Apache "
                              "ServerName, the endpoint's serverName); else the file or the "
                              "endpoint."),
        "source": _text(16, 1, "Where it was found: nginx or apache (a web server's config: "
                               "the file it serves), or endpoint (one listed in the agent's "
                               "config: what a local handshake is served)."),
        "file": _text(200, description="The certificate file, for nginx and Apache sites."),
        "endpoint": _text(200, description="host:port of the handshake, for endpoints."),
        "subject": _text(200, description="The subject's common name (CN)."),
        "names": {"type": "array", "maxItems": 20, "items": _text(200),
                  "description": "subjectAltName DNS names and IP addresses (agent.py sends at "
                                 "most 20; the match uses them all)."},
        "issuer": _text(200, description="The issuer's common name, else its organization."),
        "notAfter": _described(_CERTIFICATE_TIME, "When it expires, seconds since the Unix "
                                                  "epoch."),
        "daysLeft": {"type": "number", "minimum": -4_000_000, "maximum": 4_000_000,
                     "description": "Days until it expires, one decimal; negative once "
                                    "expired."},
        "matches": {"type": "boolean",
                    "description": "Every name the site serves is covered by it (RFC 6125: "
                                   "wildcards stand for one left-most label); absent when the "
                                   "site names no host (server_name _)."},
        "unmatched": {"type": "array", "maxItems": 20, "items": _text(200),
                      "description": "The names served that it does not cover."},
        "error": _text(200, description="Why there is no certificate to read: permission "
                                        "denied (with what the agent's user needs), no such "
                                        "file, handshake failed, not a local address."),
    },
}


SERVICES = {
    "type": "object",
    "description": "One entry per service found on the server.",
    "properties": {
        "postgresql": _service(
            "PostgreSQL, from pg_stat_activity and pg_database.",
            connections=_described(COUNT, "Sessions in pg_stat_activity."),
            databases={"type": "array", "maxItems": 1000, "items": DATABASE,
                       "description": "One entry per database the agent's role may connect "
                                      "to (templates left out); agent.py sends the 50 "
                                      "largest, read every few minutes, the last known sent "
                                      "between."},
            omitted=_described(COUNT, "Databases left out of databases past the 50 largest.")),
        "nginx": _service(
            "nginx, from its stub_status page.",
            activeConnections=_described(COUNT, "Open client connections, idle ones included."),
            reading=_described(COUNT, "Connections reading a request."),
            writing=_described(COUNT, "Connections writing a response."),
            waiting=_described(COUNT, "Idle keep-alive connections."),
            requestsPerSec=_described(RATE, "Requests per second.")),
        "apache": _service(
            "Apache, from mod_status (?auto).",
            busyWorkers=_described(COUNT, "Workers serving a request."),
            idleWorkers=_described(COUNT, "Idle workers."),
            requestsPerSec=_described(RATE, "Requests (Total Accesses) per second.")),
        "certificates": _service(
            "TLS certificates of the sites the server hosts, from the nginx and Apache configs "
            "(the files they serve) and the endpoints listed in the agent's config (a local "
            "handshake).",
            total=_described(COUNT, "Certificates found, those left out of the list included."),
            expired=_described(COUNT, "Certificates past their notAfter."),
            mismatched=_described(COUNT, "Certificates that do not cover every name their site "
                                         "serves."),
            unreadable=_described(COUNT, "Certificates that could not be read (see each one's "
                                         "error)."),
            minDaysLeft={"type": "number", "minimum": -4_000_000, "maximum": 4_000_000,
                         "description": "Fewest days left until one of them expires; negative "
                                        "once one has; absent when none could be read."},
            certificates={"type": "array", "maxItems": 50, "items": CERTIFICATE,
                          "description": "One entry per certificate, the most urgent first "
                                         "(unreadable ones, then by days left); agent.py sends "
                                         "at most 50."},
            omitted=_described(COUNT, "Certificates left out of the list past the 50 sent.")),
        "redis": _service(
            "Redis, from INFO.",
            usedMemory=_described(BYTES, "Memory Redis has allocated (used_memory), bytes."),
            connectedClients=_described(COUNT, "Client connections (connected_clients)."),
            opsPerSec=_described(RATE, "Commands per second (total_commands_processed).")),
        "mysql": _service(
            "MySQL or MariaDB, from SHOW GLOBAL STATUS, SHOW GLOBAL VARIABLES, SHOW REPLICA "
            "STATUS and information_schema. A server this agent saw up that stops answering "
            "is sent as {\"up\": false} alone.",
            up={"type": "boolean", "description": "Whether the server answered."},
            version=_text(200, description="The server's version variable, e.g. "
                                           "10.11.19-MariaDB-0+deb12u1."),
            uptime=_described(SECONDS, "Seconds since the server started (Uptime)."),
            connections=_described(COUNT, "Open client connections (Threads_connected)."),
            maxConnections=_described(COUNT, "The max_connections variable."),
            connectionsPercent=_described(PERCENT, "connections / maxConnections, 0-100."),
            threadsRunning=_described(COUNT, "Threads executing a statement "
                                             "(Threads_running)."),
            queriesPerSec=_described(RATE, "Statements clients sent per second (Questions)."),
            slowQueriesPerSec=_described(RATE, "Statements that took longer than "
                                               "long_query_time, per second (Slow_queries)."),
            abortedConnectsPerSec=_described(RATE, "Failed connection attempts per second "
                                                   "(Aborted_connects)."),
            abortedClientsPerSec=_described(RATE, "Connections dropped without a proper close, "
                                                  "per second (Aborted_clients)."),
            bufferPoolBytes=_described(BYTES, "InnoDB buffer pool size (pages total x page "
                                              "size), bytes."),
            bufferPoolUsedPercent=_described(PERCENT, "Share of the InnoDB buffer pool's pages "
                                                      "holding data, 0-100."),
            bufferPoolHitPercent=_described(PERCENT, "Share of InnoDB page reads served from "
                                                     "the buffer pool since the previous "
                                                     "sample (1 - reads / read requests), 0-100; "
                                                     "absent when there were none."),
            replicaIoRunning={"type": "boolean", "description": "On a replica only: whether "
                                                                "its IO thread is running."},
            replicaSqlRunning={"type": "boolean", "description": "On a replica only: whether "
                                                                 "its SQL thread is running."},
            replicaLag=_described(SECONDS, "On a replica only: seconds behind its primary "
                                           "(Seconds_Behind_Master); absent while the SQL "
                                           "thread is stopped."),
            replicaIoErrno=_described(ERRNO, "On a replica only: the IO thread's last error "
                                             "number, when it has one."),
            replicaSqlErrno=_described(ERRNO, "On a replica only: the SQL thread's last error "
                                              "number, when it has one."),
            databases={"type": "array", "maxItems": 50, "items": MYSQL_DATABASE,
                       "description": "The largest schemas the agent's user can see (system "
                                      "schemas left out), at most 50; read every few minutes, "
                                      "the last known sent between."},
            omitted=_described(COUNT, "Schemas left out of databases past the 50 largest.")),
        "mailqueue": _service(
            "The mail queue of Postfix or Exim, counted from its spool folders (never a "
            "sender, recipient or content).",
            mta=dict(_text(16, 1, "The mail server whose queue this is: postfix or exim."),
                     enum=["postfix", "exim"]),
            total=_described(COUNT, "Messages in the queue (Postfix: all five queues)."),
            active=_described(COUNT, "Postfix: messages in the active queue (being delivered)."),
            deferred=_described(COUNT, "Postfix: messages in the deferred queue (a delivery "
                                       "failed and will be retried)."),
            hold=_described(COUNT, "Postfix: messages on hold (held by the admin or a rule)."),
            incoming=_described(COUNT, "Postfix: messages in the incoming queue (arrived, not "
                                       "yet taken by the queue manager)."),
            maildrop=_described(COUNT, "Postfix: messages in maildrop (submitted locally, not "
                                       "yet picked up)."),
            frozen=_described(COUNT, "Exim: frozen messages (no more delivery attempts until "
                                     "thawed)."),
            oldestAge=_described(COUNT, "Seconds since the oldest queued message arrived; "
                                        "absent when the queue is empty."),
            truncated={"type": "boolean",
                       "description": "Present (true) when the count stopped at 100,000 "
                                      "messages or 2 seconds: the counts are lower bounds."}),
        "watched": _service(
            "Processes the admin named (services.watched.names), each whether running or not.",
            processes={"type": "array", "maxItems": MAX_SERVICE_ENTRIES,
                       "items": WATCHED_PROCESS,
                       "description": "One entry per configured name, in config order."},
            omitted=OMITTED),
        "systemd": _service(
            "systemd units: the failed ones and those the admin named "
            "(services.systemd.units), from systemctl.",
            failed=_described(COUNT, "Units in the failed state."),
            units={"type": "array", "maxItems": MAX_SERVICE_ENTRIES, "items": SYSTEMD_UNIT,
                   "description": "The configured units first, in config order, then the "
                                  "failed units not among them."},
            omitted=OMITTED),
        "phpfpm": _service(
            "PHP-FPM, one entry per pool of every running master.",
            pools={"type": "array", "maxItems": MAX_SERVICE_ENTRIES, "items": FPM_POOL,
                   "description": "The pools, in their masters' config order."},
            omitted=OMITTED),
        "docker": _service(
            "Docker, from the Engine API's /info on its unix socket.",
            containersTotal=_described(COUNT, "Containers, running or not."),
            containersRunning=_described(COUNT, "Running containers."),
            images=_described(COUNT, "Images.")),
    },
}

METRICS = {
    "type": "object",
    "description": "One section per collector; a disabled, absent or failed collector's "
                   "section is left out.",
    "properties": {"cpu": CPU, "memory": MEMORY, "disk": DISK, "network": NETWORK,
                   "processes": PROCESSES, "sensors": SENSORS, "services": SERVICES},
}

UNAVAILABLE = {
    "type": "object", "maxProperties": 64,
    "description": "Collectors that failed in this sample, with the reason (e.g. permission "
                   "denied, timeout).",
    "propertyNames": _text(256),
    "additionalProperties": _text(300),
}

SAMPLE = {
    "type": "object",
    "required": ["timestamp", "metrics"],
    "properties": {"timestamp": TIMESTAMP, "metrics": METRICS, "unavailable": UNAVAILABLE},
}

METRICS_BODY = {
    "type": "object",
    "required": ["serverId", "timestamp", "metrics"],
    # The panel reads a body that carries `samples` as the batch form, whatever else it has.
    "not": {"required": ["samples"]},
    "properties": {"serverId": SERVER_ID, **SAMPLE["properties"]},
}

BATCH_BODY = {
    "type": "object",
    "required": ["serverId", "samples"],
    "description": "Several samples in one request (replay after an outage).",
    "properties": {
        "serverId": SERVER_ID,
        "samples": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": SAMPLE,
                    "description": "Batch form only: samples oldest first, each its own "
                                   "timestamp, metrics and unavailable (no serverId). Validated "
                                   "as a whole: one bad sample refuses the request, and `field` "
                                   "names its index (samples[3].metrics.cpu.usage)."},
    },
}

HEARTBEAT = {
    "type": "object",
    "required": ["serverId", "timestamp"],
    "properties": {"serverId": SERVER_ID, "timestamp": _described(
        TIMESTAMP, "The agent's time as it sends, in a sample's form: not before the year "
                   "2000, at most a day ahead of the panel's clock, which it measures by it.")},
}

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What is wrong, for a person to read."},
        "field": {"type": "string", "description": "The offending field, e.g. metrics.cpu.usage"},
    },
}

# ===== The token API, /api/v1 (api_v1.py) ======================================================

API_V1_NEW_SERVER = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": _text(100, 1, "The server's name, unique in the panel."),
        "critical": {"type": "boolean", "description": "Alerts of a critical server say so."},
        "customerId": {"type": ["integer", "null"], "minimum": 1, "maximum": models.MAX_ID,
                       "description": "The customer the server is for (staff-wide tokens "
                                      "only; a customer's token adds to its own customer)."},
    },
}

REQUEST_SCHEMAS = {
    "RegisterRequest": REGISTER,
    "MetricsRequest": METRICS_BODY,
    "MetricsBatchRequest": BATCH_BODY,
    "HeartbeatRequest": HEARTBEAT,
    "ApiV1NewServer": API_V1_NEW_SERVER,
}


# Added to any successful answer while the agent still uses a rotated key (auth.py, keys.py).
NEW_API_KEY = {"type": "string", "description": "The key that replaces the one this request "
                                                "used: keep it and use it from the next request."}


def _ok(description, properties, optional=()):
    return {"200": {"description": description, "content": {"application/json": {"schema": {
        "type": "object", "required": [name for name in properties if name not in optional],
        "properties": {**properties, "newApiKey": NEW_API_KEY}}}}}}


# An answer's upgrade offer (panel/upgrades.py offer_for): only while a rollout offers one.
UPGRADE_OFFER = {
    "type": "object", "required": ["version", "sha256", "path"],
    "description": "A rollout offers this agent a new agent.py (absent otherwise). An agent "
                   "with agent.autoUpdate fetches `path` from this panel, checks its SHA-256 "
                   "and starts it; others ignore it.",
    "properties": {
        "version": {"type": "string", "description": "The offered agent.py's __version__."},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                   "description": "The file's SHA-256, lower-case hex."},
        "path": {"type": "string", "description": "Where on this panel to GET it (always "
                                                  "/api/agent/upgrade/agent.py)."},
        "size": {"type": "integer", "description": "The file's size in bytes."}}}


def _seconds_header(description):
    return {"description": description, "required": True,
            "schema": {"type": "integer", "minimum": 1}}


# Every refusal the agent API can answer, with the headers that come with it. An operation
# lists the ones it can meet; the descriptions are the contract an agent is written against.
ERROR_RESPONSES = {
    "400": {"description": "Body is not valid JSON (or NaN, Infinity, nested too deeply), or "
                           "not valid gzip when Content-Encoding says so."},
    "401": {"description": "Missing or rejected API key.",
            "headers": {"WWW-Authenticate": {
                "description": "The scheme to authenticate with (RFC 6750).", "required": True,
                "schema": {"type": "string", "pattern": "^Bearer( |$)"}}}},
    "403": {"description": "serverId is not this key's server; or plain HTTP from the network "
                           "(field: scheme)."},
    "413": {"description": "Body larger than the panel accepts (MPANEL_MAX_BODY_BYTES), before "
                           "or after gzip."},
    "415": {"description": "Content-Type is not application/json, or a Content-Encoding other "
                           "than gzip."},
    "422": {"description": "JSON does not match the schema, or a timestamp is outside the "
                           "window the schema describes; `field` names the first problem. "
                           "Also, without `field`, a sample the database refuses for what it "
                           "holds. The agent drops such a sample: sending it again cannot "
                           "help."},
    "404": {"description": "This panel has no agent.py to ship (MPANEL_AGENT_FILE is missing "
                           "or has no __version__ line)."},
    "429": {"description": "Too many failed authentications from this address or for this "
                           "key id.",
            "headers": {"Retry-After": _seconds_header("Seconds until the next attempt may "
                                                       "succeed.")}},
    "503": {"description": "The database is unavailable: nothing was stored; keep the samples "
                           "and retry.",
            "headers": {"Retry-After": _seconds_header("Seconds to wait before retrying.")}},
}
# What every authenticated operation can meet before it reads its body.
_AUTH_ERRORS = ("401", "403", "429", "503")
# ... and what reading and checking a body adds.
_BODY_ERRORS = ("400", "413", "415", "422")


def _errors(*statuses):
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {status: dict(ERROR_RESPONSES[status], content=ref) for status in sorted(statuses)}


def _post(summary, schema_names, ok):
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in schema_names.split("|")]
    return {"post": {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": refs[0] if len(refs) == 1 else {"oneOf": refs}}}},
        "responses": {**ok, **_errors(*_AUTH_ERRORS, *_BODY_ERRORS)},
    }}


# ===== The token API in the document (api_v1.py) ================================================

# Refusals of /api/v1, worded for a token's holder; headers as the agent API's.
V1_ERROR_RESPONSES = {
    "400": {"description": "A query parameter out of its choices (`field` names it), or a "
                           "body that is not JSON."},
    "401": dict(ERROR_RESPONSES["401"], description="Missing, unknown, wrong, expired or "
                                                    "revoked API token."),
    "403": {"description": "A read-only token's write, a customer's token on a staff "
                           "endpoint; or plain HTTP from the network (field: scheme)."},
    "404": {"description": "No such server, or one this token does not see (another "
                           "customer's reads the same)."},
    "409": {"description": "A server of that name exists already."},
    "413": {"description": "Body larger than the endpoint accepts."},
    "415": {"description": "Content-Type is not application/json."},
    "422": {"description": "Body does not match the schema, or breaks a rule it cannot say "
                           "(a name with control characters, a customer that does not "
                           "exist); `field` names it."},
    "429": dict(ERROR_RESPONSES["429"], description="Too many failed token uses from this "
                                                    "address or for this token id."),
    "503": dict(ERROR_RESPONSES["503"], description="The database is unavailable; retry."),
}
_V1_AUTH_ERRORS = ("401", "403", "429", "503")
_V1_BODY_ERRORS = ("400", "409", "413", "415", "422")

_NULLABLE_TIME = {"type": ["string", "null"], "description": "UTC, ISO 8601, or null."}
_FIGURE = {"type": ["number", "null"]}
_BYTES = {"type": "integer", "minimum": 0}
V1_TRAFFIC = {"type": ["object", "null"], "description": "Traffic this billing cycle "
              "(quotas.shown): bytes `received`, `sent` and `used` (as `basis` counts them), "
              "the cycle's `start` and `end` (dates, UTC), the `allowance` (null: none), the "
              "`percent` of it used, the `projected` bytes by the end (null early in a cycle), "
              "the alert `level` reached (80, 100 or null), and the `text` the pages show.",
              "properties": {
                  "used": _BYTES, "received": _BYTES, "sent": _BYTES,
                  "basis": {"type": "string"}, "allowance": {"type": ["integer", "null"]},
                  "percent": _FIGURE, "projected": {"type": ["integer", "null"]},
                  "level": {"type": ["integer", "null"]}, "text": {"type": "string"},
                  "start": {"type": "string"}, "end": {"type": "string"}}}
V1_SERVER_ROW = {"type": "object", "required": ["id", "name", "status"], "properties": {
    "id": SERVER_ID, "name": {"type": "string"}, "hostname": {"type": "string"},
    "status": {"type": "string", "enum": ["online", "offline", "never seen"]},
    "lastSeen": _NULLABLE_TIME, "critical": {"type": "boolean"}, "traffic": V1_TRAFFIC,
    "diskFull": {"type": ["object", "null"], "required": ["mount", "secondsLeft"],
                 "description": "The mount full soonest at its trend (panel/forecasts.py), or "
                                "null while none is filling.",
                 "properties": {"mount": {"type": "string"},
                                "secondsLeft": {"type": "number"}}}}}
V1_ALERT = {"type": "object", "required": ["id", "serverId", "rule", "state", "startedAt"],
            "properties": {"id": {"type": "integer"}, "serverId": SERVER_ID,
                           "serverName": {"type": "string"}, "rule": {"type": "string"},
                           "state": {"type": "string"}, "message": {"type": "string"},
                           "value": _FIGURE, "threshold": _FIGURE,
                           "silenced": {"type": "boolean"}, "startedAt": {"type": "string"},
                           "resolvedAt": _NULLABLE_TIME}}
V1_LATEST = {"type": ["object", "null"], "description": "The latest sample's figures (raw "
                                                        "units), or null before the first."}
V1_SERVER = {"type": "object",
             "required": ["id", "name", "customerId", "status", "firing", "latest"],
             "properties": {
                 "id": SERVER_ID, "name": {"type": "string"},
                 "customerId": {"type": ["integer", "null"],
                                "description": "Null: a staff-only server."},
                 "critical": {"type": "boolean"}, "publicStatus": {"type": "boolean"},
                 "status": V1_SERVER_ROW["properties"]["status"],
                 "hostname": {"type": "string"}, "version": {"type": "string"},
                 "lastSeen": _NULLABLE_TIME, "maintenanceUntil": _NULLABLE_TIME,
                 "firing": {"type": "array", "items": V1_ALERT}, "latest": V1_LATEST,
                 "traffic": V1_TRAFFIC}}
V1_CHART = {"type": "object", "required": ["title", "unit", "start", "step", "lines"],
            "properties": {
                "key": {"type": "string", "description": "The chart's name, as ?chart= "
                                                         "takes it."},
                "title": {"type": "string"}, "unit": {"type": "string"},
                "start": {"type": "string"}, "step": {"type": "integer"},
                "bins": {"type": "integer"}, "yMax": _FIGURE,
                "lines": {"type": "array", "items": {
                    "type": "object", "required": ["label", "points"], "properties": {
                        "label": {"type": "string"},
                        "points": {"type": "array", "description": "[epoch seconds, mean, "
                                                                   "peak or null]",
                                   "items": {"type": "array", "minItems": 3,
                                             "maxItems": 3}}}}}}}
V1_RANGE_NAMES = tuple(charts.RANGES)


def _v1_ok(description, properties, status="200"):
    return {status: {"description": description, "content": {"application/json": {"schema": {
        "type": "object", "required": list(properties), "properties": properties}}}}}


def _v1_csv(ok):
    """A 200 that may also come as CSV (?format=csv)."""
    ok["200"]["content"]["text/csv"] = {"schema": {"type": "string"}}
    return ok


def _v1(summary, ok, *errors, need="token-read", parameters=(), body=None):
    refs = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    operation = {
        "summary": summary, "security": [{"apiToken": []}],
        "description": {"token-read": "Any token.", "token-write": "A read-write token.",
                        "token-staff": "A staff-wide token.",
                        "token-staff-write": "A staff-wide read-write token."}[need],
        "responses": {**ok, **{status: dict(V1_ERROR_RESPONSES[status], content=refs)
                               for status in sorted({*_V1_AUTH_ERRORS, *errors})}},
    }
    if parameters:
        operation["parameters"] = list(parameters)
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{body}"}}}}
    return operation


_SERVER_PARAMETER = {"name": "serverId", "in": "path", "required": True, "schema": SERVER_ID}


def v1_paths():
    """The /api/v1 operations (api_v1.py), as the OpenAPI document lists them."""
    from . import fleet_table  # it reads this module's schemas

    one = (_SERVER_PARAMETER,)

    def query(name, description, schema):
        return {"name": name, "in": "query", "required": False, "description": description,
                "schema": schema}
    listing = (
        query("q", "Only servers whose name or hostname holds this text, in any case.",
              _text(fleet_table.TEXT_MAX)),
        query("status", "Only servers in this state.",
              {"type": "string", "enum": list(fleet_table.STATUSES)}),
        query("sort", "The servers table's column to sort by (ties by name).",
              {"type": "string", "enum": list(fleet_table.SORTS), "default": "name"}),
        query("dir", "The sort's direction.",
              {"type": "string", "enum": ["asc", "desc"], "default": "asc"}),
        query("offset", "Skip this many of the matching servers.",
              {"type": "integer", "minimum": 0, "maximum": fleet_table.OFFSET_MAX,
               "default": 0}),
        query("limit", "At most this many servers (absent: every one that matches).",
              {"type": "integer", "minimum": 1, "maximum": fleet_table.OFFSET_MAX}))
    return {
        "/api/v1/servers": {
            "get": _v1("The servers this token sees, as the servers table shows them",
                       _v1_ok("Servers in the order asked for; `matched`: how many match in "
                              "all (the filter, not the window); `counts`: the whole fleet's", {
                           "servers": {"type": "array", "items": V1_SERVER_ROW},
                           "matched": {"type": "integer"},
                           "counts": {"type": "object"}, "firing": {"type": "integer"}}),
                       "400", parameters=listing),
            "post": _v1("Add a server; its agent key is in the answer, once",
                        _v1_ok("Added", {"server": V1_SERVER, "apiKey": {"type": "string"},
                                         "install": {"type": "string"}}, "201"),
                        *_V1_BODY_ERRORS, need="token-write", body="ApiV1NewServer"),
        },
        "/api/v1/servers/{serverId}": {
            "get": _v1("One server, as its page shows it", _v1_ok("The server", {
                **{name: V1_SERVER["properties"][name] for name in V1_SERVER["required"]}}),
                "404", parameters=one),
            "delete": _v1("Delete a server, its agent, key and data", _v1_ok("Deleted", {
                "deleted": {"type": "boolean"}, "id": SERVER_ID, "name": {"type": "string"}}),
                "404", need="token-staff-write", parameters=one),
        },
        "/api/v1/servers/{serverId}/latest": {
            "get": _v1("A server's latest sample", _v1_ok("The latest sample", {
                "serverId": SERVER_ID, "status": V1_SERVER_ROW["properties"]["status"],
                "latest": V1_LATEST}), "404", parameters=one),
        },
        "/api/v1/servers/{serverId}/series": {
            "get": _v1("A server's charts for a range: the figures its page draws",
                       _v1_csv(_v1_ok("Charts, in page order", {
                           "serverId": SERVER_ID, "range": {"type": "string"},
                           "charts": {"type": "array", "items": V1_CHART}})),
                       "400", "404", parameters=(one[0], {
                           "name": "range", "in": "query", "required": False,
                           "schema": {"type": "string", "enum": list(V1_RANGE_NAMES),
                                      "default": "1h"}}, {
                           "name": "chart", "in": "query", "required": False,
                           "description": "Only this chart (absent: every chart).",
                           "schema": {"type": "string", "enum": list(figures.CHART_KEYS)}}, {
                           "name": "format", "in": "query", "required": False,
                           "description": "csv: one row per point (chart, series, time, "
                                          "mean, peak, unit); text cells that a spreadsheet "
                                          "would run as a formula start with an apostrophe.",
                           "schema": {"type": "string", "enum": list(exports.FORMATS),
                                      "default": "json"}})),
        },
        "/api/v1/alerts": {
            "get": _v1("Firing alerts and the latest 100 others", _v1_ok("Alerts", {
                "firing": {"type": "array", "items": V1_ALERT},
                "history": {"type": "array", "items": V1_ALERT}})),
        },
        "/api/v1/customers": {
            "get": _v1("Every customer", _v1_ok("Customers, by name", {
                "customers": {"type": "array", "items": {
                    "type": "object", "required": ["id", "name", "slug"],
                    "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                                   "slug": {"type": "string"},
                                   "createdAt": {"type": "string"}}}}}),
                need="token-staff"),
        },
    }


def openapi_document():
    """OpenAPI 3.1 description of the agent API, from the schemas the code validates with."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "mPanel agent API and token API", "version": __version__,
                 "description": "Agents push to /api/agent; the panel never connects to "
                                "them. Scripts read and change what a user's API token "
                                "opens under /api/v1 (every answer scoped as the user's "
                                "pages are). "
                                "Request bodies may be gzip-compressed (Content-Encoding: gzip). "
                                "Bodies are I-JSON (RFC 7493): a string carrying a lone "
                                "surrogate escape (\\ud800) is refused with 422, as is a NUL "
                                "character in any text field (each one's pattern says so)."},
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
                                     "description": "Seconds until the next report."},
                    "upgrade": UPGRADE_OFFER}, optional=("upgrade",))),
            "/api/agent/heartbeat": _post(
                "Say the agent is alive between reports", "HeartbeatRequest",
                _ok("Noted", {"status": {"type": "string", "enum": ["ok"]}})),
            "/api/agent/config": {"get": {
                "summary": "What the panel wants this agent to do",
                "responses": {**_ok("Settings", {
                    "reportInterval": {"type": "integer", "description": "Seconds."},
                    "metricsEnabled": {
                        "type": "array", "items": {"type": "string"},
                        "description": "The collectors this agent may run, when an admin has "
                                       "narrowed them (MPANEL_ENABLED_COLLECTORS): the agent "
                                       "switches off every one not named ('services' names "
                                       "all service collectors). Absent: not narrowed, the "
                                       "agent runs every collector its own config enables."},
                    "upgrade": UPGRADE_OFFER},
                    optional=("metricsEnabled", "upgrade")),
                    **_errors(*_AUTH_ERRORS)},
            }},
            "/api/agent/upgrade/agent.py": {"get": {
                "summary": "The agent.py this panel ships (what an upgrade offer announces)",
                "responses": {"200": {"description": "The file, text/x-python",
                                      "content": {"text/x-python": {"schema": {
                                          "type": "string"}}}},
                              **_errors(*_AUTH_ERRORS, "404")},
            }},
            **v1_paths(),
        },
        "components": {
            "securitySchemes": {"agentKey": {"type": "http", "scheme": "bearer",
                                             "description": "agent_<key id>_<secret>"},
                                "apiToken": {"type": "http", "scheme": "bearer",
                                             "description": "mpt_<token id>_<secret>: a "
                                                            "user's API token (/account)"}},
            "schemas": {**REQUEST_SCHEMAS, "Error": ERROR},
        },
    }
