"""The figures the panel stores: one row per figure, and everything that names a figure derives
from this table (Glances' `fields_description` and Beszel's tier tables are the models).

A figure's one name is its column in `server_metrics`. From each row come: ingest's mapping of
the sample onto that column (ingest.sample_row), the column itself (models.Metric), its rollup
columns (models.RollupBase, rollups.FIGURES), the server page's chart series (server_page.py), the
servers table's column and sort key (views.py), its Prometheus family (prometheus.py), its alert
rule metric (alerts.py), and its rows in the generated tables of docs/protocol.md and
docs/prometheus.md (`python -m panel.docs`). Adding a figure is one row here, the agent that
sends it, and a migration for its columns.

Pure data: no imports from the rest of the panel, so every module can read it.
"""
import dataclasses

# How the agent's fields become the column's value (ingest.REDUCERS does each):
#   value          the section's field as sent
#   sum            the sum over the list's entries; unknown when it passes the column
#   sum_per_device the same, counting each device once (bind mounts repeat one)
#   rate_sum       the sum of a per-second rate over the entries that have one (none on the
#                  first sample: unknown)
#   fullest_share  the highest 100 * used / (used + free) over the entries, 2 decimals
#   highest        the highest value of the field over the entries that have it
REDUCERS = ("value", "sum", "sum_per_device", "rate_sum", "fullest_share", "highest")
# How a figure is rolled up into the 5-minute and hourly tiers.
#   mean_peak  <name>_avg and <name>_max: the mean and the peak of the bucket (Beszel's max_*)
#   last       <name>: the bucket's last known value (a total the charts scale to)
ROLLUPS = ("mean_peak", "last")
STORAGE = ("real", "bigint", "integer")


@dataclasses.dataclass(frozen=True)
class Family:
    """A Prometheus family of the latest sample's figure, one series per server that is up."""
    name: str
    help: str
    divisor: float = 1      # percentages become 0-1 ratios
    kind: str = "gauge"
    note: str = ""          # more for docs/prometheus.md than HELP carries


@dataclasses.dataclass(frozen=True)
class Input:
    """A field of a list entry (a mount, a device, an interface) that only feeds a figure: the
    wire schema accepts it from here (protocol.py), the detail keeps it."""
    key: str
    kind: str               # a schema in protocol.py: "count", "bytes", "percent"
    description: str
    prometheus: Family = None  # per mount (mpanel_filesystem_*) where the list is the mounts


@dataclasses.dataclass(frozen=True)
class TableColumn:
    """A column of the servers table; `key` is also its ?sort= value (bookmarked URLs).
    `position`: its place among the figure columns, left to right."""
    key: str
    label: str
    position: int


@dataclasses.dataclass(frozen=True)
class Chart:
    """A chart of the server page, in page order. `total`: the column whose latest value tops
    the y axis and is named in the note (`no_total`: the note without one). `per_mount`: the
    figure that raw ranges draw as one line per mount, from each sample's detail (the chart's
    other figures keep their own lines)."""
    key: str
    title: str
    unit: str               # units.FORMATS key
    total: str = None
    no_total: str = ""
    per_mount: str = None
    note: str = ""          # what a rollup range says it draws
    # Shown only when one of its figures has a value in the range: a service's chart on a
    # server without that service is left out, not drawn empty.
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class Watch:
    """The alert rule metric that watches a figure (stored in alert_rules.metric). With a
    `threshold`, a built-in global rule: above it for `minutes` (below it, `below`), seeded in a
    new database and, in an existing one, by the upgrade past schema version `since` that brought
    it (a built-in rule an admin deleted stays deleted)."""
    metric: str
    threshold: float = None
    minutes: int = 5
    below: bool = False
    since: int = 1


