"""Peewee models, matching `sql/schema.sql` column for column, and the named queries on them.

Views and the API call the query functions here (`latest_sample_per_agent()`, ...) rather than
building queries themselves, so every query the panel runs can be read in one place.
"""
import calendar
import datetime
import hashlib
import json
import zlib

import peewee

from . import access as access_module
from . import figures, forecasts, units
from .db import database_proxy, is_postgres, utcnow


# Words every sample's detail repeats. zlib starts each value from this dictionary instead of
# from nothing, so a 1.4 KB detail stores in ~450 bytes where plain zlib leaves ~700. Stored
# values begin with DETAIL_FORMAT; a new dictionary must come with a new format byte.
DETAIL_FORMAT = b"\x01"
DETAIL_DICTIONARY = (
    b'"unavailable":{"services":{"docker":{"containersTotal":"containersRunning":"images":}'
    b'"apache":{"busyWorkers":"idleWorkers":"requestsPerSec":}"nginx":{"activeConnections":'
    b'"reading":"writing":"waiting":"requestsPerSec":}"redis":{"usedMemory":'
    b'"connectedClients":"opsPerSec":}"postgresql":{"connections":"databases":[{"name":'
    b'"postgres","size":}]},"processes":{"total":"running":"topMemory":[{"pid":"name":'
    b'"python3","user":"root","cpuPercent":0.0,"rss":}],"topCpu":[{"pid":"name":"user":'
    b'"root","cpuPercent":"rss":}]},"disk_io":[{"device":"sda","readBytesPerSec":0.0,'
    b'"writeBytesPerSec":0.0,"readOpsPerSec":0.0,"writeOpsPerSec":0.0}],"interfaces":'
    b'[{"interface":"eth0","bytesSent":"bytesRecv":"packetsSent":"packetsRecv":'
    b'"bytesSentPerSec":0.0,"bytesRecvPerSec":0.0,"packetsSentPerSec":0.0,'
    b'"packetsRecvPerSec":0.0,"errorsInPerSec":0.0,"errorsOutPerSec":0.0,"dropsInPerSec":0.0,'
    b'"dropsOutPerSec":0.0}],"disks":[{"mountpoint":"/","device":"/dev/sda1","fstype":"ext4",'
    b'"total":"used":"free":"percent":}]'
)


# PostgreSQL's REAL (float4) refuses a nonzero value below its range as "out of range", where
# a double would hold it (1e-50). Below float4's smallest normal a figure is noise, so it is
# stored as 0; flushing there rather than at the very edge keeps averages of such values
# (rollups, alert windows) inside the range too.
REAL_SMALLEST_NORMAL = 2.0 ** -126


def storable_real(value):
    """`value` as a REAL column can hold it: 0 for a magnitude below float4's normal range."""
    return 0.0 if value is not None and abs(value) < REAL_SMALLEST_NORMAL else value


# A compressor primed with the dictionary, copied for each value: the same bytes as a fresh
# compressobj(9, zdict=...), without setting the dictionary up again every time.
_PRIMED = zlib.compressobj(9, zdict=DETAIL_DICTIONARY)


def pack_detail(value):
    compressor = _PRIMED.copy()
    raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    return DETAIL_FORMAT + compressor.compress(raw) + compressor.flush()


def unpack_detail(blob):
    blob = bytes(blob)
    if blob[:1] != DETAIL_FORMAT:
        raise ValueError(f"unknown detail format {blob[:1]!r}")
    decompressor = zlib.decompressobj(zdict=DETAIL_DICTIONARY)
    return json.loads(decompressor.decompress(blob[1:]) + decompressor.flush())


class DetailField(peewee.BlobField):
    """A sample's per-mount, per-interface, per-device, process and service detail: compact
    JSON, zlib-compressed against a dictionary of the words it always repeats."""

    def db_value(self, value):
        return None if value is None else super().db_value(pack_detail(value))

    def python_value(self, value):
        return None if value is None else unpack_detail(value)


class BaseModel(peewee.Model):
    class Meta:
        database = database_proxy


class SchemaVersion(BaseModel):
    version = peewee.IntegerField(primary_key=True)
    applied_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "schema_version"


class Customer(BaseModel):
    """A hosting customer: a group of servers, and the users who see only those (access.py)."""

    name = peewee.CharField(max_length=100, unique=True)
    slug = peewee.CharField(max_length=40, unique=True)  # [a-z0-9-]: its /status/<slug>
    created_at = peewee.DateTimeField(default=utcnow)
    # The customer's public status page (/status/<slug>): off until they or the staff turn it
    # on; its title is theirs to choose (empty: "Status").
    status_page = peewee.BooleanField(default=False)
    status_title = peewee.CharField(max_length=100, default="")
    # Its users must set up two-factor before any other page (auth.two_factor_required).
    require_two_factor = peewee.BooleanField(default=False)
    # The allowance of all its servers together, on the customer's own cycle.
    # Traffic quota (issue 14, quotas.py): the cycle starts on this day of the month (past a
    # month's end, its last day); the allowance is bytes a cycle (NULL: traffic only counted),
    # counted as traffic.BASES[traffic_basis].
    billing_day = peewee.SmallIntegerField(default=1)
    traffic_allowance = peewee.BigIntegerField(null=True)
    traffic_basis = peewee.CharField(max_length=3, default="sum")

    class Meta:
        table_name = "customers"


class Server(BaseModel):
    """A server the admin created; its agent reports for it."""

    name = peewee.CharField(max_length=100, unique=True)
    # NULL: staff-only. Deleting the customer gives its servers back to the staff, data kept.
    customer = peewee.ForeignKeyField(Customer, column_name="customer_id", null=True,
                                      on_delete="SET NULL", backref="servers")
    critical = peewee.BooleanField(default=False)
    # Shown on the public /status page (up/down and uptime only, never metrics).
    public_status = peewee.BooleanField(default=False)
    # unknown (never reported), online, offline: changed only by conditional updates, so
    # concurrent replicas record each transition once (see jobs.py and api.py).
    state = peewee.CharField(max_length=16, default="unknown")
    state_since = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)
    # Traffic quota (issue 14, quotas.py): the cycle starts on this day of the month (past a
    # month's end, its last day); the allowance is bytes a cycle (NULL: traffic only counted),
    # counted as traffic.BASES[traffic_basis].
    billing_day = peewee.SmallIntegerField(default=1)
    traffic_allowance = peewee.BigIntegerField(null=True)
    traffic_basis = peewee.CharField(max_length=3, default="sum")

    class Meta:
        table_name = "servers"


class Agent(BaseModel):
    """The agent of one server, with its API key (only a bcrypt hash) and what it reported
    about itself. `status`: pending (never registered), active, revoked."""

    server = peewee.ForeignKeyField(Server, column_name="server_id", unique=True,
                                    on_delete="CASCADE", backref="agents")
    hostname = peewee.CharField(max_length=255, default="")
    ip_address = peewee.CharField(max_length=45, null=True)
    os = peewee.CharField(max_length=50, null=True)
    arch = peewee.CharField(max_length=50, null=True)
    agent_version = peewee.CharField(max_length=20, null=True)
    boot_time = peewee.DateTimeField(null=True)  # reported at registration: the uptime shown
    api_key_id = peewee.CharField(max_length=16, unique=True)
    api_key_hash = peewee.TextField()
    # SHA-256 of the key (keys.fingerprint): checks a presented key without bcrypt, so a
    # failure limit never has to stand between an agent and its own key. NULL for a key issued
    # before schema version 3 until its first successful bcrypt check.
    api_key_fingerprint = peewee.CharField(max_length=64, null=True)
    # Rotation: the previous key stays valid until prev_key_expires_at; the new key waits,
    # sealed with the panel's secret, until the agent picks it up (keys.py).
    prev_key_id = peewee.CharField(max_length=16, unique=True, null=True)
    prev_key_hash = peewee.TextField(null=True)
    prev_key_fingerprint = peewee.CharField(max_length=64, null=True)
    prev_key_expires_at = peewee.DateTimeField(null=True)
    pending_key_box = peewee.TextField(null=True)
    key_rotated_at = peewee.DateTimeField(null=True)
    key_switched_at = peewee.DateTimeField(null=True)
    status = peewee.CharField(max_length=20, default="pending")
    last_seen = peewee.DateTimeField(null=True)
    # Seconds the agent's clock was ahead of the panel's (negative: behind) at its last request
    # that said its time; NULL until one did (api.py, ingest.clock_offset).
    clock_offset = peewee.IntegerField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)
    # The agent's agent.autoUpdate as it last registered (panel/upgrades.py): only such agents
    # are offered upgrades.
    auto_update = peewee.BooleanField(default=False)

    class Meta:
        table_name = "servers_agents"


class Metric(BaseModel):
    """One sample. The typed columns, one per figure of figures.FIGURES (the seed design's and
    those added since), feed tables and charts cheaply; the JSON columns keep the rest of the same sample: per mount,
    per interface, per block device, top processes, services, and collectors that failed."""

    # No surrogate id: (agent_id, timestamp) is the key, so a retried or replayed sample is
    # stored once, and PostgreSQL's time partitions can carry it (a partitioned table's keys
    # must include the partition column).
    agent = peewee.ForeignKeyField(Agent, column_name="agent_id", on_delete="CASCADE",
                                   backref="metrics", index=False)
    timestamp = peewee.DateTimeField(index=True)
    # ... and a typed column per figure of figures.FIGURES (added below the class).
    # disks (per mount), interfaces, disk_io (per device), processes (top 5 by CPU and by
    # memory), services, sensors, extra (sections no schema describes), unavailable (collectors that
    # failed): see the properties below.
    detail = DetailField(null=True)
    # Arrived well after it was taken: replayed from the agent's buffer after an outage.
    late = peewee.BooleanField(default=False)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "server_metrics"
        primary_key = peewee.CompositeKey("agent", "timestamp")

    def _part(name):
        return property(lambda self: (self.detail or {}).get(name),
                        doc=f"The sample's {name}, from its detail; None when not reported.")

    disks = _part("disks")
    interfaces = _part("interfaces")
    disk_io = _part("disk_io")
    processes = _part("processes")
    services = _part("services")
    sensors = _part("sensors")  # temperature readings
    extra = _part("extra")  # sections of collectors the panel has no schema for (ingest.py)
    unavailable = _part("unavailable")
    del _part


_FIELD_OF_STORAGE = {"real": peewee.FloatField, "bigint": peewee.BigIntegerField,
                     "integer": peewee.IntegerField}


def _add_figure_columns(model, columns):
    """Nullable typed columns, [(name, storage)], on `model`: a collector that is off or failed
    leaves its figures empty."""
    for name, storage in columns:
        model._meta.add_field(name, _FIELD_OF_STORAGE[storage](null=True))


_add_figure_columns(Metric, [(figure.column, figure.storage) for figure in figures.FIGURES])


class LatestSample(BaseModel):
    """Where each agent's newest sample is, kept on ingest: the servers table reads 1,000
    servers by 1,000 primary-key probes instead of searching the samples."""

    agent = peewee.ForeignKeyField(Agent, column_name="agent_id", primary_key=True,
                                   on_delete="CASCADE")
    timestamp = peewee.DateTimeField()

    class Meta:
        table_name = "latest_samples"


