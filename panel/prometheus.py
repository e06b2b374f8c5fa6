"""The Prometheus bridge: `GET /metrics` answers, in the text exposition format 0.0.4, the latest
value of each server's metrics, for admins who graph and alert in Prometheus and Grafana.

Off unless MPANEL_METRICS_TOKEN is set (404 with a JSON error saying how to turn it on). Every
scrape must carry `Authorization: Bearer <token>` (Prometheus: `authorization: {credentials: …}`),
else 401 JSON with `WWW-Authenticate: Bearer`. The token is compared in constant time and never
logged. See docs/prometheus.md for the scrape config and the metric list.

`exposition(rows, now, offline_after, firing)` is pure: rows in SCRAPE_COLUMNS order (what
`scrape_rows()` reads) in, the text out. Choices it makes, also in the docs:
  - A server's sample figures are exported only while it is up (`mpanel_up` 1, i.e. heard from
    within MPANEL_OFFLINE_AFTER). A silent server's last numbers would otherwise look current
    for ever: a CPU stuck at 95 % would keep an alert firing. `mpanel_up`, the timestamps and the
    alert count are exported for every server.
  - No sample timestamps in the output: Prometheus stamps each value with the scrape time, and
    explicit old timestamps defeat its staleness handling. `mpanel_last_sample_timestamp_seconds`
    says how old the figures are.
  - A NULL figure (collector off or failed) is left out rather than printed as NaN: absent is
    what `absent()` and Grafana's "no data" understand; NaN would poison sums.
  - Per mount (`mpanel_filesystem_*`), not per interface: mounts are few and stable, while
    interface names churn with every container's veth pair (a cardinality leak). The summed
    network figures cover the interfaces.
  - Bounded whatever an agent sends (issue 10: 250 mounts with 4 KB names made one scrape
    3.9 MB): at most MOUNTS_PER_SERVER mounts per server, the shortest paths kept (the
    system's own mounts; deep container paths go first), the others counted in
    `mpanel_filesystems_omitted`; every label value at most LABEL_VALUE_MAX characters, a longer
    one cut and ended with "…" and a hash of the whole value (so two long values stay two
    series, the same value the same series on every scrape), counted in
    `mpanel_label_values_truncated`.
"""
import datetime
import hashlib
import hmac
import logging
import math

import bottle

from . import access, auth, figures, models
from .db import utcnow
from .errors import ApiError, JsonErrorPlugin

log = logging.getLogger("mpanel.prometheus")

EPOCH = datetime.datetime(1970, 1, 1)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Bounds on what one agent can add to a scrape (see the module docstring). Real mounts are a
# handful and their paths well under 128 characters; kubelet volume paths come close.
MOUNTS_PER_SERVER = 32
LABEL_VALUE_MAX = 128


# ===== Families =================================================================================

# Per-server figures from the latest sample's typed columns: (name, type, help, column, divisor),
# from the figure table. Percentages become 0-1 ratios; everything else is already in base
# units (bytes, bytes/s).
SAMPLE_FAMILIES = tuple((figure.prometheus.name, figure.prometheus.kind, figure.prometheus.help,
                         figure.column, figure.prometheus.divisor) for figure in figures.EXPORTED)

# Per mount, from the latest sample's detail: (name, help, function of the mount dict).
FILESYSTEM_FAMILIES = (
    ("mpanel_filesystem_size_bytes", "Size of the filesystem.", lambda m: m.get("total")),
    ("mpanel_filesystem_used_bytes", "Used space on the filesystem.", lambda m: m.get("used")),
    ("mpanel_filesystem_free_bytes", "Space left for unprivileged users.",
     lambda m: m.get("free")),
    # As the panel computes it (ingest.py): reserved blocks count as neither used nor free.
    ("mpanel_filesystem_used_ratio", "Used share of the filesystem (0-1), used / (used + free).",
     lambda m: m["used"] / (m["used"] + m["free"])
     if isinstance(m.get("used"), (int, float)) and isinstance(m.get("free"), (int, float))
     and m["used"] + m["free"] > 0 else None),
    # ... and the mount fields figures read alone that the table exports (figures.Input).
    *((put.prometheus.name, put.prometheus.help, lambda m, key=put.key: m.get(key))
      for figure in figures.FIGURES if (figure.section, figure.entries) == ("disk", "mounts")
      for put in figure.inputs if put.prometheus),
)