@dataclasses.dataclass(frozen=True)
class Figure:
    column: str             # the figure's name: its server_metrics column
    # The wire section (protocol.METRICS) it comes from; a service's is "services.<name>".
    section: str
    keys: tuple             # the section's (or each entry's) fields it is made of
    unit: str               # units.FORMATS key, or "count"
    storage: str            # column type: STORAGE
    description: str
    entries: str = None     # the section's list the keys are read from (mounts, io, interfaces)
    reduce: str = "value"   # REDUCERS
    rollup: str = None      # ROLLUPS, or None: not rolled up
    chart: str = None       # CHARTS key; a charted figure is rolled up (long ranges read rollups)
    label: str = None       # its line's label on that chart
    table: TableColumn = None
    prometheus: Family = None
    alert: Watch = None     # the alert rule metric that watches it, and its built-in rule
    share_of: str = None    # shown and watched as a percentage of this column
    inputs: tuple = ()      # Input entry fields it alone reads

    @property
    def wire(self):
        """Where the agent sends it, as docs/protocol.md writes it."""
        prefix = f"{self.section}.{self.entries}[]." if self.entries else f"{self.section}."
        return prefix + ", ".join(self.keys)


CHARTS = (
    Chart("cpu", "CPU", "percent"),
    Chart("temperature", "CPU temperature", "celsius", optional=True),
    Chart("load", "Load (1 min)", "load"),
    Chart("memory", "Memory used", "bytes", total="memory_total"),
    Chart("swap", "Swap used", "bytes", total="swap_total", no_total="no swap"),
    Chart("disk", "Disk usage", "percent", per_mount="disk_max_percent",
          note="per-mount detail for ranges up to 24 h"),
    Chart("disk_io", "Disk I/O", "rate"),
    Chart("network", "Network", "rate"),
    Chart("mysql_connections", "MySQL connections", "count", total="mysql_max_connections",
          optional=True),
    Chart("mysql_queries", "MySQL queries", "per_second", optional=True),
    Chart("fpm", "PHP-FPM", "count", optional=True),
    Chart("mail", "Mail queue", "count", optional=True),
)

_RATIO = 100  # percent -> 0-1 ratio