class RollupBase(BaseModel):
    """Average and peak of each chart figure over a bucket (rollups.py fills these)."""

    agent = peewee.ForeignKeyField(Agent, column_name="agent_id", on_delete="CASCADE",
                                   index=False)
    bucket = peewee.DateTimeField()
    samples = peewee.IntegerField()
    # ... and each rolled-up figure's columns (figures.rollup_columns, added below).

    class Meta:
        primary_key = peewee.CompositeKey("agent", "bucket")


# Before the tier models: they inherit these. Means and peaks are REAL whatever the figure's
# type (an average of bytes is not whole); a last value keeps the figure's own type.
_add_figure_columns(RollupBase, [
    (name, "real" if figure.rollup == "mean_peak" else figure.storage)
    for figure in figures.FIGURES for name in figures.rollup_columns(figure)])


class Rollup5m(RollupBase):
    class Meta:
        table_name = "metrics_5m"


class Rollup1h(RollupBase):
    class Meta:
        table_name = "metrics_1h"


class TrafficHour(BaseModel):
    """Bytes an agent's interfaces received and sent in one hour (traffic.hourly, from the
    samples' counters): written over by the rollup job each time it recomputes the hour, so a
    re-run or a second replica never adds twice. Each day (TrafficDay) is the sum of its hours."""

    agent = peewee.ForeignKeyField(Agent, column_name="agent_id", on_delete="CASCADE",
                                   index=False)
    hour = peewee.DateTimeField()
    received = peewee.BigIntegerField()
    sent = peewee.BigIntegerField()

    class Meta:
        table_name = "traffic_hours"
        primary_key = peewee.CompositeKey("agent", "hour")


class TrafficDay(BaseModel):
    """The sum of an agent's traffic hours of one UTC day, rewritten with them: a cycle (from a
    midnight) sums at most 31 of these instead of 744 hours, which the servers table would
    pay for on every refresh."""

    agent = peewee.ForeignKeyField(Agent, column_name="agent_id", on_delete="CASCADE",
                                   index=False)
    day = peewee.DateTimeField()  # its midnight
    received = peewee.BigIntegerField()
    sent = peewee.BigIntegerField()

    class Meta:
        table_name = "traffic_days"
        primary_key = peewee.CompositeKey("agent", "day")


class DirtyBucket(BaseModel):
    """A 5-minute bucket that received a sample too late for the rollup job's recent window
    (a replay after a long outage, a back-fill): the job recomputes it and its coarser buckets,
    then forgets it. Written in the same transaction as the sample, so none is missed."""

    agent = peewee.ForeignKeyField(Agent, column_name="agent_id", on_delete="CASCADE",
                                   index=False)
    bucket = peewee.DateTimeField()

    class Meta:
        table_name = "dirty_buckets"
        primary_key = peewee.CompositeKey("agent", "bucket")


class CheckState(BaseModel):
    """Per server, service check (checks.CHECKS) and subject: since when it has been bad (NULL
    while good), what the newest sample said, and what it said when last good — so an alert
    can say what it was, and a rule can ask a state to hold before it fires."""

    agent = peewee.ForeignKeyField(Agent, column_name="agent_id", on_delete="CASCADE",
                                   index=False)
    metric = peewee.CharField(max_length=16)
    subject = peewee.CharField(max_length=300)
    bad_since = peewee.DateTimeField(null=True)
    text = peewee.CharField(max_length=300)
    was = peewee.CharField(max_length=300, null=True)
    value = peewee.DoubleField(null=True)
    updated_at = peewee.DateTimeField()

    class Meta:
        table_name = "check_states"
        primary_key = peewee.CompositeKey("agent", "metric", "subject")


class MountHour(BaseModel):
    """Per server and mount, the used bytes and capacity (used + free) the hour's newest sample
    reported: the history disk-full forecasts read (forecasts.py). The per-mount detail of the
    raw samples ages out with them; this keeps one row per mount and hour, for as long as the
    hourly rollups. Mounts are the agent's (protocol.MAX_DISKS at most); a mount point longer
    than 255 characters is kept by its first 255."""

    agent = peewee.ForeignKeyField(Agent, column_name="agent_id", on_delete="CASCADE",
                                   index=False)
    mount = peewee.CharField(max_length=255)
    bucket = peewee.DateTimeField(index=True)  # retention deletes by it
    used = peewee.BigIntegerField()
    capacity = peewee.BigIntegerField()

    class Meta:
        table_name = "mount_hours"
        primary_key = peewee.CompositeKey("agent", "mount", "bucket")


class MountForecast(BaseModel):
    """Per server and mount, its newest forecast (forecasts.Forecast), written by the
    forecasts job: the servers table, the disk chart and the disk_full check read it here,
    never fit a line per page view."""

    agent = peewee.ForeignKeyField(Agent, column_name="agent_id", on_delete="CASCADE",
                                   index=False)
    mount = peewee.CharField(max_length=255)
    used = peewee.BigIntegerField()
    capacity = peewee.BigIntegerField()
    bytes_per_day = peewee.DoubleField(null=True)
    full_at = peewee.DateTimeField(null=True)
    reason = peewee.CharField(max_length=32, null=True)
    computed_at = peewee.DateTimeField()

    class Meta:
        table_name = "mount_forecasts"
        primary_key = peewee.CompositeKey("agent", "mount")


class AuthEvent(BaseModel):
    """Failed agent authentications and logins, and key life-cycle events. Never the secret: at
    most the key's public id.

    Failures are summarised (record_auth_failure): identical ones — same kind, address, key id,
    server and detail — within one AUTH_SUMMARY_WINDOW are one row, `occurrences` counting them
    from `created_at` (the first) to `last_seen_at` (the latest). `summary_key` names that
    group and window; it is NULL for events that are never summarised."""

    created_at = peewee.DateTimeField(default=utcnow, index=True)
    kind = peewee.CharField(max_length=32)
    client_addr = peewee.CharField(max_length=45, null=True)
    key_id = peewee.CharField(max_length=16, null=True)
    server_id = peewee.IntegerField(null=True)
    detail = peewee.CharField(max_length=200, null=True)
    occurrences = peewee.IntegerField(default=1)
    last_seen_at = peewee.DateTimeField(null=True, index=True)
    summary_key = peewee.CharField(max_length=64, null=True, unique=True)

    class Meta:
        table_name = "auth_events"


class AuthLimit(BaseModel):
    """One rate limit's state, shared by every replica: `tat`, the theoretical arrival time
    (GCRA, seconds since the epoch) up to which its budget is spent. Taken and given back by
    one statement each (take_attempts), so concurrent requests cannot overrun it."""

    name = peewee.CharField(max_length=120, primary_key=True)
    tat = peewee.DoubleField()

    class Meta:
        table_name = "auth_limits"


class ServerEvent(BaseModel):
    """A server going offline or coming back, with the time it happened."""

    server = peewee.ForeignKeyField(Server, column_name="server_id", on_delete="CASCADE",
                                    backref="events")
    kind = peewee.CharField(max_length=16)
    at = peewee.DateTimeField()
    detail = peewee.CharField(max_length=200, null=True)

    class Meta:
        table_name = "server_events"
        indexes = ((("server", "at"), False),)


class AlertRule(BaseModel):
    """Alert when `metric` stays above `threshold` for `minutes`. server NULL: the global
    default; a row for a server overrides it for that server."""

    server = peewee.ForeignKeyField(Server, column_name="server_id", on_delete="CASCADE",
                                    null=True)
    metric = peewee.CharField(max_length=16)
    threshold = peewee.FloatField()
    minutes = peewee.IntegerField(default=5)
    enabled = peewee.BooleanField(default=True)

    class Meta:
        table_name = "alert_rules"


class Alert(BaseModel):
    """One problem, from firing to resolved. `open_key` is the rule while firing and NULL after:
    a unique (server_id, open_key) index lets only one firing alert per rule exist, whichever
    replica noticed first."""

    server = peewee.ForeignKeyField(Server, column_name="server_id", on_delete="CASCADE",
                                    backref="alerts")
    rule = peewee.CharField(max_length=32)
    open_key = peewee.CharField(max_length=32, null=True)
    state = peewee.CharField(max_length=16, default="firing")
    started_at = peewee.DateTimeField()
    resolved_at = peewee.DateTimeField(null=True)
    value = peewee.FloatField(null=True)
    threshold = peewee.FloatField(null=True)
    message = peewee.CharField(max_length=500)
    silenced = peewee.BooleanField(default=False)

    class Meta:
        table_name = "alerts"
        indexes = ((("server", "open_key"), True),)


class Channel(BaseModel):
    """Where alerts go: a webhook URL or e-mail addresses. Default channels get the alerts of
    servers that have no routes of their own."""

    name = peewee.CharField(max_length=64)  # unique per owner: the indexes below the class
    kind = peewee.CharField(max_length=16)
    target = peewee.CharField(max_length=2000)
    is_default = peewee.BooleanField(default=True)
    created_at = peewee.DateTimeField(default=utcnow)
    # NULL: the staff's; else one customer's, seen and used by that customer only (alerts.py,
    # channels_for, says where each server's alerts go).
    customer = peewee.ForeignKeyField(Customer, column_name="customer_id", null=True,
                                      on_delete="CASCADE", backref="channels")

    class Meta:
        table_name = "channels"


# A name is unique among the staff's channels and among each customer's: a customer choosing
# "ops" learns nothing of a staff or other customer's "ops".
Channel.add_index(Channel.index(Channel.name, unique=True, where=Channel.customer.is_null(),
                                name="channel_staff_name"))
Channel.add_index(Channel.index(Channel.customer, Channel.name, unique=True,
                                name="channel_customer_id_name"))


class CustomerStaffChannel(BaseModel):
    """A staff channel an admin chose to also get one customer's alerts ("Acme's to ops")."""

    customer = peewee.ForeignKeyField(Customer, column_name="customer_id", on_delete="CASCADE")
    channel = peewee.ForeignKeyField(Channel, column_name="channel_id", on_delete="CASCADE")

    class Meta:
        table_name = "customer_staff_channels"
        primary_key = peewee.CompositeKey("customer", "channel")


class ServerChannel(BaseModel):
    server = peewee.ForeignKeyField(Server, column_name="server_id", on_delete="CASCADE")
    channel = peewee.ForeignKeyField(Channel, column_name="channel_id", on_delete="CASCADE")

    class Meta:
        table_name = "server_channels"
        primary_key = peewee.CompositeKey("server", "channel")


class Delivery(BaseModel):
    """One alert event to one channel, retried with backoff until sent or given up."""

    alert = peewee.ForeignKeyField(Alert, column_name="alert_id", on_delete="CASCADE", null=True)
    channel = peewee.ForeignKeyField(Channel, column_name="channel_id", on_delete="CASCADE")
    event = peewee.CharField(max_length=16)
    status = peewee.CharField(max_length=16, default="pending")
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.DateTimeField(default=utcnow)
    last_error = peewee.CharField(max_length=500, null=True)
    sent_at = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "deliveries"
        indexes = ((("status", "next_attempt_at"), False),)