# Per-server families that do not come from the sample, in output order.
SERVER_FAMILIES = (
    ("mpanel_up", "gauge",
     "1 when the agent was heard from within MPANEL_OFFLINE_AFTER seconds, else 0."),
    ("mpanel_last_seen_timestamp_seconds", "gauge",
     "When the panel last heard from the agent (report or heartbeat), Unix time."),
    ("mpanel_last_sample_timestamp_seconds", "gauge",
     "When the latest sample was taken, by the agent's clock, Unix time."),
    ("mpanel_alerts_firing", "gauge", "Alerts firing for the server, silenced ones included."),
    ("mpanel_agent_info", "gauge", "Always 1; the agent's version and status as labels."),
)

# Per server that is up, after the filesystems: what the bounds left out.
OMITTED_FAMILY = ("mpanel_filesystems_omitted", "gauge",
                  f"Mounts of the latest sample not exported as mpanel_filesystem_* series: "
                  f"beyond {MOUNTS_PER_SERVER} a server, the longest paths are left out.")

FLEET_FAMILIES = (
    ("mpanel_servers", "gauge", "Servers by state: online, offline, never_seen."),
)

# Last, as it counts what the lines above cut.
TRUNCATED_FAMILY = ("mpanel_label_values_truncated", "gauge",
                    f"Label values of this scrape longer than {LABEL_VALUE_MAX} characters, cut "
                    f"to that length (ending in … and a hash of the whole value); each counted "
                    f"once, though a server's or a mount's labels repeat in several families.")

SERVER_STATES = ("online", "offline", "never_seen")

# The columns exposition() reads, in the order scrape_rows() gives them. `disks` is the latest
# sample's list of mounts (parsed from its detail), or None.
SCRAPE_COLUMNS = ("server_id", "name", "hostname", "agent_status", "agent_version", "last_seen",
                  "sample_time", *(family[3] for family in SAMPLE_FAMILIES), "disks")


def all_family_names():
    """Every metric family this module can print (the docs test checks each is documented)."""
    return ([f[0] for f in SERVER_FAMILIES] + [f[0] for f in SAMPLE_FAMILIES] +
            [f[0] for f in FILESYSTEM_FAMILIES] + [OMITTED_FAMILY[0]] +
            [f[0] for f in FLEET_FAMILIES] + [TRUNCATED_FAMILY[0]])


# ===== Text format (pure) =======================================================================

def escape_label_value(value):
    """A label value as the format wants it: backslash, double quote and newline escaped. Server
    names and hostnames are typed by admins and agents, so they may hold any of them."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text):
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def bounded_label_value(value):
    """The value as exported: itself up to LABEL_VALUE_MAX characters; a longer one cut, with
    "…" and 8 hex digits of its SHA-256 at the end, LABEL_VALUE_MAX characters in all."""
    text = str(value)
    if len(text) <= LABEL_VALUE_MAX:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:8]
    return text[:LABEL_VALUE_MAX - 9] + "…" + digest


def labels(cut=None, **pairs):
    """`name="value",...` with each value bounded and escaped; `cut`, a list, gets one item
    per value that was shortened."""
    parts = []
    for name, value in pairs.items():
        shown = bounded_label_value(value)
        if cut is not None and len(shown) < len(str(value)):
            cut.append(name)
        parts.append(f'{name}="{escape_label_value(shown)}"')
    return ",".join(parts)


def kept_mounts(disks):
    """(mounts to export, how many are left out): each mountpoint once (a path mounted over
    twice is listed twice, and a repeated series would be refused), at most MOUNTS_PER_SERVER,
    the shortest paths kept, in the agent's order."""
    unique, seen = [], set()
    for mount in disks or []:
        if mount.get("mountpoint") not in seen:
            seen.add(mount.get("mountpoint"))
            unique.append(mount)
    if len(unique) <= MOUNTS_PER_SERVER:
        return unique, 0
    by_length = sorted(range(len(unique)), key=lambda i: (
        len(str(unique[i].get("mountpoint") or "")), str(unique[i].get("mountpoint") or "")))
    keep = sorted(by_length[:MOUNTS_PER_SERVER])
    return [unique[i] for i in keep], len(unique) - MOUNTS_PER_SERVER