FIGURES = (
    Figure("cpu_usage", "cpu", ("usage",), "percent", "real",
           "busy share of all CPUs since the previous sample",
           rollup="mean_peak", chart="cpu", label="usage", table=TableColumn("cpu", "CPU", 1),
           prometheus=Family("mpanel_cpu_usage_ratio",
                             "CPU busy share over the sample's interval (0-1).", _RATIO),
           alert=Watch("cpu", 90.0)),
    Figure("cpu_iowait", "cpu", ("iowait",), "percent", "real",
           "share idle while waiting for I/O (Linux)",
           rollup="mean_peak", chart="cpu", label="iowait",
           prometheus=Family("mpanel_cpu_iowait_ratio",
                             "CPU share spent waiting for I/O (0-1).", _RATIO)),
    Figure("cpu_steal", "cpu", ("steal",), "percent", "real",
           "share taken by the hypervisor (Linux VMs)",
           rollup="mean_peak", chart="cpu", label="steal",
           prometheus=Family("mpanel_cpu_steal_ratio",
                             "CPU share stolen by the hypervisor (0-1).", _RATIO)),
    Figure("cpu_load_1min", "cpu", ("load1",), "load", "real", "load average over 1 minute (emulated on Windows)",
           rollup="mean_peak", chart="load", label="load",
           table=TableColumn("load", "Load", 6),
           prometheus=Family("mpanel_load1", "1-minute load average."), alert=Watch("load")),
    Figure("cpu_load_5min", "cpu", ("load5",), "load", "real", "load average over 5 minutes (emulated on Windows)",
           prometheus=Family("mpanel_load5", "5-minute load average.")),
    Figure("cpu_load_15min", "cpu", ("load15",), "load", "real", "load average over 15 minutes (emulated on Windows)",
           prometheus=Family("mpanel_load15", "15-minute load average.")),
    Figure("memory_total", "memory", ("total",), "bytes", "bigint", "physical memory",
           rollup="last", prometheus=Family("mpanel_memory_total_bytes", "Physical memory.")),
    Figure("memory_used", "memory", ("used",), "bytes", "bigint", "used, as psutil counts it",
           rollup="mean_peak", chart="memory", label="used",
           table=TableColumn("memory", "Memory", 2), share_of="memory_total",
           prometheus=Family("mpanel_memory_used_bytes", "Memory in use (psutil's used)."),
           alert=Watch("memory", 90.0)),
    Figure("memory_free", "memory", ("free",), "bytes", "bigint", "unused memory"),
    Figure("memory_available", "memory", ("available",), "bytes", "bigint",
           "memory that can be given to programs without swapping",
           prometheus=Family("mpanel_memory_available_bytes",
                             "Memory available to new programs without swapping.")),
    Figure("memory_cached", "memory", ("cached",), "bytes", "bigint",
           "page cache (0 where the OS has no such figure)",
           prometheus=Family("mpanel_memory_cached_bytes", "Page cache.")),
    Figure("swap_total", "memory", ("swapTotal",), "bytes", "bigint", "swap space",
           prometheus=Family("mpanel_swap_total_bytes", "Swap space.")),
    Figure("swap_used", "memory", ("swapUsed",), "bytes", "bigint", "swap in use",
           rollup="mean_peak", chart="swap", label="swap",
           prometheus=Family("mpanel_swap_used_bytes", "Swap in use.")),
    Figure("disk_total", "disk", ("total",), "bytes", "bigint",
           "size of all mounts, each device once", entries="mounts", reduce="sum_per_device",
           prometheus=Family("mpanel_disk_total_bytes",
                             "Size of all mounted filesystems, each device once.")),
    Figure("disk_used", "disk", ("used",), "bytes", "bigint",
           "used space on all mounts, each device once", entries="mounts",
           reduce="sum_per_device",
           prometheus=Family("mpanel_disk_used_bytes",
                             "Used space on all mounted filesystems, each device once.")),
    Figure("disk_free", "disk", ("free",), "bytes", "bigint",
           "free space on all mounts, each device once", entries="mounts",
           reduce="sum_per_device"),
    Figure("disk_max_percent", "disk", ("used", "free"), "percent", "real",
           "used share of the fullest mount, used / (used + free): what the disk alert watches",
           entries="mounts", reduce="fullest_share", rollup="mean_peak",
           chart="disk", label="fullest mount",
           table=TableColumn("disk", "Disk", 3),
           prometheus=Family("mpanel_disk_max_used_ratio",
                             "Used share of the fullest mount (0-1): what the panel's disk alert "
                             "watches.", _RATIO),
           alert=Watch("disk", 90.0)),
    Figure("disk_max_inode_percent", "disk", ("inodesPercent",), "percent", "real",
           "used share of the inodes of the mount that has used most of them: mail spools and "
           "caches run out of inodes with disk space to spare",
           entries="mounts", reduce="highest", rollup="mean_peak", chart="disk",
           label="inodes, fullest mount",
           prometheus=Family("mpanel_disk_max_inode_used_ratio",
                             "Used share of the inodes of the mount that has used most of them "
                             "(0-1): what the panel's inodes alert watches.", _RATIO),
           alert=Watch("inodes"),
           inputs=(Input("inodesPercent", "percent", "Used share of the file system's inodes, "
                         "100 * inodesUsed / (inodesUsed + inodesFree); the three are absent "
                         "where the file system has no inode table (btrfs, vfat)."),
                   Input("inodesUsed", "count", "Inodes in use (statvfs f_files - f_ffree).",
                         prometheus=Family("mpanel_filesystem_inodes_used",
                                           "Inodes in use on the filesystem.")),
                   Input("inodesFree", "count", "Free inodes (statvfs f_ffree).",
                         prometheus=Family("mpanel_filesystem_inodes_free",
                                           "Free inodes on the filesystem.")))),
    Figure("disk_read_rate", "disk", ("readBytesPerSec",), "rate", "real",
           "bytes read per second, all block devices", entries="io", reduce="rate_sum",
           rollup="mean_peak", chart="disk_io", label="read",
           prometheus=Family("mpanel_disk_read_bytes_per_second",
                             "Bytes read from block devices per second.")),
    Figure("disk_write_rate", "disk", ("writeBytesPerSec",), "rate", "real",
           "bytes written per second, all block devices", entries="io", reduce="rate_sum",
           rollup="mean_peak", chart="disk_io", label="write",
           prometheus=Family("mpanel_disk_written_bytes_per_second",
                             "Bytes written to block devices per second.")),
    Figure("network_rx_rate", "network", ("bytesRecvPerSec",), "rate", "real",
           "bytes received per second, all interfaces", entries="interfaces",
           reduce="rate_sum", rollup="mean_peak", chart="network",
           label="received", table=TableColumn("rx", "Net in", 4),
           prometheus=Family("mpanel_network_receive_bytes_per_second",
                             "Bytes received per second, all interfaces but loopback.")),
    Figure("network_tx_rate", "network", ("bytesSentPerSec",), "rate", "real",
           "bytes sent per second, all interfaces", entries="interfaces", reduce="rate_sum",
           rollup="mean_peak", chart="network", label="sent",
           table=TableColumn("tx", "Net out", 5),
           prometheus=Family("mpanel_network_transmit_bytes_per_second",
                             "Bytes sent per second, all interfaces but loopback.")),
    Figure("network_rx_bytes", "network", ("bytesRecv",), "bytes", "bigint",
           "bytes received since boot, all interfaces", entries="interfaces", reduce="sum",
           prometheus=Family("mpanel_network_receive_bytes_total",
                             "Bytes received since boot, all interfaces but loopback.",
                             kind="counter",
                             note="drops when an interface goes away: `rate()` treats that as "
                                  "a reset")),
    Figure("network_tx_bytes", "network", ("bytesSent",), "bytes", "bigint",
           "bytes sent since boot, all interfaces", entries="interfaces", reduce="sum",
           prometheus=Family("mpanel_network_transmit_bytes_total",
                             "Bytes sent since boot, all interfaces but loopback.",
                             kind="counter")),
    Figure("process_count", "processes", ("total",), "count", "integer", "processes",
           prometheus=Family("mpanel_processes", "Number of processes.")),
    Figure("cpu_temperature", "sensors", ("cpuMax",), "celsius", "real",
           "the hottest CPU temperature reading (machines with sensors; none in a VM)",
           rollup="mean_peak", chart="temperature", label="hottest CPU reading",
           prometheus=Family("mpanel_cpu_temperature_celsius",
                             "The hottest CPU temperature reading, degrees Celsius.")),
    # The hosting stack (issue 12). Per-subject alerts on them are service checks (checks.py).
    Figure("mysql_connections", "services.mysql", ("connections",), "count", "bigint",
           "MySQL/MariaDB client connections (Threads_connected)", rollup="mean_peak",
           chart="mysql_connections", label="connections",
           prometheus=Family("mpanel_mysql_connections", "MySQL/MariaDB client connections.")),
    Figure("mysql_max_connections", "services.mysql", ("maxConnections",), "count", "bigint",
           "MySQL/MariaDB max_connections", rollup="last",
           prometheus=Family("mpanel_mysql_max_connections", "MySQL/MariaDB max_connections.")),
    Figure("mysql_queries_rate", "services.mysql", ("queriesPerSec",), "per_second", "real",
           "statements clients sent to MySQL/MariaDB per second (Questions)",
           rollup="mean_peak", chart="mysql_queries", label="queries",
           prometheus=Family("mpanel_mysql_queries_per_second",
                             "Statements clients sent per second (Questions).")),
    Figure("mysql_slow_queries_rate", "services.mysql", ("slowQueriesPerSec",), "per_second",
           "real", "MySQL/MariaDB statements slower than long_query_time, per second",
           rollup="mean_peak", chart="mysql_queries", label="slow",
           prometheus=Family("mpanel_mysql_slow_queries_per_second",
                             "Statements slower than long_query_time, per second.")),
    Figure("fpm_active", "services.phpfpm", ("active",), "count", "bigint",
           "PHP-FPM workers serving a request, all pools (from their status pages)",
           entries="pools", reduce="sum", rollup="mean_peak", chart="fpm", label="active",
           prometheus=Family("mpanel_phpfpm_active_processes",
                             "PHP-FPM workers serving a request, all pools.")),
    Figure("fpm_listen_queue", "services.phpfpm", ("listenQueue",), "count", "bigint",
           "connections waiting for a free PHP-FPM worker, all pools", entries="pools",
           reduce="sum", rollup="mean_peak", chart="fpm", label="listen queue",
           prometheus=Family("mpanel_phpfpm_listen_queue",
                             "Connections waiting for a free PHP-FPM worker, all pools.")),
    Figure("mail_queue", "services.mailqueue", ("total",), "count", "bigint",
           "messages in the mail queue (Postfix or Exim)", rollup="mean_peak", chart="mail",
           label="queued", prometheus=Family("mpanel_mail_queue_messages",
                                             "Messages in the mail queue.")),
    Figure("mail_deferred", "services.mailqueue", ("deferred",), "count", "bigint",
           "messages in Postfix's deferred queue", rollup="mean_peak", chart="mail",
           label="deferred", prometheus=Family("mpanel_mail_deferred_messages",
                                               "Messages in Postfix's deferred queue.")),
    Figure("mail_oldest_age", "services.mailqueue", ("oldestAge",), "seconds", "bigint",
           "seconds since the oldest queued message arrived",
           prometheus=Family("mpanel_mail_oldest_message_age_seconds",
                             "Seconds since the oldest queued message arrived.")),
    Figure("certificate_min_days", "services.certificates", ("minDaysLeft",), "days", "real",
           "days until the first of the hosted sites' TLS certificates expires (negative once "
           "expired)",
           prometheus=Family("mpanel_certificate_min_days_left",
                             "Days until the first of the hosted sites' TLS certificates "
                             "expires (negative once expired).")),
)