class MaintenanceWindow(BaseModel):
    """While it lasts, the server's alerts are recorded but not sent; data keeps flowing."""

    server = peewee.ForeignKeyField(Server, column_name="server_id", on_delete="CASCADE")
    starts_at = peewee.DateTimeField()
    ends_at = peewee.DateTimeField()
    reason = peewee.CharField(max_length=200, null=True)

    class Meta:
        table_name = "maintenance_windows"


# Staff roles have no customer, customer roles exactly one (access.ROLES): kept by the database
# too, so no write path can make a customer user staff by leaving the customer out.
def _sql_list(names):
    return ", ".join(f"'{name}'" for name in names)


ADMIN_ROLE_CHECK = (
    f"CHECK ((customer_id IS NULL AND role IN ({_sql_list(access_module.STAFF_ROLES)})) "
    f"OR (customer_id IS NOT NULL AND role IN ({_sql_list(access_module.CUSTOMER_ROLES)})))")


class Admin(BaseModel):
    """A user of the pages: staff, or (customer set) a customer's user; see access.py.
    Two-factor (panel/totp.py): `totp_secret_box` is the TOTP secret sealed with the panel's
    secret (keys.seal), set when enrolment starts; `totp_enabled_at` when a code confirmed it
    (NULL: two-factor is off, or enrolment is pending); `totp_last_step` the last accepted time
    step, so no code is accepted twice."""

    username = peewee.CharField(max_length=64, unique=True)
    password_hash = peewee.TextField()
    role = peewee.CharField(max_length=16, default="admin")
    created_at = peewee.DateTimeField(default=utcnow)
    totp_secret_box = peewee.TextField(null=True)
    totp_enabled_at = peewee.DateTimeField(null=True)
    totp_last_step = peewee.BigIntegerField(null=True)
    customer = peewee.ForeignKeyField(Customer, column_name="customer_id", null=True,
                                      on_delete="CASCADE", backref="users")

    class Meta:
        table_name = "admins"
        constraints = [peewee.SQL(ADMIN_ROLE_CHECK)]


class AdminSession(BaseModel):
    """A login. Only a SHA-256 of the cookie's token is stored, so a database dump holds no
    usable session."""

    token_hash = peewee.CharField(max_length=64, unique=True)
    admin = peewee.ForeignKeyField(Admin, column_name="admin_id", on_delete="CASCADE")
    csrf_token = peewee.CharField(max_length=64)
    created_at = peewee.DateTimeField(default=utcnow)
    expires_at = peewee.DateTimeField()

    class Meta:
        table_name = "admin_sessions"


class RecoveryCode(BaseModel):
    """A two-factor recovery code: its SHA-256 only (totp.recovery_code_hash), usable once."""

    admin = peewee.ForeignKeyField(Admin, column_name="admin_id", on_delete="CASCADE")
    code_hash = peewee.CharField(max_length=64)
    created_at = peewee.DateTimeField(default=utcnow)
    used_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "recovery_codes"
        indexes = ((("admin", "code_hash"), True),)


class LoginChallenge(BaseModel):
    """A login between its password and its second factor: bound to the user and to the browser
    that holds the cookie's token, of which only a SHA-256 is stored; single-use, short-lived."""

    token_hash = peewee.CharField(max_length=64, unique=True)
    admin = peewee.ForeignKeyField(Admin, column_name="admin_id", on_delete="CASCADE")
    created_at = peewee.DateTimeField(default=utcnow)
    expires_at = peewee.DateTimeField()

    class Meta:
        table_name = "login_challenges"


class ApiToken(BaseModel):
    """A user's API token for /api/v1 (panel/tokens.py): `mpt_<token_id>_<secret>`. The public
    `token_id` is indexed for one-probe lookup; only the SHA-256 of the whole token is kept
    (`secret_hash`: 256 random bits need no bcrypt). `customer` NULL: staff-wide (its owner must
    be staff); `may_write` False: read-only. Revoked and expired tokens stay listed until
    deleted with their owner."""

    token_id = peewee.CharField(max_length=16, unique=True)
    secret_hash = peewee.CharField(max_length=64)
    name = peewee.CharField(max_length=64)
    admin = peewee.ForeignKeyField(Admin, column_name="admin_id", on_delete="CASCADE",
                                   backref="tokens")
    customer = peewee.ForeignKeyField(Customer, column_name="customer_id", null=True,
                                      on_delete="CASCADE")
    may_write = peewee.BooleanField(default=False)
    created_at = peewee.DateTimeField(default=utcnow)
    last_used_at = peewee.DateTimeField(null=True)
    expires_at = peewee.DateTimeField(null=True)
    revoked_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "api_tokens"


class Rollout(BaseModel):
    """An agent upgrade rollout (panel/upgrades.py): the agent.py of `version` and `sha256`
    offered to its servers (RolloutServer) a wave at a time. `state`: running, halted, done."""

    version = peewee.CharField(max_length=20)
    sha256 = peewee.CharField(max_length=64)
    target = peewee.CharField(max_length=200)  # what was chosen, as a person reads it
    wave_size = peewee.IntegerField()
    state = peewee.CharField(max_length=16, default="running")
    started_by = peewee.CharField(max_length=64)
    created_at = peewee.DateTimeField(default=utcnow)
    finished_at = peewee.DateTimeField(null=True)
    detail = peewee.CharField(max_length=200, null=True)  # why it halted

    class Meta:
        table_name = "rollouts"


# At most one rollout runs at a time: its offers are the only ones agents see.
Rollout.add_index(Rollout.index(Rollout.state, unique=True, where=Rollout.state == "running",
                                name="rollout_one_running"))


class RolloutServer(BaseModel):
    """One server of a rollout: its wave and result (pending, offered, upgraded, failed,
    skipped) with its times."""

    rollout = peewee.ForeignKeyField(Rollout, column_name="rollout_id", on_delete="CASCADE",
                                     backref="servers")
    server = peewee.ForeignKeyField(Server, column_name="server_id", on_delete="CASCADE")
    wave = peewee.IntegerField()
    state = peewee.CharField(max_length=16, default="pending")
    offered_at = peewee.DateTimeField(null=True)
    finished_at = peewee.DateTimeField(null=True)
    detail = peewee.CharField(max_length=200, null=True)

    class Meta:
        table_name = "rollout_servers"
        primary_key = peewee.CompositeKey("rollout", "server")


ALL_MODELS = [SchemaVersion, Customer, Server, Agent, Metric, LatestSample, Rollup5m, Rollup1h,
              TrafficHour, TrafficDay, DirtyBucket, CheckState, AuthEvent, AuthLimit, ServerEvent,
              AlertRule, Alert,
              Channel, ServerChannel, Delivery, MaintenanceWindow, Admin, AdminSession,
              RecoveryCode, LoginChallenge, ApiToken, CustomerStaffChannel, MountHour,
              MountForecast, Rollout, RolloutServer]


# ===== Named queries ==========================================================================

_AGENT_LOOKUP = {}


def _agent_lookup(database, count):
    """SQL for the agents (with their servers) whose current or previous key has one of
    `count` ids, each id given twice (current, then previous). Built once per dialect and
    count: Peewee's query builder costs more than the query itself here."""
    key = (type(database), count)
    sql = _AGENT_LOOKUP.get(key)  # the SQL depends only on the dialect and the count
    if sql is None:
        ids = [f"k{index}" for index in range(count)]
        query = (Agent.select(*Agent._meta.sorted_fields, *Server._meta.sorted_fields)
                 .join(Server).where(Agent.api_key_id.in_(ids) | Agent.prev_key_id.in_(ids)))
        sql = _AGENT_LOOKUP[key] = query.sql()[0]
    return sql


def _agent_of(row):
    split = len(Agent._meta.sorted_fields)
    agent = Agent(**{f.name: f.python_value(v)
                     for f, v in zip(Agent._meta.sorted_fields, row[:split])})
    agent.server = Server(**{f.name: f.python_value(v)
                             for f, v in zip(Server._meta.sorted_fields, row[split:])})
    agent._dirty.clear()
    agent.server._dirty.clear()
    return agent


def agent_by_key_id(key_id):
    """The agent (with its server) whose current or previous (rotated, in grace) key has this
    public id."""
    database = Agent._meta.database.obj
    row = database.execute_sql(_agent_lookup(database, 1), (key_id, key_id)).fetchone()
    return None if row is None else _agent_of(row)


AGENT_LOOKUP_CHUNK = 400  # ids per query: twice that many parameters, under SQLite's 999


def agents_by_key_ids(key_ids):
    """{key id: agent} for every current or previous key id among `key_ids` that an agent
    has (keys.AgentRows refreshes its rows with this: one query per 400 agents)."""
    database = Agent._meta.database.obj
    wanted, found = list(key_ids), {}
    for start in range(0, len(wanted), AGENT_LOOKUP_CHUNK):
        chunk = wanted[start:start + AGENT_LOOKUP_CHUNK]
        for row in database.execute_sql(_agent_lookup(database, len(chunk)), chunk + chunk):
            agent = _agent_of(row)
            for key_id in (agent.api_key_id, agent.prev_key_id):
                if key_id is not None:
                    found[key_id] = agent
    return {key_id: found[key_id] for key_id in wanted if key_id in found}


def record_auth_event(kind, client_addr=None, key_id=None, server_id=None, detail=None):
    """A life-cycle event (a key rotated, a login): one row each, never summarised."""
    now = utcnow()
    AuthEvent.create(kind=kind, client_addr=(client_addr or None) and client_addr[:45],
                     key_id=key_id, server_id=server_id,
                     detail=detail[:200] if detail else None, created_at=now, last_seen_at=now)


AUTH_SUMMARY_WINDOW = 600  # seconds: identical failures within one are one auth_events row


def record_auth_failure(kind, client_addr=None, key_id=None, server_id=None, detail=None,
                        now=None):
    """Count a failure into its summary row (AuthEvent) in one upsert, so a flood adds to one
    row per window instead of a row per request, also across replicas.
    -> occurrences in this window so far: 1 is the first (worth a WARNING), later ones are not."""
    now = now or utcnow()
    client_addr = (client_addr or None) and client_addr[:45]
    detail = detail[:200] if detail else None
    window = calendar.timegm(now.timetuple()) // AUTH_SUMMARY_WINDOW
    summary = hashlib.sha256("\x1f".join(
        str(part) for part in (kind, client_addr, key_id, server_id, detail, window)
    ).encode()).hexdigest()
    query = (AuthEvent.insert(kind=kind, client_addr=client_addr, key_id=key_id,
                              server_id=server_id, detail=detail, created_at=now,
                              last_seen_at=now, occurrences=1, summary_key=summary)
             .on_conflict(conflict_target=[AuthEvent.summary_key],
                          update={AuthEvent.occurrences: AuthEvent.occurrences + 1,
                                  AuthEvent.last_seen_at: now})
             .returning(AuthEvent.occurrences))
    return query.tuples().execute()[0][0]


def recent_auth_events(access, limit=200):
    """The Security page's rows: the latest activity first (a summary row by its last
    occurrence). Narrowed to a customer: the events of that customer's servers."""
    query = AuthEvent.select()
    if access.customer_id is not None:
        query = query.where(AuthEvent.server_id.in_(
            visible(Server.select(Server.id), access)))
    return list(query.order_by(AuthEvent.last_seen_at.desc(nulls="LAST"),
                               AuthEvent.created_at.desc()).limit(limit))