def format_value(value):
    """None for what must not be printed (NULL, NaN, infinities); ints stay exact, so byte
    counts never turn into 8.589934592e+09."""
    kind = type(value)
    if kind is float:
        return repr(value) if math.isfinite(value) else None
    if kind is int:
        return str(value)
    if value is None:
        return None
    if kind is bool:
        return "1" if value else "0"
    value = float(value)  # Decimal and the like
    return repr(value) if math.isfinite(value) else None


def is_up(last_seen, now, offline_after):
    return models.connection_state(last_seen, now, offline_after) == "online"


def epoch_seconds(moment):
    return None if moment is None else (moment - EPOCH).total_seconds()


def _scaled(value, divisor):
    return value / divisor if value is not None and divisor != 1 else value


def exposition(rows, now, offline_after, firing=None):
    """The text format for these servers at `now` (naive UTC).

    rows: sequences in SCRAPE_COLUMNS order; firing: {server_id: firing alert count}. Families
    come in a fixed order, each with its # HELP and # TYPE once and all its samples together;
    servers in the order given.
    """
    firing = firing or {}
    cut = []  # label values shortened, for mpanel_label_values_truncated
    servers = [dict(zip(SCRAPE_COLUMNS, row)) for row in rows]
    for server in servers:
        server["up"] = is_up(server["last_seen"], now, offline_after)
        server["labels"] = labels(cut, server=server["name"], hostname=server["hostname"] or "")
    lines = []

    def family(name, kind, help_text, samples):
        lines.append(f"# HELP {name} {escape_help(help_text)}")
        lines.append(f"# TYPE {name} {kind}")
        for label_text, value in samples:
            text = format_value(value)
            if text is not None:
                lines.append(f"{name}{{{label_text}}} {text}" if label_text else
                             f"{name} {text}")

    per_server = {
        "mpanel_up": lambda s: 1 if s["up"] else 0,
        "mpanel_last_seen_timestamp_seconds": lambda s: epoch_seconds(s["last_seen"]),
        "mpanel_last_sample_timestamp_seconds": lambda s: epoch_seconds(s["sample_time"]),
        "mpanel_alerts_firing": lambda s: firing.get(s["server_id"], 0),
    }
    for name, kind, help_text in SERVER_FAMILIES:
        if name == "mpanel_agent_info":
            samples = [(s["labels"] + "," + labels(cut, version=s["agent_version"] or "",
                                                   status=s["agent_status"] or ""), 1)
                       for s in servers]
        else:
            samples = [(s["labels"], per_server[name](s)) for s in servers]
        family(name, kind, help_text, samples)

    up = [s for s in servers if s["up"]]
    for name, kind, help_text, column, divisor in SAMPLE_FAMILIES:
        family(name, kind, help_text, [(s["labels"], _scaled(s[column], divisor)) for s in up])

    mounts, omitted = [], []
    for s in up:
        kept, left_out = kept_mounts(s["disks"])
        omitted.append((s["labels"], left_out))
        mounts.extend((mount, s["labels"] + "," + labels(
            cut, mountpoint=mount.get("mountpoint") or "", device=mount.get("device") or "",
            fstype=mount.get("fstype") or "")) for mount in kept)
    for name, help_text, figure in FILESYSTEM_FAMILIES:
        family(name, "gauge", help_text, [(text, figure(mount)) for mount, text in mounts])
    family(*OMITTED_FAMILY, omitted)

    counts = dict.fromkeys(SERVER_STATES, 0)
    for s in servers:
        counts["never_seen" if s["last_seen"] is None else
               "online" if s["up"] else "offline"] += 1
    for name, kind, help_text in FLEET_FAMILIES:
        family(name, kind, help_text,
               [(labels(state=state), count) for state, count in counts.items()])
    family(*TRUNCATED_FAMILY, [("", len(cut))])
    return "\n".join(lines) + "\n"