BY_COLUMN = {figure.column: figure for figure in FIGURES}
ROLLED_UP = tuple(f for f in FIGURES if f.rollup == "mean_peak")
# The figures the server page draws, in table order: raw chart rows and rollup rows carry
# them in this one order, so no second list has to agree with it.
CHARTED = tuple(f for f in FIGURES if f.chart)
CHART_KEYS = tuple(chart.key for chart in CHARTS)
TABLE_COLUMNS = tuple(sorted((f for f in FIGURES if f.table), key=lambda f: f.table.position))
EXPORTED = tuple(f for f in FIGURES if f.prometheus)
ALERTED = {f.alert.metric: f for f in FIGURES if f.alert}


def rollup_columns(figure):
    """The figure's columns in the rollup tables."""
    if figure.rollup == "mean_peak":
        return (f"{figure.column}_avg", f"{figure.column}_max")
    return (figure.column,) if figure.rollup == "last" else ()


def shown_unit(figure):
    """The unit a figure is shown and watched in: a share of another column is a percentage."""
    return "percent" if figure.share_of else figure.unit


def section_of(metrics, section):
    """The part of a sample's `metrics` that a figure's `section` names ("cpu",
    "services.mysql"), or None."""
    value = metrics
    for part in section.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def chart_figures(chart_key):
    return [f for f in CHARTED if f.chart == chart_key]


def _check():
    """The table's own rules, checked at import: a mistake in a row fails every test."""
    columns = [f.column for f in FIGURES]
    assert len(set(columns)) == len(columns), "a column is listed twice"
    charts = {c.key for c in CHARTS}
    for f in FIGURES:
        assert f.reduce in REDUCERS and f.storage in STORAGE, f.column
        assert f.rollup in ROLLUPS + (None,), f.column
        assert (f.reduce == "value") == (f.entries is None), f.column
        assert f.chart is None or (f.chart in charts and f.rollup == "mean_peak" and f.label), \
            f"{f.column}: a charted figure is rolled up, on a known chart, with a label"
        assert f.share_of is None or f.share_of in BY_COLUMN, f.column
    for c in CHARTS:
        assert c.total is None or c.total in BY_COLUMN, c.key
        assert c.per_mount is None or BY_COLUMN[c.per_mount].chart == c.key, c.key
    assert len(ALERTED) == sum(1 for f in FIGURES if f.alert), "an alert metric twice"


_check()