# Generic cell rate algorithm: a limit of `burst` attempts per `burst * interval` seconds kept
# as one number per limit. An attempt at `now` may go when max(tat, now) + interval lies within
# `burst * interval` of now; it then moves tat on by one interval. A refused attempt changes
# nothing, so hammering does not lengthen the wait.
_TAKE_SQL = (
    "INSERT INTO auth_limits (name, tat) VALUES ({p}, {p}) "
    "ON CONFLICT (name) DO UPDATE SET tat = "
    "(CASE WHEN auth_limits.tat > {p} THEN auth_limits.tat ELSE {p} END) + {p} "
    "WHERE (CASE WHEN auth_limits.tat > {p} THEN auth_limits.tat ELSE {p} END) + {p} <= {p} "
    "RETURNING tat")
_GIVE_BACK_SQL = "UPDATE auth_limits SET tat = tat - {p} WHERE name = {p}"


def take_attempts(limits, now):
    """Take one attempt from each of `limits` ([(name, interval, burst)]) — all or none, in one
    transaction (rows locked in the order given). -> 0 when taken, else the seconds until all
    of them would allow one."""
    database = database_proxy.obj
    sql = _TAKE_SQL.format(p=database.param)
    with database.atomic() as transaction:
        waits = []
        for name, interval, burst in limits:
            row = database.execute_sql(sql, (
                name, now + interval, now, now, interval, now, now, interval,
                now + burst * interval)).fetchone()
            if row is None:  # refused: the row exists, and its tat lies ahead
                limit = AuthLimit.get_or_none(AuthLimit.name == name)
                tat = limit.tat if limit else now + burst * interval
                waits.append(max(tat + interval - burst * interval - now, 0.001))
        if waits:
            transaction.rollback()
            return max(waits)
    return 0


def give_back_attempts(limits):
    """Return the attempts take_attempts took for `limits` (a login that succeeded)."""
    database = database_proxy.obj
    sql = _GIVE_BACK_SQL.format(p=database.param)
    with database.atomic():
        for name, interval, _burst in limits:
            database.execute_sql(sql, (interval, name))


def prune_auth_limits(now):
    """Forget limits whose budget is whole again (tat before `now`, a naive UTC datetime)."""
    return AuthLimit.delete().where(AuthLimit.tat < calendar.timegm(now.timetuple())).execute()


# The largest value of each integer column type (Peewee's field_type): PostgreSQL's INTEGER
# and SERIAL are 4-byte signed, BIGINT 8-byte signed.
_INTEGER_COLUMN_MAX = {"INT": 2**31 - 1, "AUTO": 2**31 - 1, "BIGINT": 2**63 - 1}


def column_max(field):
    """The largest value the column of a Peewee integer field stores."""
    return _INTEGER_COLUMN_MAX[field.field_type]


MAX_ID = column_max(Server.id)  # SERIAL's range; a larger number in a URL names nothing


def valid_id(number):
    return isinstance(number, int) and 0 < number <= MAX_ID


def by_id(model, number):
    """The row with this id, or None — also for an id no row can have (one beyond SERIAL's
    range would make the database raise, not answer "none")."""
    return model.get_or_none(model.id == number) if valid_id(number) else None


def connection_state(last_seen, now, offline_after):
    """"online", "offline" (silent for more than `offline_after` seconds) or "never seen": what
    the servers table, the detail page and the Prometheus bridge show for an agent."""
    if last_seen is None:
        return "never seen"
    return "offline" if (now - last_seen).total_seconds() > offline_after else "online"


# An agent clock further off than this is shown as a warning; NTP keeps clocks within a second.
CLOCK_SKEW_WARNING = 60


def clock_skew(offset, warn_after=None):
    """'clock 2 h behind', 'clock 5 min ahead', or None for a clock within `warn_after`
    seconds (CLOCK_SKEW_WARNING) of the panel's or not yet measured: the warning the
    servers table and the detail page show."""
    if offset is None or abs(offset) <= (CLOCK_SKEW_WARNING if warn_after is None
                                         else warn_after):
        return None
    # To the minute: a Date header's whole seconds make a 2-hour step read 7,199 s.
    size = units.duration(round(abs(offset) / 60) * 60)
    return f"clock {size} {'ahead' if offset > 0 else 'behind'}"


def agent_clock(offset, now):
    """`now` by the agent's clock when that is off by more than the warning threshold, else
    `now`: the agent's samples carry its times, and charts and rules read them by those."""
    if clock_skew(offset) is None:
        return now
    return now + datetime.timedelta(seconds=offset)


def skewed_clocks():
    """{agent_id: clock offset in seconds} of the agents whose clock is off by more than the
    warning threshold: the rules judge those by their own clock."""
    limit = CLOCK_SKEW_WARNING
    return dict(Agent.select(Agent.id, Agent.clock_offset)
                .where((Agent.clock_offset > limit) | (Agent.clock_offset < -limit)).tuples())


def maintenance_now(server_id, now):
    """Condition: the server's maintenance windows open at `now`."""
    return ((MaintenanceWindow.server == server_id) & (MaintenanceWindow.starts_at <= now) &
            (MaintenanceWindow.ends_at > now))


def server_by_name(name):
    return Server.get_or_none(Server.name == name)


# ===== Customers and their users ================================================================

def customers():
    """Every customer, by name."""
    return list(Customer.select().order_by(Customer.name))


def customer_by_slug(slug):
    return Customer.get_or_none(Customer.slug == slug)


def customer_by_name(name):
    return Customer.get_or_none(Customer.name == name)


def customer_servers(customer_id):
    """The customer's servers, by name."""
    return list(Server.select().where(Server.customer == customer_id).order_by(Server.name))


def customer_users(customer_id):
    """The customer's users, by name."""
    return list(Admin.select().where(Admin.customer == customer_id).order_by(Admin.username))


def staff_users():
    """The staff's users (no customer), by name."""
    return list(Admin.select().where(Admin.customer.is_null()).order_by(Admin.username))


def update_customer(customer_id, **fields):
    Customer.update(**fields).where(Customer.id == customer_id).execute()


def move_server(server_id, customer_id):
    """Give the server to this customer (None: to the staff only)."""
    update_server(server_id, customer=customer_id)


def delete_customer(customer_id):
    """The customer, its users and their sessions; its servers go back to the staff with all
    their data (inside a transaction). Spelled out rather than left to ON DELETE: a SQLite
    database without foreign keys enforced must come out the same."""
    Server.update(customer=None, updated_at=utcnow()).where(
        Server.customer == customer_id).execute()
    users = Admin.select(Admin.id).where(Admin.customer == customer_id)
    AdminSession.delete().where(AdminSession.admin.in_(users)).execute()
    ApiToken.delete().where(ApiToken.admin.in_(users) | (ApiToken.customer == customer_id)
                            ).execute()
    Admin.delete().where(Admin.customer == customer_id).execute()
    return Customer.delete().where(Customer.id == customer_id).execute()


def delete_user(user_id):
    """The user and every session and token of theirs."""
    AdminSession.delete().where(AdminSession.admin == user_id).execute()
    ApiToken.delete().where(ApiToken.admin == user_id).execute()
    return Admin.delete().where(Admin.id == user_id).execute()


# ===== Scope: what one user sees (access.py) ====================================================

def visible(query, access):
    """`query` (with Server in it) narrowed to the servers `access` may see: every server for
    staff, the customer's for a customer user. Every query below that returns servers, agents,
    samples, alerts or events takes an Access and passes through here."""
    if access.customer_id is None:
        return query
    return query.where(Server.customer == access.customer_id)


def server_or_none(server_id, access):
    """The agent (its server joined) of this server if `access` may see it, else None — the
    same None for a server that does not exist and for another customer's, so a page never
    tells them apart. Per-agent queries (charts, processes) take the agent this returns."""
    if not valid_id(server_id):
        return None
    return visible(Agent.select(Agent, Server).join(Server).where(Server.id == server_id),
                   access).first()


def servers_with_agents():
    """[(server, agent)] for every server, ordered by name. Every server is created with its
    agent row (operations.add_server), so an inner join loses none."""
    agents = Agent.select(Agent, Server).join(Server).order_by(Server.name, Server.id)
    return [(agent.server, agent) for agent in agents]


SUMMARY_COLUMNS = (Metric.agent, Metric.timestamp, Metric.cpu_usage, Metric.cpu_load_1min,
                   Metric.memory_used, Metric.memory_total, Metric.disk_max_percent,
                   Metric.network_rx_rate, Metric.network_tx_rate)


# The figures the servers table shows (figures.TABLE_COLUMNS) and the totals their shares are of.
FLEET_FIGURES = tuple(dict.fromkeys(column for figure in figures.TABLE_COLUMNS
                                    for column in (figure.column, figure.share_of) if column))
# The servers' own traffic quota (quotas.py): billing day, allowance, basis.
QUOTA_COLUMNS = ("billing_day", "traffic_allowance", "traffic_basis")
FLEET_IDENTITY = ("server_id", "name", "critical", "agent_id", "hostname", "agent_status",
                  "agent_version", "last_seen", "clock_offset")
FLEET_COLUMNS = (*FLEET_IDENTITY, *QUOTA_COLUMNS, *FLEET_FIGURES)


def fleet_rows(columns, access, narrow=None):
    """Driver tuples, one per server by name, of `columns(latest)`: columns of Server, Agent,
    LatestSample and `latest`, an alias of Metric joined on each agent's newest sample (NULLs
    for an agent that never reported). Timestamps come back as datetimes on both databases.
    `narrow(query, latest)` may filter, order and window the query (fleet_table.py).

    Tuples straight from the driver, not model objects: for 1,000 servers, building Server and
    Agent and Metric objects cost more than the query (a third of the servers page's time).
    """
    latest = Metric.alias()
    selected = columns(latest)
    query = (Server.select(*selected)
             .join(Agent, on=(Agent.server == Server.id))
             .join(LatestSample, peewee.JOIN.LEFT_OUTER, on=(LatestSample.agent == Agent.id))
             .join(latest, peewee.JOIN.LEFT_OUTER, on=(
                 (latest.agent == LatestSample.agent) &
                 (latest.timestamp == LatestSample.timestamp)))
             .order_by(Server.name, Server.id))
    if narrow is not None:
        query = narrow(query, latest)
    sql, params = visible(query, access).sql()
    rows = database_proxy.execute_sql(sql, params).fetchall()
    if not is_postgres():  # SQLite keeps timestamps as text
        times = [index for index, column in enumerate(selected)
                 if isinstance(getattr(column, "field", column), peewee.DateTimeField)]
        if times:
            convert = Agent.last_seen.python_value
            rows = [list(row) for row in rows]
            for row in rows:
                for index in times:
                    row[index] = convert(row[index])
    return rows


def fleet_columns(latest):
    """FLEET_COLUMNS as selected from the fleet's join (fleet_rows)."""
    return (Server.id, Server.name, Server.critical, Agent.id, Agent.hostname, Agent.status,
            Agent.agent_version, Agent.last_seen, Agent.clock_offset,
            *(getattr(Server, column) for column in QUOTA_COLUMNS),
            *(getattr(latest, column) for column in FLEET_FIGURES))