# ===== Queries ==================================================================================

def scrape_rows(now, offline_after):
    """One tuple per server (SCRAPE_COLUMNS), by name: the fleet and each latest sample in one
    query (models.fleet_rows, with more columns than the servers table). The detail (per-mount
    figures) is decompressed only for servers that are up, as only theirs are printed."""
    rows = []
    for name, server_id, *middle, blob in models.fleet_rows(lambda latest: (
            models.Server.name, models.Server.id, models.Agent.hostname, models.Agent.status,
            models.Agent.agent_version, models.Agent.last_seen, models.LatestSample.timestamp,
            *(getattr(latest, family[3]) for family in SAMPLE_FAMILIES), latest.detail),
            access.EVERYTHING):  # the scrape token is the staff's: every server
        hostname, status, version, last_seen, sample_time, *figures = middle
        disks = None
        if blob is not None and is_up(last_seen, now, offline_after):
            disks = [mount for mount in models.unpack_detail(blob).get("disks") or []
                     if isinstance(mount, dict)]
        rows.append((server_id, name, hostname, status, version, last_seen, sample_time,
                     *figures, disks))
    return rows


# ===== The route ================================================================================

def bearer_token(header):
    """The token of an `Authorization: Bearer <token>` header, as bytes; None without one.
    WSGI hands headers over as latin-1 text, so this gives back the bytes that were sent."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip().encode("latin-1", "replace")


def build_prometheus(settings):
    app = bottle.Bottle()
    app.install(JsonErrorPlugin())
    expected = settings.metrics_token.encode("utf-8")
    expected_digest = hashlib.sha256(expected).digest()
    if expected and len(expected) < 16:
        log.warning("MPANEL_METRICS_TOKEN is only %d characters long; use 32 or more random "
                    "ones (openssl rand -hex 32)", len(expected))
    refused = set()  # addresses whose last scrape was refused: one warning each, not one a scrape

    @app.get("/metrics")
    def metrics():
        if not expected:
            raise ApiError(404, "the Prometheus endpoint is off: set MPANEL_METRICS_TOKEN to a "
                                "long random secret (openssl rand -hex 32), restart the panel, "
                                "and scrape with that token as a Bearer token "
                                "(docs/prometheus.md)")
        sent = bearer_token(bottle.request.get_header("Authorization"))
        # Digests of equal length: the comparison's time gives away neither the token nor its
        # length (compare_digest alone may reveal the length).
        if sent is None or not hmac.compare_digest(hashlib.sha256(sent).digest(),
                                                   expected_digest):
            address = auth.client_address(settings) or "?"
            if address not in refused:
                if len(refused) >= 1000:  # many addresses guessing: bound the memory
                    refused.clear()
                refused.add(address)
                log.warning("metrics scrape refused addr=%s reason=%s", address,
                            "no bearer token" if sent is None else "wrong token")
            raise ApiError(401, "/metrics needs Authorization: Bearer <MPANEL_METRICS_TOKEN>"
                           if sent is None else "the bearer token is not MPANEL_METRICS_TOKEN",
                           headers={"WWW-Authenticate": auth.bearer_challenge(sent is not None)})
        refused.discard(auth.client_address(settings) or "?")

        now = utcnow()
        text = exposition(scrape_rows(now, settings.offline_after), now,
                          settings.offline_after, models.firing_counts())
        # "replace": a hostname stored with a lone surrogate must not turn the scrape into a 500.
        body = text.encode("utf-8", "replace")
        # gzip, for Prometheus's Accept-Encoding, is the server's (compression.py).
        return bottle.HTTPResponse(body=body, status=200, headers={
            "Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})

    return app