def fleet(access, narrow=None):
    """One tuple per server `access` sees (FLEET_COLUMNS), by name unless `narrow` orders
    them: the servers table in one query."""
    return fleet_rows(fleet_columns, access, narrow)


def latest_sample_per_agent(agent_ids, columns=SUMMARY_COLUMNS):
    """{agent_id: newest Metric (with `columns` only)}: the latest_samples pointer, then a
    primary-key probe each.

    A `DISTINCT ON`/`GROUP BY` over the samples reads every row of the range; this reads one
    row per agent whatever the table's size. The servers table needs a handful of typed
    columns, not each sample's compressed detail.
    """
    agent_ids = list(agent_ids)
    if not agent_ids:
        return {}
    rows = (Metric.select(*columns).join(LatestSample, on=(
        (LatestSample.agent == Metric.agent) & (LatestSample.timestamp == Metric.timestamp)))
        .where(LatestSample.agent.in_(agent_ids)))
    return {row.agent_id: row for row in rows}


def sample_at(agent_id, moment, within=datetime.timedelta(minutes=5)):
    """The agent's full sample taken at `moment` or the last one before it, if no older than
    `within`: "what was eating the CPU at 03:12?"."""
    return (Metric.select().where((Metric.agent == agent_id) & (Metric.timestamp <= moment) &
                                  (Metric.timestamp > moment - within))
            .order_by(Metric.timestamp.desc()).first())


def details_at(agent_id, moments):
    """[(timestamp, detail)] of the agent's samples at exactly these times, oldest first."""
    moments = list(moments)
    if not moments:
        return []
    rows = (Metric.select(Metric.timestamp, Metric.detail)
            .where((Metric.agent == agent_id) & Metric.timestamp.in_(moments))
            .order_by(Metric.timestamp).tuples())
    return list(rows)


def server_events_since(server_ids, since):
    """{server_id: [ServerEvent, ...]} from `since`, plus each server's last event before it
    (which says whether the window opened up or down)."""
    server_ids = list(server_ids)
    events = {server_id: [] for server_id in server_ids}
    if not server_ids:
        return events
    for event in (ServerEvent.select().where(ServerEvent.server.in_(server_ids) &
                                             (ServerEvent.at >= since))
                  .order_by(ServerEvent.at)):
        events[event.server_id].append(event)
    return events


def firing_alert_count(access):
    return visible(Alert.select().join(Server).where(Alert.state == "firing"), access).count()


# ===== Alerts, channels and deliveries ==========================================================

def under_maintenance(server_id, now):
    return MaintenanceWindow.select().where(maintenance_now(server_id, now)).exists()


def current_maintenance(server_id, now):
    """The open maintenance window that ends last, or None."""
    return (MaintenanceWindow.select().where(maintenance_now(server_id, now))
            .order_by(MaintenanceWindow.ends_at.desc()).first())


def routed_channels(server_id):
    return list(Channel.select().join(ServerChannel).where(ServerChannel.server == server_id))


def delete_channel(channel_id):
    return Channel.delete().where(Channel.id == channel_id).execute()


def add_route(server_id, channel_id):
    ServerChannel.insert(server=server_id, channel=channel_id).on_conflict_ignore().execute()


def remove_route(server_id, channel_id):
    ServerChannel.delete().where((ServerChannel.server == server_id) &
                                 (ServerChannel.channel == channel_id)).execute()


# ===== Channels by owner (issue 13): the staff's, or one customer's ============================

def owned_by(customer_id):
    """Condition: the channels of this customer (None: the staff's)."""
    return Channel.customer.is_null() if customer_id is None else Channel.customer == customer_id


def visible_channels(access):
    """The channels `access` sees, with their customers: every one for staff (the staff's
    first), a customer's own for its users and for staff narrowed to it (?customer=)."""
    query = Channel.select(Channel, Customer).join(Customer, peewee.JOIN.LEFT_OUTER)
    if access.customer_id is not None:
        query = query.where(Channel.customer == access.customer_id)
    return list(query.order_by(Channel.customer.is_null(False), Customer.name, Channel.name))


def channel_or_none(channel_id, access):
    """The channel if `access` may see it, else None — the same None for one that does not
    exist and for another customer's or the staff's, so a customer never tells them apart."""
    if not valid_id(channel_id):
        return None
    query = Channel.select().where(Channel.id == channel_id)
    if access.customer_id is not None:
        query = query.where(Channel.customer == access.customer_id)
    return query.first()


def channel_of(customer_id, name):
    """The channel of this owner (None: the staff) with this name, or None."""
    return Channel.get_or_none(owned_by(customer_id) & (Channel.name == name))


def default_channels_of(customer_id):
    """The default channels of this owner (None: the staff)."""
    return list(Channel.select().where(owned_by(customer_id) &
                                       (Channel.is_default == True)))  # noqa: E712


def update_channel(channel_id, **fields):
    Channel.update(**fields).where(Channel.id == channel_id).execute()


def staff_channels_for_customer(customer_id):
    """The staff channels an admin chose to also get this customer's alerts."""
    return list(Channel.select().join(CustomerStaffChannel, on=(
        CustomerStaffChannel.channel == Channel.id))
        .where((CustomerStaffChannel.customer == customer_id) & Channel.customer.is_null())
        .order_by(Channel.name))


def staff_channel_choices(access):
    """Every (customer, staff channel) choice staff `access` sees (one customer's when
    narrowed), both joined, by customer and channel name."""
    query = (CustomerStaffChannel.select(CustomerStaffChannel, Customer, Channel)
             .join(Customer).switch(CustomerStaffChannel).join(Channel))
    if access.customer_id is not None:
        query = query.where(CustomerStaffChannel.customer == access.customer_id)
    return list(query.order_by(Customer.name, Channel.name))


def choose_staff_channel(customer_id, channel_id):
    CustomerStaffChannel.insert(customer=customer_id, channel=channel_id) \
        .on_conflict_ignore().execute()


def unchoose_staff_channel(customer_id, channel_id):
    return CustomerStaffChannel.delete().where(
        (CustomerStaffChannel.customer == customer_id) &
        (CustomerStaffChannel.channel == channel_id)).execute()


def visible_routes(access):
    """The (server, channel) routes `access` sees, servers and channels joined, by their
    names: every one for staff; for a customer's users (and staff narrowed to a customer)
    those of the customer's servers to the customer's own channels — a staff channel routed
    to their server stays the staff's to know."""
    query = (ServerChannel.select(ServerChannel, Server, Channel)
             .join(Server).switch(ServerChannel).join(Channel))
    if access.customer_id is not None:
        query = query.where((Server.customer == access.customer_id) &
                            (Channel.customer == access.customer_id))
    return list(query.order_by(Server.name, Channel.name))


def drop_foreign_routes(server_id, customer_id):
    """Remove the server's routes to channels that are neither the staff's nor this customer's
    (after the server moved): another customer's channel never gets its alerts."""
    foreign = Channel.customer.is_null(False)
    if customer_id is not None:
        foreign &= Channel.customer != customer_id
    foreign = Channel.select(Channel.id).where(foreign)
    return ServerChannel.delete().where((ServerChannel.server == server_id) &
                                        ServerChannel.channel.in_(foreign)).execute()


def delete_customer_channels(customer_id):
    """The customer's channels with their routes, deliveries and choices (inside a
    transaction; spelled out for an SQLite database without foreign keys enforced)."""
    theirs = Channel.select(Channel.id).where(Channel.customer == customer_id)
    Delivery.delete().where(Delivery.channel.in_(theirs)).execute()
    ServerChannel.delete().where(ServerChannel.channel.in_(theirs)).execute()
    CustomerStaffChannel.delete().where(CustomerStaffChannel.customer == customer_id).execute()
    return Channel.delete().where(Channel.customer == customer_id).execute()


def set_customer_two_factor(customer_id, required):
    Customer.update(require_two_factor=bool(required)).where(
        Customer.id == customer_id).execute()


def open_alert_of(server_id, rule):
    return Alert.get_or_none((Alert.server == server_id) & (Alert.open_key == rule))


def close_alert(alert_id, rule, now):
    """Resolve the alert if it is still open for `rule`; -> 1 when this call resolved it."""
    return Alert.update(state="resolved", open_key=None, resolved_at=now).where(
        (Alert.id == alert_id) & (Alert.open_key == rule)).execute()


def firing_alerts(access, server_id=None):
    """Firing alerts `access` sees, oldest first, with their servers (or only those of one
    server)."""
    query = Alert.select(Alert, Server).join(Server).where(Alert.state == "firing")
    if server_id is not None:
        query = query.where(Alert.server == server_id)
    return list(visible(query, access).order_by(Alert.started_at))


def alert_history(access, limit=100):
    """Alerts no longer firing that `access` sees, latest first, with their servers."""
    return list(visible(Alert.select(Alert, Server).join(Server)
                        .where(Alert.state != "firing"), access)
                .order_by(Alert.started_at.desc()).limit(limit))


def recent_alerts(limit):
    """Every alert, latest first, with its server."""
    return list(Alert.select(Alert, Server).join(Server)
                .order_by(Alert.started_at.desc()).limit(limit))


def deliveries_of(alert_id):
    return list(Delivery.select().where(Delivery.alert == alert_id))


def last_delivery_per_channel(scan=500):
    """{channel id: its latest Delivery} among the latest `scan` deliveries."""
    last = {}
    for delivery in Delivery.select().order_by(Delivery.id.desc()).limit(scan):
        last.setdefault(delivery.channel_id, delivery)
    return last


def latest_test_delivery(channel_id):
    return (Delivery.select().where((Delivery.channel == channel_id) & (Delivery.event == "test"))
            .order_by(Delivery.id.desc()).first())


def release_stale_deliveries(claimed_before):
    """Give back the claims of a replica that died while sending."""
    Delivery.update(status="pending").where((Delivery.status == "sending") &
                                            (Delivery.next_attempt_at < claimed_before)).execute()


def due_deliveries(now, limit, only=None):
    """Pending deliveries due by `now` (`only`: among these ids), oldest first, with their
    channels."""
    due = (Delivery.status == "pending") & (Delivery.next_attempt_at <= now)
    if only is not None:
        due &= Delivery.id.in_(list(only))
    return list(Delivery.select(Delivery, Channel).join(Channel).where(due)
                .order_by(Delivery.id).limit(limit))


def claim_delivery(delivery_id):
    """True when this call claimed the pending delivery (another replica may have first)."""
    return bool(Delivery.update(status="sending").where(
        (Delivery.id == delivery_id) & (Delivery.status == "pending")).execute())


def record_delivery(delivery_id, **outcome):
    """Write what sending a delivery came to: status, attempts, error, next attempt or sent_at."""
    Delivery.update(**outcome).where(Delivery.id == delivery_id).execute()


def alert_rules_with_servers():
    """Every rule, the global ones first, by metric; an override's server joined."""
    return list(AlertRule.select(AlertRule, Server).join(Server, peewee.JOIN.LEFT_OUTER)
                .order_by(AlertRule.server.is_null(False), AlertRule.metric))


def server_names(access):
    """The id and name (only) of every server `access` sees, by name."""
    return list(visible(Server.select(Server.id, Server.name), access).order_by(Server.name))


# ===== Servers, admins and sessions =============================================================

def agent_of_server(server_id):
    """The agent of the server with this id, its server joined; None when there is none. For
    the CLI and operations; pages use server_or_none (scoped)."""
    return Agent.select(Agent, Server).join(Server).where(Server.id == server_id).first()


def agent_of_server_named(name):
    return Agent.select(Agent, Server).join(Server).where(Server.name == name).first()


def public_status_servers(customer_id=None):
    """The published servers of one customer (its /status/<slug>) or, with None, of the staff
    only (/status: a customer's published server is on its own page, never on the staff's),
    by name."""
    owner = Server.customer.is_null() if customer_id is None else Server.customer == customer_id
    return list(Server.select().where((Server.public_status == True) & owner)  # noqa: E712
                .order_by(Server.name))


def customer_status_page(slug):
    """The customer whose status page is at /status/<slug> and on, else None: the same None
    for an unknown slug and for a page turned off."""
    return Customer.get_or_none((Customer.slug == slug)
                                & (Customer.status_page == True))  # noqa: E712


def update_server(server_id, **fields):
    """Change a server's columns (by name) and its updated_at."""
    Server.update({**{getattr(Server, name): value for name, value in fields.items()},
                   Server.updated_at: utcnow()}).where(Server.id == server_id).execute()


def delete_server_and_data(server_id, agent_id=None):
    """The server, its agent and all its data (call inside a transaction)."""
    # Samples and rollups hang off the agent; the cascade would take them too, but on a big
    # table explicit deletes keep each statement's plan simple and visible.
    if agent_id is not None:
        for model in (LatestSample, Metric, Rollup5m, Rollup1h, TrafficHour, TrafficDay,
                      CheckState):
            model.delete().where(model.agent == agent_id).execute()
    Server.delete().where(Server.id == server_id).execute()


def silent_online_agents(cutoff):
    """Agents (servers joined) of servers still online whose last report is before `cutoff`."""
    return list(Agent.select(Agent, Server).join(Server)
                .where((Server.state == "online") & (Agent.last_seen < cutoff)))


def change_server_state(server_id, state, since, was):
    """Set the server's state if it is still `was`; -> 1 when this call changed it (another
    replica may have first)."""
    return Server.update(state=state, state_since=since).where(
        (Server.id == server_id) & (Server.state == was)).execute()


def end_maintenance_windows(server_id, now):
    return MaintenanceWindow.update(ends_at=now).where(maintenance_now(server_id, now)).execute()


def rule_of(metric, server_id=None):
    """The global rule for `metric`, or the server's override; None when there is none."""
    scope = AlertRule.server.is_null() if server_id is None else AlertRule.server == server_id
    return AlertRule.get_or_none((AlertRule.metric == metric) & scope)


def update_rule(rule_id, **fields):
    AlertRule.update(**fields).where(AlertRule.id == rule_id).execute()


def any_admin():
    return Admin.select().exists()


def admin_by_username(username):
    return Admin.get_or_none(Admin.username == username)


def set_admin_password(admin_id, password_hash, role, customer_id=None):
    """New password, role and customer; every session of that account ends (a suspected leak,
    a departure)."""
    Admin.update(password_hash=password_hash, role=role, customer=customer_id).where(
        Admin.id == admin_id).execute()
    AdminSession.delete().where(AdminSession.admin == admin_id).execute()


def session_by_token_hash(token_hash):
    """The session (its admin joined) whose token hashes to this, expired or not; or None."""
    return (AdminSession.select(AdminSession, Admin).join(Admin)
            .where(AdminSession.token_hash == token_hash).first())


def end_session_by_token_hash(token_hash):
    AdminSession.delete().where(AdminSession.token_hash == token_hash).execute()


# ===== Two-factor ===============================================================================

def admin_by_id(admin_id):
    return Admin.get_or_none(Admin.id == admin_id)


def start_two_factor_enrolment(admin_id, secret_box):
    """A new pending secret (two-factor stays off until confirm_two_factor)."""
    Admin.update(totp_secret_box=secret_box, totp_enabled_at=None, totp_last_step=None) \
        .where(Admin.id == admin_id).execute()


def confirm_two_factor(admin_id, step, now, recovery_hashes):
    """Turn two-factor on with the step that confirmed it and a new set of recovery codes
    (the old set, if any, goes). -> False when enrolment was not pending any more (confirmed or
    cancelled by another request meanwhile)."""
    with database_proxy.atomic():
        turned_on = (Admin.update(totp_enabled_at=now, totp_last_step=step)
                     .where((Admin.id == admin_id) & Admin.totp_secret_box.is_null(False) &
                            Admin.totp_enabled_at.is_null()).execute())
        if not turned_on:
            return False
        RecoveryCode.delete().where(RecoveryCode.admin == admin_id).execute()
        RecoveryCode.insert_many([{"admin": admin_id, "code_hash": code_hash, "created_at": now}
                                  for code_hash in recovery_hashes]).execute()
    return True


def end_two_factor(admin_id):
    """Two-factor off: the secret, its recovery codes and any login waiting for a code go."""
    with database_proxy.atomic():
        Admin.update(totp_secret_box=None, totp_enabled_at=None, totp_last_step=None) \
            .where(Admin.id == admin_id).execute()
        RecoveryCode.delete().where(RecoveryCode.admin == admin_id).execute()
        LoginChallenge.delete().where(LoginChallenge.admin == admin_id).execute()


def accept_totp_step(admin_id, step):
    """Record `step` as the user's last used one if it is later than the stored one: one
    statement, so of concurrent requests with the same code only one is accepted."""
    return bool(Admin.update(totp_last_step=step)
                .where((Admin.id == admin_id) & (Admin.totp_last_step.is_null() |
                                                 (Admin.totp_last_step < step))).execute())


def use_recovery_code(admin_id, code_hash, now):
    """Spend an unused recovery code of the user. -> True when it was one."""
    return bool(RecoveryCode.update(used_at=now)
                .where((RecoveryCode.admin == admin_id) & (RecoveryCode.code_hash == code_hash) &
                       RecoveryCode.used_at.is_null()).execute())


def recovery_codes_left(admin_id):
    return (RecoveryCode.select().where((RecoveryCode.admin == admin_id) &
                                        RecoveryCode.used_at.is_null()).count())


def create_login_challenge(admin_id, token_hash, expires_at):
    LoginChallenge.create(token_hash=token_hash, admin=admin_id, expires_at=expires_at)


def login_challenge_by_token_hash(token_hash):
    """The challenge (its admin joined) whose token hashes to this, expired or not; or None."""
    return (LoginChallenge.select(LoginChallenge, Admin).join(Admin)
            .where(LoginChallenge.token_hash == token_hash).first())


def end_login_challenge(token_hash):
    """Spend a challenge. -> True for the one request that did (single use under concurrency)."""
    return bool(LoginChallenge.delete().where(LoginChallenge.token_hash == token_hash).execute())


# ===== Agents and their keys ====================================================================

def update_agent(agent_id, **fields):
    Agent.update(**fields).where(Agent.id == agent_id).execute()


def store_key_fingerprint(agent, fingerprint, current=True):
    """Store the fingerprint of the agent's current (or previous) key if its hash is still the
    row's and no fingerprint is stored yet."""
    if current:
        Agent.update(api_key_fingerprint=fingerprint).where(
            (Agent.id == agent.id) & (Agent.api_key_hash == agent.api_key_hash)
            & Agent.api_key_fingerprint.is_null()).execute()
    else:
        Agent.update(prev_key_fingerprint=fingerprint).where(
            (Agent.id == agent.id) & (Agent.prev_key_hash == agent.prev_key_hash)
            & Agent.prev_key_fingerprint.is_null()).execute()


def retire_previous_key(agent_id, now):
    """Forget the agent's previous key and its sealed new one; -> 1 when this call did."""
    return Agent.update(prev_key_id=None, prev_key_hash=None, prev_key_fingerprint=None,
                        prev_key_expires_at=None, pending_key_box=None, key_switched_at=now) \
        .where((Agent.id == agent_id) & Agent.prev_key_id.is_null(False)).execute()


# ===== History: rollups, chart rows, retention, partitions ======================================

def _in_window(model, moment, since=None, spans=(), width=None):
    """Condition on `model`'s time field `moment`: from `since`, or within one of `spans`
    ((agent, start) pairs, each `width` long)."""
    if since is not None:
        return moment >= since
    # One flat OR: chained `|` nests a level per pair, past SQLite's parser stack.
    return peewee.NodeList([(model.agent == agent) & (moment >= start) & (moment < start + width)
                            for agent, start in spans], " OR ", parens=True)


def raw_rows_to_roll_up(columns, since=None, spans=(), width=None):
    """Dicts of these server_metrics `columns` (agent and timestamp first) from `since`, or in
    `spans` of `width` (see _in_window)."""
    selected = [Metric.agent, Metric.timestamp] + [getattr(Metric, name) for name in columns]
    return list(Metric.select(*selected)
                .where(_in_window(Metric, Metric.timestamp, since, spans, width)).dicts())


def rollup_rows(model, since=None, spans=(), width=None):
    """Dicts of a rollup tier's rows from `since`, or in `spans` of `width`."""
    return list(model.select().where(_in_window(model, model.bucket, since, spans, width)).dicts())


def upsert_rollups(model, rows):
    """Write rollup rows over any of the same (agent, bucket), 500 a transaction. -> count."""
    if not rows:
        return 0
    names = [f for f in model._meta.sorted_field_names if f not in ("agent", "bucket")]
    for chunk in peewee.chunked(rows, 500):
        with database_proxy.atomic():
            model.insert_many(chunk).on_conflict(
                conflict_target=[model.agent, model.bucket],
                preserve=[getattr(model, name) for name in names]).execute()
    return len(rows)


def claim_dirty_buckets(limit):
    """Take up to `limit` dirty (agent, bucket) pairs and delete their rows, inside the caller's
    transaction. On PostgreSQL they are locked in the writer's order, (agent, bucket), before
    they are deleted: a writer re-marking two of them never waits on this run in a circle."""
    claim = (DirtyBucket.select(DirtyBucket.agent, DirtyBucket.bucket)
             .order_by(DirtyBucket.agent, DirtyBucket.bucket).limit(limit))
    if is_postgres():
        claim = claim.for_update()
    pairs = list(claim.tuples())
    if pairs:
        DirtyBucket.delete().where(
            peewee.Tuple(DirtyBucket.agent, DirtyBucket.bucket).in_(pairs)).execute()
    return pairs


def chart_rows(agent_id, start, end, model=None, columns=()):
    """Tuples of one agent's rows between start and end, oldest first: `columns` of
    server_metrics (model None) or of a rollup tier's `model`, after its time column.

    Straight from the driver: Peewee's per-value converters cost more than PostgreSQL's
    execution for a month of rollups. Only the time column (first) needs a hand on SQLite,
    which stores it as text; the driver returns numbers as numbers and PostgreSQL timestamps
    as datetimes already."""
    model = model or Metric
    moment = Metric.timestamp if model is Metric else model.bucket
    query = (model.select(moment, *(getattr(model, name) for name in columns))
             .where((model.agent == agent_id) & (moment >= start) & (moment <= end))
             .order_by(moment))
    sql, params = query.sql()
    rows = database_proxy.execute_sql(sql, params).fetchall()
    if rows and isinstance(rows[0][0], str):
        convert = moment.python_value
        rows = [(convert(row[0]),) + tuple(row[1:]) for row in rows]
    return rows


def _delete_in_batches(model, key_columns, condition, batch=5000):
    """Delete in small transactions so ingest never waits long (SQLite has one writer)."""
    total = 0
    while True:
        keys = model.select(*key_columns).where(condition).limit(batch)
        with database_proxy.atomic():
            removed = model.delete().where(peewee.Tuple(*key_columns).in_(keys)).execute()
        total += removed
        if removed < batch:
            return total


def prune_samples(before):
    return _delete_in_batches(Metric, [Metric.agent, Metric.timestamp], Metric.timestamp < before)


def prune_rollups(model, before):
    return _delete_in_batches(model, [model.agent, model.bucket], model.bucket < before)


def prune_auth_events(before):
    return AuthEvent.delete().where(AuthEvent.created_at < before).execute()


def prune_deliveries(before):
    """Deliveries that ended (sent or failed) before `before`; pending ones stay."""
    return Delivery.delete().where(Delivery.status.in_(["sent", "failed"]) &
                                   (Delivery.created_at < before)).execute()


def prune_sessions(now):
    return AdminSession.delete().where(AdminSession.expires_at < now).execute()


def prune_login_challenges(now):
    return LoginChallenge.delete().where(LoginChallenge.expires_at < now).execute()


def create_day_partition(day):
    """PostgreSQL: server_metrics' partition for one day, unless it exists. -> its name.
    Raises DatabaseError when rows of that day already sit in the default partition."""
    name = f"server_metrics_p{day:%Y%m%d}"
    with database_proxy.atomic():
        database_proxy.execute_sql(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF server_metrics "
            f"FOR VALUES FROM ('{day}') TO ('{day + datetime.timedelta(days=1)}')")
    return name


def day_partitions():
    """PostgreSQL: the names of server_metrics' partitions, sorted."""
    cursor = database_proxy.execute_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'server_metrics'")
    return sorted(row[0] for row in cursor.fetchall())


def drop_day_partition(name):
    """PostgreSQL: drop one of day_partitions() (the caller took the name from there)."""
    with database_proxy.atomic():
        database_proxy.execute_sql(f"DROP TABLE {name}")


# ===== Jobs: locks and the alert rules' window ==================================================

def try_job_lock(key):
    """PostgreSQL: this connection's advisory lock `key`, if no other replica holds it."""
    return database_proxy.execute_sql("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]


def release_job_lock(key):
    database_proxy.execute_sql("SELECT pg_advisory_unlock(%s)", (key,))


def all_rules():
    return list(AlertRule.select())


def watched_samples(columns, since=None, agent_id=None, start=None, end=None):
    """{agent_id: [dict of timestamp and `columns`]}, oldest first per agent: every agent's
    samples from `since`, or one agent's between `start` and `end`."""
    selected = (Metric.agent, Metric.timestamp, *(getattr(Metric, name) for name in columns))
    if agent_id is None:
        condition = Metric.timestamp >= since
    else:
        condition = (Metric.agent == agent_id) & (Metric.timestamp >= start) & \
            (Metric.timestamp <= end)
    samples = {}
    for row in Metric.select(*selected).where(condition).order_by(Metric.timestamp).dicts():
        samples.setdefault(row["agent"], []).append(row)
    return samples


def agents_with_servers(agent_ids):
    """Agent rows (servers joined) of these ids."""
    return list(Agent.select(Agent, Server).join(Server).where(Agent.id.in_(list(agent_ids))))


def open_alert_keys():
    """{(server_id, rule)} of the alerts open now."""
    return {(alert.server_id, alert.open_key) for alert in
            Alert.select(Alert.server, Alert.open_key).where(Alert.open_key.is_null(False))}


def record_server_event(server_id, kind, at, detail=None):
    return ServerEvent.create(server=server_id, kind=kind, at=at, detail=detail)


def firing_counts():
    """{server_id: alerts firing}, for servers that have any."""
    return dict(Alert.select(Alert.server, peewee.fn.COUNT(Alert.id))
                .where(Alert.state == "firing").group_by(Alert.server).tuples())


# ===== Service checks ===========================================================================

def latest_services(seen_since):
    """[(agent with its server, taken at, detail dict)] of the newest sample of every agent
    heard from since `seen_since` (by the panel's clock): what the service checks judge."""
    rows = (Agent.select(Agent, Server, LatestSample.timestamp, Metric.detail)
            .join(Server).switch(Agent)
            .join(LatestSample, on=(LatestSample.agent == Agent.id))
            .join(Metric, on=((Metric.agent == LatestSample.agent) &
                              (Metric.timestamp == LatestSample.timestamp)))
            .where(Agent.last_seen >= seen_since).objects())
    return [(agent, agent.timestamp, agent.detail or {}) for agent in rows]


# Up to this many servers or agents a read names them (IN); beyond, it reads every row in one
# scan, which the database does faster than matching a long list (and SQLite caps a statement's
# parameters). A caller picks its rows out of the answer.
NAMED_IDS_MAX = 1000


def of_ids(query, field, ids):
    """`query` narrowed to rows whose `field` is in `ids` (None: all), when they are few
    enough to name."""
    if ids is None:
        return query
    ids = list(ids)
    return query.where(field.in_(ids)) if len(ids) <= NAMED_IDS_MAX else query


def service_summary(access, agent_ids=None):
    """{agent_id: (services seen [(name, down)], problems [(metric, subject, text)])} from the
    check states of every agent `access` sees (of `agent_ids` at least, when given): the
    servers table's Services column, in one query."""
    summary = {}
    query = CheckState.select(CheckState.agent, CheckState.metric, CheckState.subject,
                              CheckState.bad_since, CheckState.text)
    query = of_ids(query, CheckState.agent, agent_ids)
    if access.customer_id is not None:
        query = visible(query.join(Agent).join(Server), access)
    # Straight from the cursor: a fleet's check states are tens of thousands of rows, and only
    # whether bad_since is set is read of the one timestamp.
    rows = database_proxy.execute(query.order_by(CheckState.agent, CheckState.metric,
                                                 CheckState.subject))
    for agent_id, metric, subject, bad_since, text in rows:
        services, problems = summary.setdefault(agent_id, ([], []))
        if metric == "service_down":
            services.append((subject, bad_since is not None))
        if bad_since is not None:
            problems.append((metric, subject, text))
    return summary


# ===== Mount history and disk-full forecasts (forecasts.py) =====================================

MOUNT_NAME = MountHour.mount.max_length


def record_mount_hours(rows):
    """Upsert {"agent", "mount", "bucket", "used", "capacity"} rows: the hour's newest sample
    wins."""
    rows = [{**row, "mount": row["mount"][:MOUNT_NAME]} for row in rows]
    for chunk in peewee.chunked(rows, 200):
        MountHour.insert_many(chunk).on_conflict(
            conflict_target=[MountHour.agent, MountHour.mount, MountHour.bucket],
            preserve=[MountHour.used, MountHour.capacity]).execute()
    return len(rows)


def agents_with_mount_history(since):
    """The ids of the agents with mount history from `since`, in order."""
    return [agent_id for (agent_id,) in MountHour.select(MountHour.agent).distinct()
            .where(MountHour.bucket >= since).order_by(MountHour.agent).tuples()]


def mount_history(since, agent_ids):
    """{agent_id: {mount: [(bucket, used, capacity)], oldest first}} of these agents from
    `since`. Read from the cursor, not through Peewee's row conversion: a fleet's week is
    hundreds of thousands of rows, and converting each field cost three times the query."""
    history = {}
    query = (MountHour.select(MountHour.agent, MountHour.mount, MountHour.bucket,
                              MountHour.used, MountHour.capacity)
             .where((MountHour.bucket >= since) & MountHour.agent.in_(list(agent_ids)))
             .order_by(MountHour.agent, MountHour.mount, MountHour.bucket))
    parse = datetime.datetime.fromisoformat
    for agent_id, mount, bucket, used, capacity in database_proxy.execute(query):
        if not isinstance(bucket, datetime.datetime):  # SQLite keeps text
            bucket = parse(bucket)
        history.setdefault(agent_id, {}).setdefault(mount, []).append((bucket, used, capacity))
    return history


def store_forecasts(agent_id, items, now):
    """Replace one agent's forecasts with `items` [forecasts.Forecast] (inside a transaction):
    a mount no longer in its history is forgotten."""
    MountForecast.delete().where(MountForecast.agent == agent_id).execute()
    rows = [{"agent": agent_id, "mount": item.mount[:MOUNT_NAME], "used": item.used,
             "capacity": item.capacity, "bytes_per_day": item.bytes_per_day,
             "full_at": item.full_at, "reason": item.reason, "computed_at": now}
            for item in items]
    for chunk in peewee.chunked(rows, 200):
        MountForecast.insert_many(chunk).execute()


def forecasts_of(agent_ids=None):
    """{agent_id: [forecasts.Forecast], soonest full first} of these agents (None: every
    agent's)."""
    query = MountForecast.select(MountForecast)
    if agent_ids is not None:
        agent_ids = list(agent_ids)
        if not agent_ids:
            return {}
        query = query.where(MountForecast.agent.in_(agent_ids))
    found = {}
    for row in query.order_by(MountForecast.agent, MountForecast.mount):
        found.setdefault(row.agent_id, []).append(forecasts.Forecast(
            row.mount, row.used, row.capacity, row.bytes_per_day, row.full_at, row.reason))
    far = datetime.datetime.max
    return {agent_id: sorted(items, key=lambda f: f.full_at or far)
            for agent_id, items in found.items()}


def soonest_full(access, agent_ids=None):
    """{agent_id: (mount, full at)} of the mount each agent `access` sees (of `agent_ids` at
    least, when given) will fill first, of those filling: the servers table's "Disk full in",
    in one query."""
    query = MountForecast.select(MountForecast.agent, MountForecast.mount,
                                 MountForecast.full_at).where(MountForecast.full_at.is_null(False))
    query = of_ids(query, MountForecast.agent, agent_ids)
    if access.customer_id is not None:
        query = visible(query.join(Agent).join(Server), access)
    soonest = {}
    for agent_id, mount, full_at in query.order_by(MountForecast.full_at.desc()).tuples():
        soonest[agent_id] = (mount, full_at)  # the last written is the soonest
    return soonest


def forget_forecasts_before(moment):
    return MountForecast.delete().where(MountForecast.computed_at < moment).execute()


def prune_mount_hours(cutoff):
    return MountHour.delete().where(MountHour.bucket < cutoff).execute()


def check_states(agent_ids):
    """{(agent_id, metric): {subject: CheckState}} of these agents."""
    agent_ids = list(agent_ids)
    states = {}
    if agent_ids:
        for state in CheckState.select().where(CheckState.agent.in_(agent_ids)):
            states.setdefault((state.agent_id, state.metric), {})[state.subject] = state
    return states


def store_check_states(agent_id, metric, steps, now):
    """Write what checks.steps() decided for one agent and check (inside a transaction): a
    subject gone from the sample is forgotten, the others upserted."""
    gone = [step.subject[:300] for step in steps if step.gone]
    if gone:
        CheckState.delete().where((CheckState.agent == agent_id) & (CheckState.metric == metric)
                                  & CheckState.subject.in_(gone)).execute()
    rows = [{"agent": agent_id, "metric": metric, "subject": step.subject[:300],
             "bad_since": step.bad_since, "text": (step.text or "")[:300],
             "was": step.was[:300] if step.was else None, "value": step.value,
             "updated_at": now} for step in steps if not step.gone]
    for chunk in peewee.chunked(rows, 200):
        CheckState.insert_many(chunk).on_conflict(
            conflict_target=[CheckState.agent, CheckState.metric, CheckState.subject],
            preserve=[CheckState.bad_since, CheckState.text, CheckState.was, CheckState.value,
                      CheckState.updated_at]).execute()


# ===== API tokens (panel/tokens.py) =============================================================

def token_by_token_id(token_id):
    """The token with this public id, its owner joined, or None (revoked and expired ones too:
    tokens.py tells them apart)."""
    return (ApiToken.select(ApiToken, Admin).join(Admin)
            .where(ApiToken.token_id == token_id).first())


def tokens_of(admin_id):
    """A user's tokens, newest first, with their customers' names (LEFT OUTER: staff-wide)."""
    return list(ApiToken.select(ApiToken, Customer)
                .join(Customer, peewee.JOIN.LEFT_OUTER, on=ApiToken.customer == Customer.id)
                .where(ApiToken.admin == admin_id)
                .order_by(ApiToken.created_at.desc(), ApiToken.id.desc()))


def token_of(admin_id, token_row_id):
    """One of a user's own tokens by its row id, or None (another user's reads the same)."""
    if not valid_id(token_row_id):
        return None
    return ApiToken.get_or_none((ApiToken.id == token_row_id) & (ApiToken.admin == admin_id))


def revoke_token(token_row_id, now):
    """Revoke a token unless it already is. -> whether this call revoked it."""
    return ApiToken.update(revoked_at=now).where(
        (ApiToken.id == token_row_id) & ApiToken.revoked_at.is_null()).execute() == 1


def note_token_used(token_row_id, now, every=60):
    """Record a use: one write a minute at most per token, so a busy script does not write on
    each request (the last-used time the account page shows is that precise)."""
    cutoff = now - datetime.timedelta(seconds=every)
    ApiToken.update(last_used_at=now).where(
        (ApiToken.id == token_row_id)
        & (ApiToken.last_used_at.is_null() | (ApiToken.last_used_at < cutoff))).execute()


# ===== Traffic (quotas.py) ======================================================================

def traffic_series(agent_id, start, end, base_lookback=10):
    """[(timestamp, interfaces or None)] of the agent's samples in [start, end), oldest first,
    after the newest sample before `start` that carried interfaces (the first one's base; of
    the last `base_lookback` before it). `interfaces`: the detail's list, None when absent."""
    def rows(condition, order, limit=None):
        query = (Metric.select(Metric.timestamp, Metric.detail)
                 .where((Metric.agent == agent_id) & condition).order_by(order))
        return [(row.timestamp, (row.detail or {}).get("interfaces"))
                for row in (query.limit(limit) if limit else query)]

    base = next(([row] for row in rows(Metric.timestamp < start, Metric.timestamp.desc(),
                                       base_lookback) if row[1] is not None), [])
    return base + rows((Metric.timestamp >= start) & (Metric.timestamp < end), Metric.timestamp)


def next_sample_time(agent_id, moment):
    """When the agent's first sample at or after `moment` was taken, or None."""
    row = (Metric.select(Metric.timestamp).where((Metric.agent == agent_id) &
                                                 (Metric.timestamp >= moment))
           .order_by(Metric.timestamp).first())
    return row.timestamp if row else None


def agents_sampled_since(since):
    """Ids of the agents whose newest sample is at or after `since`."""
    return [agent_id for (agent_id,) in LatestSample.select(LatestSample.agent)
            .where(LatestSample.timestamp >= since).tuples()]


def upsert_traffic_hours(rows):
    """Write (agent_id, hour, received, sent) rows over any of the same (agent, hour), then
    the days holding them, each the sum of its hours. -> hours written."""
    for chunk in peewee.chunked(rows, 500):
        with database_proxy.atomic():
            TrafficHour.insert_many(chunk, fields=[
                TrafficHour.agent, TrafficHour.hour, TrafficHour.received, TrafficHour.sent,
            ]).on_conflict(conflict_target=[TrafficHour.agent, TrafficHour.hour],
                           preserve=[TrafficHour.received, TrafficHour.sent]).execute()
    days = sorted({(agent_id, hour.replace(hour=0)) for agent_id, hour, _, _ in rows})
    for agent_id, day in days:
        with database_proxy.atomic():
            received, sent = (TrafficHour.select(peewee.fn.SUM(TrafficHour.received),
                                                 peewee.fn.SUM(TrafficHour.sent))
                              .where((TrafficHour.agent == agent_id) & (TrafficHour.hour >= day) &
                                     (TrafficHour.hour < day + datetime.timedelta(days=1)))
                              .tuples().first())
            TrafficDay.insert(agent=agent_id, day=day, received=int(received or 0),
                              sent=int(sent or 0)).on_conflict(
                conflict_target=[TrafficDay.agent, TrafficDay.day],
                preserve=[TrafficDay.received, TrafficDay.sent]).execute()
    return len(rows)


def traffic_between(spans):
    """{agent_id: (received, sent)} summed over each agent's days in its [start, end) (both
    midnights), from `spans` {agent_id: (start, end)}: one query per distinct span (servers
    share billing days), agents without traffic left out."""
    by_span = {}
    for agent_id, span in spans.items():
        by_span.setdefault(span, []).append(agent_id)
    totals = {}
    for (start, end), agent_ids in by_span.items():
        wanted = set(agent_ids)
        query = (TrafficDay.select(TrafficDay.agent, peewee.fn.SUM(TrafficDay.received),
                                   peewee.fn.SUM(TrafficDay.sent))
                 .where((TrafficDay.day >= start) & (TrafficDay.day < end))
                 .group_by(TrafficDay.agent))
        for agent_id, received, sent in database_proxy.execute(
                of_ids(query, TrafficDay.agent, agent_ids)):
            if agent_id in wanted:
                totals[agent_id] = (int(received or 0), int(sent or 0))
    return totals



def quota_holders(access=None, server_ids=None):
    """[(server_id, server name, agent_id, customer_id, billing day, allowance, basis)] of
    every server `access` sees (all: the job), or of `server_ids` only, by name."""
    query = (Server.select(Server.id, Server.name, Agent.id, Server.customer,
                           *(getattr(Server, name) for name in QUOTA_COLUMNS))
             .join(Agent, on=(Agent.server == Server.id)).order_by(Server.name))
    query = of_ids(query, Server.id, server_ids)
    if access is not None:
        query = visible(query, access)
    return list(query.tuples())


def customer_quotas(customer_ids=None):
    """[(customer id, name, billing day, allowance, basis)], by name; of `customer_ids` only
    when given."""
    query = Customer.select(Customer.id, Customer.name,
                            *(getattr(Customer, name) for name in QUOTA_COLUMNS))
    if customer_ids is not None:
        query = query.where(Customer.id.in_(list(customer_ids)))
    return list(query.order_by(Customer.name).tuples())


def set_quota(model, row_id, billing_day, allowance, basis):
    """Set a server's or a customer's billing day, allowance and basis."""
    fields = {model.billing_day: billing_day, model.traffic_allowance: allowance,
              model.traffic_basis: basis}
    if model is Server:
        fields[Server.updated_at] = utcnow()
    return model.update(fields).where(model.id == row_id).execute()


def open_alerts_of_rule(rule):
    """[(server_id, open_key)] of the open alerts of `rule`."""
    return list(Alert.select(Alert.server, Alert.open_key)
                .where((Alert.rule == rule) & Alert.open_key.is_null(False)).tuples())


def prune_traffic(hours_before, days_before):
    return (_delete_in_batches(TrafficHour, [TrafficHour.agent, TrafficHour.hour],
                               TrafficHour.hour < hours_before),
            _delete_in_batches(TrafficDay, [TrafficDay.agent, TrafficDay.day],
                               TrafficDay.day < days_before))


# ===== Agent upgrades (panel/upgrades.py) =======================================================

def fleet_for_rollout(access, customer_id=None):
    """(server id, name) of every server with an agent, by id: a rollout's candidates."""
    query = visible(Server.select(Server.id, Server.name).join(Agent), access)
    if customer_id is not None:
        query = query.where(Server.customer == customer_id)
    return [(row.id, row.name) for row in query.order_by(Server.id)]


def running_rollout():
    return Rollout.get_or_none(Rollout.state == "running")


def rollouts(limit=20):
    return list(Rollout.select().order_by(Rollout.id.desc()).limit(limit))


def rollout_results(rollout_ids):
    """{rollout id: [(RolloutServer, server name, agent version, auto_update, last_seen)]},
    each by wave and server id."""
    query = (RolloutServer.select(RolloutServer, Server.name, Agent.agent_version,
                                  Agent.auto_update, Agent.last_seen)
             .join(Server, on=RolloutServer.server == Server.id)
             .join(Agent, on=Agent.server == Server.id)
             .where(RolloutServer.rollout.in_(list(rollout_ids)))
             .order_by(RolloutServer.wave, RolloutServer.server))
    found = {}
    for row in query.objects():
        found.setdefault(row.rollout_id, []).append(row)
    return found


def offered_to(server_id):
    """The running rollout offering its agent.py to this server now, or None."""
    return (Rollout.select().join(RolloutServer)
            .where((Rollout.state == "running") & (RolloutServer.server == server_id)
                   & (RolloutServer.state == "offered")).first())


def settle_rollout_server(rollout_id, server_id, state, now, detail=None, was="offered"):
    """Move one server's result on if it is still `was`. -> whether this call moved it (two
    replicas, or a registration and the job, may try at once)."""
    fields = {"state": state, "detail": detail[:200] if detail else None}
    if state == "offered":
        fields["offered_at"] = now
    else:
        fields["finished_at"] = now
    return RolloutServer.update(**fields).where(
        (RolloutServer.rollout == rollout_id) & (RolloutServer.server == server_id)
        & (RolloutServer.state == was)).execute() == 1


def finish_rollout(rollout_id, state, now, detail=None):
    """Halt or finish a running rollout. -> whether this call did."""
    return Rollout.update(state=state, finished_at=now,
                          detail=detail[:200] if detail else None).where(
        (Rollout.id == rollout_id) & (Rollout.state == "running")).execute() == 1


def last_upgrade_failures(server_ids):
    """{server id: detail} of the servers whose latest rollout result is a failure."""
    latest = (RolloutServer.select(RolloutServer.server,
                                   peewee.fn.MAX(RolloutServer.rollout).alias("newest"))
              .where(RolloutServer.state != "pending")
              .group_by(RolloutServer.server))
    latest = of_ids(latest, RolloutServer.server, server_ids)
    rows = (RolloutServer.select(RolloutServer.server, RolloutServer.detail)
            .join(latest, on=((RolloutServer.server == latest.c.server_id)
                              & (RolloutServer.rollout == latest.c.newest)))
            .where(RolloutServer.state == "failed"))
    return {row.server_id: row.detail or "" for row in rows}
