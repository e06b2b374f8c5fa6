#!/usr/bin/env python3
"""mPanel agent: collects this server's metrics and pushes them to an mPanel panel.

One file; needs Python 3.8+, psutil and urllib3. It only makes outbound HTTPS requests
(`Authorization: Bearer <key>`), so it works behind NAT and opens no port. Every sample is written
to a local SQLite buffer before it is sent and removed only once the panel has stored it, so an
outage, a restart or `kill -9` loses nothing; the buffer is replayed oldest first, in batches.

Run it:
    agent.py --config /etc/mpanel-agent/config.json     run forever (systemd, Windows service)
    agent.py --once                                     collect, deliver, exit (cron)
    agent.py --print                                    print one payload, send nothing
    agent.py --check                                    check the config and that the key works
    agent.py --version

Configuration, lowest to highest precedence: built-in defaults, config.json, environment,
command-line flags. config.json has the seed design's shape, plus optional keys:

    {"controlPanel": {"url": "https://panel.example.com", "apiKey": "agent_...",
                      "caBundle": "/path/ca.pem", "pinSha256": "AB:CD:..."},
     "agent": {"reportInterval": 60, "hostname": "auto-detect",
               "enabledCollectors": ["cpu", "memory", "disk", "services"],
               "stateDir": "/var/lib/mpanel-agent", "bufferMaxAge": 3600,
               "bufferMaxBytes": 20000000, "retryMaxDelay": 300, "heartbeatInterval": 60,
               "allowInsecureHttp": false,
               "services": {"nginx": {"url": "http://127.0.0.1/nginx_status"}, ...}},
     "logging": {"level": "info", "file": "/var/log/mpanel-agent.log"}}

Environment: MPANEL_AGENT_URL, MPANEL_AGENT_API_KEY, MPANEL_AGENT_INTERVAL,
MPANEL_AGENT_HOSTNAME, MPANEL_AGENT_STATE_DIR, MPANEL_AGENT_LOG_LEVEL, MPANEL_AGENT_LOG_FILE.
Flags: --url, --api-key, --state-dir, --interval, --log-level (see --help).

State (state.json) and buffer (buffer.sqlite3) live in stateDir. A damaged one is moved aside as
<name>.corrupt-<UTC time> and the agent starts afresh with what could still be read; a stateDir
that cannot be written (full, read-only) leaves samples in memory until it can. For tests only,
MPANEL_AGENT_CLOCK_OFFSET_FILE names a file of seconds added to the wall clock (see wall_time).

Without agent.enabledCollectors, every collector registered with default=True runs: the
`@collector` registrations below are the only list of collectors, and `services` stands for the
service collectors (each is looked for, and left out while its service is absent).

The panel may change the report interval and narrow the enabled collectors (GET
/api/agent/config and each answer's `nextReportIn`); that takes effect without a restart. A
collector switched off in config.json stays off whatever the panel says. The API key is never
logged or printed.
"""
import argparse
import collections
import dataclasses
import datetime
import email.utils
import glob
import gzip
import hashlib
import http.client
import ipaddress
import json
import logging
import logging.handlers
import os
import pathlib
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import struct
import sys
import tempfile
import threading
import time
import urllib.parse

import psutil
import urllib3

__version__ = "0.2.0"

log = logging.getLogger("mpanel-agent")

LINUX = sys.platform.startswith("linux")
WINDOWS = sys.platform == "win32"


# ===== Configuration ============================================================================

def default_state_dir():
    """Where state and buffer live: a system folder as root/SYSTEM, a per-user one otherwise."""
    if WINDOWS:
        return os.path.join(os.environ.get("PROGRAMDATA", r"C:\ProgramData"), "mpanel-agent")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/lib/mpanel-agent"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    return os.path.join(base, "mpanel-agent")


def default_config_path():
    if WINDOWS:
        return os.path.join(os.environ.get("PROGRAMDATA", r"C:\ProgramData"), "mpanel-agent",
                            "config.json")
    return "/etc/mpanel-agent/config.json"


@dataclasses.dataclass(frozen=True)
class Config:
    url: str = ""
    api_key: str = dataclasses.field(default="", repr=False)  # never in a repr, never logged
    ca_bundle: str = ""
    pin_sha256: str = ""
    report_interval: int = 60
    heartbeat_interval: int = 60
    hostname: str = "auto-detect"
    # The registry's defaults when the instance is made, so a collector registered after import
    # (a plugin, a test) is on unless config.json narrows the list: see default_collectors().
    enabled_collectors: tuple = dataclasses.field(default_factory=lambda: default_collectors())
    state_dir: str = ""
    buffer_max_age: int = 3600
    buffer_max_bytes: int = 20_000_000
    retry_max_delay: int = 300
    allow_insecure_http: bool = False
    services: dict = dataclasses.field(default_factory=dict, repr=False)  # may hold passwords
    log_level: str = "info"
    log_file: str = ""
    timeout: float = 10.0

    @property
    def resolved_hostname(self):
        if self.hostname in ("", "auto-detect"):
            return socket.gethostname()
        return self.hostname

    def problems(self):
        """Everything wrong with this config, as sentences; empty when usable."""
        found = []
        parts = urllib.parse.urlsplit(self.url)
        if not self.url:
            found.append("no panel URL: set controlPanel.url, MPANEL_AGENT_URL or --url")
        elif parts.scheme not in ("http", "https") or not parts.hostname:
            found.append(f"panel URL {self.url!r} is not an http(s) URL")
        elif parts.scheme == "http" and not self.allow_insecure_http and \
                not is_loopback(parts.hostname):
            found.append("refusing plain http:// to a non-loopback panel: the API key would "
                         "cross the network in clear text (use https, or set "
                         "agent.allowInsecureHttp)")
        if not self.api_key:
            found.append("no API key: set controlPanel.apiKey, MPANEL_AGENT_API_KEY or --api-key")
        elif not self.api_key.startswith("agent_"):
            found.append("the API key does not look like an mPanel key (agent_...)")
        if self.pin_sha256 and len(re.sub(r"[^0-9A-Fa-f]", "", self.pin_sha256)) != 64:
            found.append("controlPanel.pinSha256 must be a SHA-256 fingerprint (64 hex digits)")
        if self.ca_bundle and not os.path.isfile(self.ca_bundle):
            found.append(f"controlPanel.caBundle {self.ca_bundle} does not exist")
        if not 1 <= self.report_interval <= 3600:
            found.append("reportInterval must be between 1 and 3600 seconds")
        unknown = set(self.enabled_collectors) - set(COLLECTORS) - {SERVICES}
        if unknown:
            found.append(f"unknown collectors: {', '.join(sorted(unknown))}")
        return found


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_FILE_KEYS = {  # Config field: (section, key) in config.json
    "url": ("controlPanel", "url"),
    "api_key": ("controlPanel", "apiKey"),
    "ca_bundle": ("controlPanel", "caBundle"),
    "pin_sha256": ("controlPanel", "pinSha256"),
    "report_interval": ("agent", "reportInterval"),
    "heartbeat_interval": ("agent", "heartbeatInterval"),
    "hostname": ("agent", "hostname"),
    "enabled_collectors": ("agent", "enabledCollectors"),
    "state_dir": ("agent", "stateDir"),
    "buffer_max_age": ("agent", "bufferMaxAge"),
    "buffer_max_bytes": ("agent", "bufferMaxBytes"),
    "retry_max_delay": ("agent", "retryMaxDelay"),
    "timeout": ("agent", "requestTimeout"),
    "allow_insecure_http": ("agent", "allowInsecureHttp"),
    "services": ("agent", "services"),
    "log_level": ("logging", "level"),
    "log_file": ("logging", "file"),
}

_ENV_KEYS = {
    "url": "MPANEL_AGENT_URL",
    "api_key": "MPANEL_AGENT_API_KEY",
    "report_interval": "MPANEL_AGENT_INTERVAL",
    "hostname": "MPANEL_AGENT_HOSTNAME",
    "state_dir": "MPANEL_AGENT_STATE_DIR",
    "log_level": "MPANEL_AGENT_LOG_LEVEL",
    "log_file": "MPANEL_AGENT_LOG_FILE",
}


_KIND_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false",
               tuple: "a list of names", dict: "an object"}


def _coerce(value, kind):
    """`value` (from JSON, the environment or a flag) as a Config field of type `kind`."""
    if isinstance(value, bool) and kind is not bool:
        raise TypeError("a boolean")
    if kind in (int, float):
        return kind(value)  # env and flags give strings: "60"
    if kind is tuple and isinstance(value, (list, tuple)) and \
            all(isinstance(item, str) for item in value):
        return tuple(value)
    if isinstance(value, kind):
        return value
    raise TypeError(type(value).__name__)


def load_config(path=None, env=None, flags=None):
    """defaults <- config.json <- environment <- flags. A value of the wrong shape raises
    ValueError naming its key (never its value: it may be the API key)."""
    env = os.environ if env is None else env
    values, sources = {}, {}
    explicit = path is not None
    path = path or default_config_path()
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
        if not isinstance(document, dict):
            raise ValueError(f"{path} must hold a JSON object, not {type(document).__name__}")
        for field, (section, key) in _FILE_KEYS.items():
            part = document.get(section)
            part = {} if part is None else part
            if not isinstance(part, dict):
                raise ValueError(f"{path}: {section} must be an object")
            if part.get(key) is not None:
                values[field], sources[field] = part[key], f"{path}: {section}.{key}"
    elif explicit:
        raise FileNotFoundError(f"config file {path} does not exist")
    for field, name in _ENV_KEYS.items():
        if env.get(name):
            values[field], sources[field] = env[name], name
    for field, value in (flags or {}).items():
        if value is not None:
            values[field], sources[field] = value, "--" + field.replace("_", "-")

    kinds = {field.name: field.type for field in dataclasses.fields(Config)}
    for field, value in values.items():
        try:
            values[field] = _coerce(value, kinds[field])
        except (TypeError, ValueError):
            raise ValueError(f"{sources[field]} must be {_KIND_NAMES[kinds[field]]}") from None
    values["url"] = values.get("url", "").rstrip("/")
    values["state_dir"] = values.get("state_dir") or default_state_dir()
    return Config(**values)


class FallbackFileHandler(logging.handlers.RotatingFileHandler):
    """The log file, rotated by size (an agent left alone for years must not fill the disk),
    and stderr for each record the file cannot take (a full disk, a read-only or missing
    folder) instead of a traceback per line; the change is said once each way."""

    def __init__(self, path):
        super().__init__(path, maxBytes=5 * 1024 * 1024, backupCount=3, encoding="utf-8",
                         delay=True)
        self.failing = False
        self.failed_now = False

    def emit(self, record):
        self.failed_now = False
        super().emit(record)
        if self.failing and not self.failed_now:
            self.failing = False
            sys.stderr.write(f"mpanel-agent: log file writable again path={self.baseFilename}\n")

    def handleError(self, record):
        self.failed_now = True
        try:
            if not self.failing:
                sys.stderr.write(f"mpanel-agent: log file cannot be written, logging to stderr "
                                 f"path={self.baseFilename} error={sys.exc_info()[1]}\n")
            self.failing = True
            sys.stderr.write(self.format(record) + "\n")
        except (OSError, ValueError):
            pass  # nowhere left to say it


def setup_logging(config):
    level = getattr(logging, str(config.log_level).upper(), logging.INFO)
    if config.log_file:
        handler = FallbackFileHandler(config.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


# ===== Utilities ================================================================================

def wall_time():
    """Seconds since the epoch by this server's clock, which NTP or a person may step.

    MPANEL_AGENT_CLOCK_OFFSET_FILE is for tests only: it names a file holding seconds to add,
    re-read at every reading, so a test can step the agent's clock as NTP would (a test machine's
    own clock cannot be stepped, and libfaketime breaks Python 3.11's sleeps)."""
    offset_file = os.environ.get("MPANEL_AGENT_CLOCK_OFFSET_FILE")
    if offset_file:
        try:
            with open(offset_file, encoding="utf-8") as handle:
                return time.time() + float(handle.read().strip() or 0)
        except (OSError, ValueError):
            pass
    return time.time()


def utc_now_iso():
    # Milliseconds: two runs of `--once` in the same second are still two samples.
    return datetime.datetime.fromtimestamp(wall_time(), datetime.timezone.utc) \
        .isoformat(timespec="milliseconds").replace("+00:00", "Z")


_BOOT_ID = []


def boot_id():
    """This boot's identity: Linux's random boot_id; elsewhere the boot time stands in (on
    Windows that is derived from the wall clock, so a step there looks like a reboot)."""
    if not _BOOT_ID:
        try:
            with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
                _BOOT_ID.append(handle.read().strip())
        except OSError:
            _BOOT_ID.append(f"boot-{int(psutil.boot_time())}")
    return _BOOT_ID[0]


Moment = collections.namedtuple("Moment", "wall boot_id since_boot")


def since_boot():
    """Seconds since this boot, on a clock no wall-clock step can move (CLOCK_BOOTTIME counts
    time suspended too, so a laptop shut for a day ages its samples). The same for every process
    of one boot: readings saved by one `--once` run compare with the next run's."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(clock) if clock is not None else time.monotonic()


def now_moment():
    """The wall clock, and the boot clock with the boot it belongs to."""
    return Moment(wall_time(), boot_id(), since_boot())


# The wall clock may drift from the boot clock by NTP's slewing (at most 0.5 ms a second); more
# than this between two readings is a step.
CLOCK_STEP_SECONDS = 60


def set_aside(path, why):
    """Rename a file the agent cannot use to `<path>.<why>-<UTC time>` (with SQLite's -wal and
    -shm companions) and keep it for a person to look at. -> the new name, or None."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = f"{path}.{why}-{stamp}"
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return None
    except OSError as err:
        log.error("cannot move a bad file aside path=%s error=%s", path, err)
        return None
    for companion in ("-wal", "-shm"):
        try:
            os.replace(path + companion, aside + companion)
        except OSError:
            pass  # absent, as it usually is
    return aside


NUMBER = (int, float)
# What state.json holds, by key; a nested dict is a nested shape. A value of another type is
# dropped (and the file kept aside): a collector or the registration then starts afresh.
STATE_SHAPE = {
    "serverId": int, "registeredAs": dict, "apiKey": str, "replacesKey": str,
    "clock": {"bootId": str, "offset": NUMBER},
    "collectors": {
        "cpu": (dict, type(None)),
        "rates": {"bootTime": NUMBER + (type(None),), "counters": dict},
        "processes": {"bootTime": NUMBER + (type(None),), "takenAt": NUMBER + (type(None),),
                      "times": dict},
    },
}


def drop_misshapen(document, shape, prefix=""):
    """Remove from `document` the keys whose value does not fit `shape`; -> their paths."""
    dropped = []
    for key, kind in shape.items():
        if key not in document:
            continue
        value = document[key]
        if isinstance(kind, dict):
            if isinstance(value, dict):
                dropped += drop_misshapen(value, kind, f"{prefix}{key}.")
                continue
        elif isinstance(value, kind) and not isinstance(value, bool):
            continue
        del document[key]
        dropped.append(prefix + key)
    return dropped


class StateFile:
    """A small JSON document in the state folder: serverId, what was registered, previous
    counters. Written atomically (temp file + rename) so a crash never leaves half a file.

    A file that is not JSON, or not of STATE_SHAPE, is moved aside for a person to look at and
    what fits is kept. When the folder cannot be written (a full disk, read-only) the state
    lives on in memory, and is written again once it can be; each change is logged once."""

    def __init__(self, state_dir):
        self.path = os.path.join(state_dir, "state.json")
        self.data = {}
        self.unwritable = False
        try:
            with open(self.path, encoding="utf-8") as handle:
                document = json.load(handle)
        except FileNotFoundError:
            return
        except ValueError as err:
            aside = set_aside(self.path, "corrupt")
            log.warning("state file is not JSON, moved aside and starting afresh path=%s "
                        "kept_as=%s error=%s", self.path, aside, err)
            return
        except OSError as err:
            log.warning("state file unreadable, starting afresh path=%s error=%s", self.path, err)
            return
        if not isinstance(document, dict):
            aside = set_aside(self.path, "corrupt")
            log.warning("state file is not a JSON object, moved aside and starting afresh "
                        "path=%s kept_as=%s found=%s", self.path, aside, type(document).__name__)
            return
        dropped = drop_misshapen(document, STATE_SHAPE)
        if dropped:
            aside = set_aside(self.path, "corrupt")
            log.warning("state file had values of the wrong type, moved aside; keeping the rest "
                        "path=%s kept_as=%s dropped=%s", self.path, aside, ",".join(dropped))
        self.data = document

    def save(self):
        """Write the state; -> False (logged once) when it cannot be written now."""
        folder = os.path.dirname(self.path)
        tmp = None
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".state-", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.data, handle, separators=(",", ":"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as err:
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)
            if not self.unwritable:
                log.warning("state file cannot be written, keeping the state in memory "
                            "path=%s error=%s", self.path, err)
            self.unwritable = True
            return False
        except BaseException:
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)
            raise
        if self.unwritable:
            log.warning("state file written again path=%s", self.path)
            self.unwritable = False
        return True


class Rates:
    """Per-second rates from cumulative counters (bytes sent, disk ops, nginx requests, ...).

    The first reading of a counter gives no rate: there is nothing to compare with, and a rate
    "since boot" would be a bogus spike. A counter that went backwards (reboot, interface
    re-created, service restarted) gives no rate for that sample either, for the same reason.
    Readings are stamped by the boot clock (a wall-clock step would fake a rate) and saved in the
    state file, so rates stay right after an agent restart and between two `--once` runs from
    cron; readings from before a reboot are thrown away.
    """

    def __init__(self, saved=None, boot_time=None):
        saved = saved or {}
        same_boot = boot_time is not None and abs(saved.get("bootTime", -1) - boot_time) <= 1
        self.boot_time = boot_time
        self.previous = saved.get("counters", {}) if same_boot else {}
        self.seen = {}

    def per_second(self, key, value, now=None):
        now = since_boot() if now is None else now
        self.seen[key] = [value, now]
        before = self.previous.get(key)
        if before is None:
            return None
        delta, elapsed = value - before[0], now - before[1]
        if delta < 0 or elapsed <= 0:
            return None
        return round(delta / elapsed, 2)

    def add(self, target, field, key, value, now=None):
        """Set target[field] to the rate of counter `key`, when there is one."""
        rate = self.per_second(key, value, now)
        if rate is not None:
            target[field] = rate

    def increase(self, target, field, key, value, now=None):
        """Set target[field] to how much counter `key` grew since the previous reading, when
        there is one: a count, for events too rare for a rate (one in five minutes is 0.0 per
        second at two decimals)."""
        before = self.previous.get(key)
        self.seen[key] = [value, since_boot() if now is None else now]
        if before is not None and value >= before[0]:
            target[field] = value - before[0]

    def end_cycle(self):
        """Keep this cycle's readings (only: counters that vanished are forgotten)."""
        self.previous, self.seen = self.seen, {}

    def to_json(self):
        return {"bootTime": self.boot_time, "counters": self.previous}


class CpuTimes:
    """CPU busy, iowait and steal shares between two readings of the kernel's cumulative CPU
    times.

    psutil.cpu_percent() keeps its previous reading inside the process, so its first call
    returns a meaningless 0.0 and a cron run (`--once`) would always report 0. Here the previous
    reading is saved in the state file and restored by the next run. A reading from before a
    reboot (or any going-backwards counter) is discarded instead of producing a bogus spike.
    """

    def __init__(self, previous=None):
        self.previous = previous  # {"bootTime", "busy", "total", "iowait", "steal"}

    @staticmethod
    def read():
        times = psutil.cpu_times()
        total = sum(times)
        if LINUX:
            # guest time is already counted in user/nice on Linux (as psutil does).
            total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
        iowait = getattr(times, "iowait", 0.0)
        return {"bootTime": psutil.boot_time(), "busy": total - times.idle - iowait,
                "total": total, "iowait": iowait, "steal": getattr(times, "steal", 0.0)}

    @staticmethod
    def shares_between(before, after):
        """Pure: {"usage", "iowait", "steal"} in % from two readings, or None."""
        # A saved reading of the wrong shape (a hand-edited state file) counts as none.
        if not isinstance(before, dict) or \
                not all(isinstance(before.get(k), NUMBER) for k in ("bootTime", "busy", "total")) \
                or abs(before["bootTime"] - after["bootTime"]) > 1:
            return None
        total = after["total"] - before["total"]
        busy = after["busy"] - before["busy"]
        if total <= 0 or busy < 0:
            return None

        def share(key):
            part = after.get(key, 0.0) - before.get(key, 0.0)
            return round(min(100.0, max(0.0, 100.0 * part / total)), 2)

        return {"usage": share("busy"), "iowait": share("iowait"), "steal": share("steal")}

    def sample(self, prime_seconds=0.5):
        """Shares since the previous reading; the first ever waits `prime_seconds` to measure."""
        now = self.read()
        shares = self.shares_between(self.previous, now)
        if shares is None:
            time.sleep(prime_seconds)
            before, now = now, self.read()
            shares = self.shares_between(before, now) or {"usage": 0.0, "iowait": 0.0,
                                                          "steal": 0.0}
        self.previous = now
        return shares


class ServiceAbsent(Exception):
    """The service is not on this server: no data, and not an error."""


# ===== Collector registry =======================================================================

# The only list of collectors: every name in enabledCollectors, the defaults, the check for
# unknown names and what `services` stands for are read from these registrations.
COLLECTORS = {}
# The name in enabledCollectors (and the panel's list) that stands for the service collectors.
SERVICES = "services"


@dataclasses.dataclass
class CollectorSpec:
    name: str
    func: object
    default: bool
    group: str  # "system": its own section of metrics; "services": under metrics.services


def collector(name, default=True, group="system"):
    """Register a collector under `name`; `default` says whether it runs unconfigured."""
    def register(func):
        COLLECTORS[name] = CollectorSpec(name, func, default, group)
        return func
    return register


def system_collectors():
    """The registered system collectors' names, in registration order."""
    return tuple(name for name, spec in COLLECTORS.items() if spec.group == "system")


def service_names():
    """The registered service collectors' names, in registration order."""
    return tuple(name for name, spec in COLLECTORS.items() if spec.group == SERVICES)


def default_collectors():
    """What runs unconfigured, as config.json would say it: each system collector registered
    with default=True, and `services` when any service collector is on by default."""
    names = [name for name, spec in COLLECTORS.items() if spec.default and spec.group == "system"]
    if any(spec.default for spec in COLLECTORS.values() if spec.group == SERVICES):
        names.append(SERVICES)
    return tuple(names)


class CollectorContext:
    """What collectors carry between samples, and their settings."""

    def __init__(self, saved=None, services=None):
        saved = saved or {}
        boot_time = psutil.boot_time()
        self.cpu = CpuTimes(saved.get("cpu"))
        self.rates = Rates(saved.get("rates"), boot_time)
        self.process_times = ProcessTimes(saved.get("processes"), boot_time)
        self.services = services or {}
        self.absent_until = {}  # service name -> monotonic time to look again
        self.found = {}  # service name -> what its collector found and keeps between samples

    def to_json(self):
        return {"cpu": self.cpu.previous, "rates": self.rates.to_json(),
                "processes": self.process_times.to_json()}


def expand_collectors(names):
    """Collector names to run. `services` stands for every service collector that is on by
    default; one registered with default=False runs only when named itself. Unknown names are
    left out (Config.problems() reports them)."""
    expanded = []
    for name in names:
        if name == SERVICES:
            expanded.extend(service for service in service_names()
                            if COLLECTORS[service].default)
        elif name in COLLECTORS:
            expanded.append(name)
    return tuple(dict.fromkeys(expanded))


# ===== System collectors ========================================================================

# Filesystems that hold no user data: counting them would make "fullest disk" meaningless.
PSEUDO_FILESYSTEMS = {
    "tmpfs", "devtmpfs", "overlay", "squashfs", "proc", "sysfs", "cgroup", "cgroup2", "devpts",
    "mqueue", "tracefs", "debugfs", "securityfs", "pstore", "bpf", "autofs", "fusectl",
    "hugetlbfs", "ramfs", "nsfs", "binfmt_misc", "configfs", "efivarfs", "rpc_pipefs", "erofs",
}
# Block devices left out of I/O, as node_exporter does: RAM disks, loop devices, floppies and
# partitions (their I/O is already in the whole disk's).
IGNORED_BLOCK_DEVICES = re.compile(r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p|mmcblk\d+p)\d+$")


@collector("cpu")
def collect_cpu(ctx):
    """psutil.cpu_times() (from /proc/stat), psutil.getloadavg() (from /proc/loadavg; emulated
    on Windows).

    -> {"usage", "iowait", "steal": % of all CPUs since the previous sample (iowait and steal
    only where the OS has them), "load1", "load5", "load15": load averages, "count": CPUs}
    """
    shares = ctx.cpu.sample()
    load1, load5, load15 = psutil.getloadavg()
    result = {"usage": shares["usage"]}
    if LINUX:
        result.update(iowait=shares["iowait"], steal=shares["steal"])
    result.update(load1=round(load1, 2), load5=round(load5, 2), load15=round(load15, 2),
                  count=psutil.cpu_count() or 1)
    return result


@collector("memory")
def collect_memory(ctx):
    """psutil.virtual_memory() and swap_memory() (from /proc/meminfo).

    -> {"total", "used", "free", "available", "cached", "swapTotal", "swapUsed"} in bytes;
    cached is 0 where the OS has no such figure (Windows, macOS).
    """
    memory = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return {
        "total": memory.total,
        "used": memory.used,
        "free": memory.free,
        "available": memory.available,
        "cached": getattr(memory, "cached", 0),
        "swapTotal": swap.total,
        "swapUsed": swap.used,
    }


@collector("disk")
def collect_disk(ctx):
    """psutil.disk_partitions() + disk_usage() per mount (from /proc/self/mounts, statvfs),
    psutil.disk_io_counters(perdisk=True) (from /proc/diskstats).

    -> {"mounts": [{"mountpoint", "device", "fstype", "total", "used", "free" (bytes),
    "percent", "inodesUsed", "inodesFree", "inodesPercent" (os.statvfs; mount_inodes)}], "io":
    [{"device", "readBytesPerSec", "writeBytesPerSec", "readOpsPerSec", "writeOpsPerSec"}]}. Pseudo
    filesystems are left out; a mount we may not stat (permissions, a dead NFS server) is
    skipped rather than failing the collector. "io" has no rates on the first sample.
    """
    mounts = []
    for part in psutil.disk_partitions(all=False):
        if part.fstype in PSEUDO_FILESYSTEMS or "cdrom" in part.opts:
            continue
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        mount = {
            "mountpoint": part.mountpoint,
            "device": part.device,
            "fstype": part.fstype,
            "total": usage.total,
            "used": usage.used,
            "free": usage.free,
            "percent": usage.percent,
        }
        if hasattr(os, "statvfs"):  # not on Windows, whose file systems have no inode table
            try:
                mount.update(mount_inodes(os.statvfs(part.mountpoint)))
            except OSError:
                pass  # usage was readable a moment ago; the inodes are only missing this once
        mounts.append(mount)
    io = []
    now = since_boot()
    for device, counters in (psutil.disk_io_counters(perdisk=True) or {}).items():
        if IGNORED_BLOCK_DEVICES.match(device):
            continue
        entry = {"device": device}
        for field, counter in (("readBytesPerSec", counters.read_bytes),
                               ("writeBytesPerSec", counters.write_bytes),
                               ("readOpsPerSec", counters.read_count),
                               ("writeOpsPerSec", counters.write_count)):
            ctx.rates.add(entry, field, f"disk:{device}:{field}", counter, now)
        if len(entry) > 1:
            io.append(entry)
    return {"mounts": mounts, "io": io}


def mount_inodes(stat):
    """An os.statvfs() result -> {"inodesUsed": f_files - f_ffree, "inodesFree": f_ffree,
    "inodesPercent": the used share, %}.
    {} where the file system reports no inode table (f_files 0: btrfs, vfat, many network
    file systems allocate inodes as they go, so they cannot run out of them). f_ffree, not
    f_favail: what the file system has left, as df -i shows it; root's reserve is for blocks.
    Mail spools and caches run out of inodes with disk space to spare."""
    if not stat.f_files:
        return {}
    free = min(stat.f_ffree, stat.f_files)
    used = stat.f_files - free
    return {"inodesUsed": used, "inodesFree": free,
            "inodesPercent": round(100.0 * used / stat.f_files, 2)}


_NETWORK_COUNTERS = (
    ("bytesSentPerSec", "bytes_sent"), ("bytesRecvPerSec", "bytes_recv"),
    ("packetsSentPerSec", "packets_sent"), ("packetsRecvPerSec", "packets_recv"),
    ("errorsInPerSec", "errin"), ("errorsOutPerSec", "errout"),
    ("dropsInPerSec", "dropin"), ("dropsOutPerSec", "dropout"),
)


@collector("network")
def collect_network(ctx):
    """psutil.net_io_counters(pernic=True) (from /proc/net/dev).

    -> {"interfaces": [{"interface", "bytesSent", "bytesRecv", "packetsSent", "packetsRecv"
    (since boot), and per second since the previous sample: "bytesSentPerSec",
    "bytesRecvPerSec", "packetsSentPerSec", "packetsRecvPerSec", "errorsInPerSec",
    "errorsOutPerSec", "dropsInPerSec", "dropsOutPerSec"}]}; loopback left out.
    """
    interfaces = []
    now = since_boot()
    for name, counters in psutil.net_io_counters(pernic=True).items():
        if name == "lo" or name.lower().startswith("loopback"):
            continue
        entry = {
            "interface": name,
            "bytesSent": counters.bytes_sent,
            "bytesRecv": counters.bytes_recv,
            "packetsSent": counters.packets_sent,
            "packetsRecv": counters.packets_recv,
        }
        for field, attribute in _NETWORK_COUNTERS:
            ctx.rates.add(entry, field, f"net:{name}:{attribute}", getattr(counters, attribute),
                          now)
        interfaces.append(entry)
    return {"interfaces": interfaces}


class ProcessTimes:
    """Per-process CPU seconds from the previous scan, keyed by pid and start time (pids are
    reused), so each process's CPU % is its share of one core since then — across `--once`
    runs too, since this is saved in the state file."""

    def __init__(self, saved=None, boot_time=None):
        saved = saved or {}
        same_boot = boot_time is not None and abs(saved.get("bootTime", -1) - boot_time) <= 1
        self.boot_time = boot_time
        self.taken_at = saved.get("takenAt") if same_boot else None
        self.previous = saved.get("times", {}) if same_boot else {}

    def to_json(self):
        return {"bootTime": self.boot_time, "takenAt": self.taken_at, "times": self.previous}


TOP_N = 5


@collector("processes")
def collect_processes(ctx):
    """psutil.process_iter() over every process (from /proc/<pid>/stat and statm): one cheap
    pass reading only pid, name, status, CPU times, memory and start time; the user is looked
    up for the few processes that make the top lists.

    -> {"total", "running": counts, "topCpu", "topMemory": up to 5 each of {"pid", "name",
    "user", "cpuPercent" (share of one core since the previous sample, as top shows it),
    "rss" (bytes)}}. Names only: command lines and environments carry passwords, so they are
    never read. topCpu is empty on the very first sample (no previous times to compare).
    """
    now = since_boot()
    elapsed = now - ctx.process_times.taken_at if ctx.process_times.taken_at else None
    previous = ctx.process_times.previous
    times, rows, running, total = {}, [], 0, 0
    attrs = ["pid", "name", "status", "cpu_times", "memory_info", "create_time"]
    for proc in psutil.process_iter(attrs, ad_value=None):
        info = proc.info
        total += 1
        if info["status"] == psutil.STATUS_RUNNING:
            running += 1
        if not info["pid"]:  # Windows' "System Idle Process" is idle time, not a process
            continue
        cpu_seconds = sum(info["cpu_times"][:2]) if info["cpu_times"] else None
        key = f"{info['pid']}:{int(info['create_time'] or 0)}"
        cpu_percent = None
        if cpu_seconds is not None:
            times[key] = round(cpu_seconds, 2)
            before = previous.get(key)
            if before is not None and elapsed and elapsed > 0 and cpu_seconds >= before:
                cpu_percent = round(100.0 * (cpu_seconds - before) / elapsed, 1)
        rss = info["memory_info"].rss if info["memory_info"] else None
        rows.append((proc, info["name"] or "?", cpu_percent, rss))
    ctx.process_times.previous, ctx.process_times.taken_at = times, now

    def entry(row):
        proc, name, cpu_percent, rss = row
        item = {"pid": proc.pid, "name": name[:256]}
        try:
            item["user"] = (proc.username() or "")[:256]
        except (psutil.Error, KeyError):  # KeyError: a uid with no passwd entry
            pass
        if cpu_percent is not None:
            item["cpuPercent"] = cpu_percent
        if rss is not None:
            item["rss"] = rss
        return item

    busy = sorted((r for r in rows if r[2]), key=lambda r: r[2], reverse=True)[:TOP_N]
    heavy = sorted((r for r in rows if r[3] is not None), key=lambda r: r[3], reverse=True)[:TOP_N]
    return {"total": total, "running": running,
            "topCpu": [entry(r) for r in busy], "topMemory": [entry(r) for r in heavy]}


# ===== Service collectors =======================================================================
# Each service is split into fetch_<svc>(settings) -- I/O with a short timeout, raising
# ServiceAbsent when the service is not there -- and a pure parse_<svc>(raw) tested on captured
# output. A service that is absent is looked for again only every ABSENT_RECHECK seconds.

SERVICE_TIMEOUT = 2.0
ABSENT_RECHECK = 600


def _http_get(url, timeout=SERVICE_TIMEOUT):
    """GET a local status page -> text. Refused connection or 404 means "not here"."""
    try:
        response = _status_pool().request("GET", url, timeout=timeout, retries=False,
                                          redirect=False)
    except urllib3.exceptions.NewConnectionError as err:
        raise ServiceAbsent(f"nothing listens at {url}") from err
    if response.status == 404:
        raise ServiceAbsent(f"{url} not found")
    if response.status != 200:
        raise RuntimeError(f"{url} answered HTTP {response.status}")
    return response.data.decode("utf-8", "replace")


_STATUS_POOL = []


def _status_pool():
    """A pool for local status pages, separate from the panel's (which carries the API key)."""
    if not _STATUS_POOL:
        _STATUS_POOL.append(urllib3.PoolManager(num_pools=2, maxsize=1))
    return _STATUS_POOL[0]


def parse_nginx(text):
    """stub_status output -> counters.

    Active connections: 291
    server accepts handled requests
     16630948 16630948 31070465
    Reading: 6 Writing: 179 Waiting: 106
    """
    match = re.search(r"Active connections:\s*(\d+)\s+server accepts handled requests\s+"
                      r"(\d+)\s+(\d+)\s+(\d+)\s+Reading:\s*(\d+)\s+Writing:\s*(\d+)\s+"
                      r"Waiting:\s*(\d+)", text)
    if not match:
        raise ServiceAbsent("not an nginx stub_status page")
    values = [int(v) for v in match.groups()]
    return dict(zip(("activeConnections", "accepts", "handled", "requests", "reading",
                     "writing", "waiting"), values))


@collector("nginx", group=SERVICES)
def collect_nginx(ctx):
    """nginx stub_status (settings: url, default http://127.0.0.1/nginx_status).

    -> {"activeConnections", "reading", "writing", "waiting", "requestsPerSec"}
    """
    settings = ctx.services.get("nginx", {})
    raw = parse_nginx(_http_get(settings.get("url", "http://127.0.0.1/nginx_status")))
    result = {k: raw[k] for k in ("activeConnections", "reading", "writing", "waiting")}
    ctx.rates.add(result, "requestsPerSec", "nginx:requests", raw["requests"])
    return result


# ----- PHP-FPM ----------------------------------------------------------------------------------
# Pools come from the running masters (their process titles name their config file) and that
# config's `include=` files; each pool's status page is read over FastCGI on its own socket.

PHPFPM_MAX_POOLS = 50
PHPFPM_MAX_TEXT = 200
PHPFPM_MAX_CONFIG_FILES = 200
_FPM_MASTER = re.compile(r"^php-fpm: master process \((.*)\)\s*$")
_FPM_WORKER = re.compile(r"^php-fpm: pool (\S+)\s*$")
# FastCGI (https://fastcgi-archives.github.io/FastCGI_Specification.html): record types.
_FCGI_BEGIN_REQUEST, _FCGI_END_REQUEST, _FCGI_PARAMS, _FCGI_STDIN, _FCGI_STDOUT = 1, 3, 4, 5, 6
_FCGI_HEADER = struct.Struct(">BBHHBx")  # version, type, request id, content and padding length
_FCGI_MAX_REPLY = 65536


def parse_phpfpm_titles(rows):
    """php-fpm process titles -> ({master pid: config path}, {(master pid, pool): workers}).

    rows: (pid, ppid, title), the title being what `ps -o args` shows, e.g.
    "php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)" and "php-fpm: pool www" (FPM
    overwrites its argv with these).
    """
    masters, workers = {}, collections.Counter()
    for pid, ppid, title in rows:
        master = _FPM_MASTER.match(title)
        if master:
            masters[pid] = master.group(1)
            continue
        worker = _FPM_WORKER.match(title)
        if worker:
            workers[(ppid, worker.group(1))] += 1
    return masters, dict(workers)


def _ini_value(raw):
    """A php.ini-style value: a quoted string as written, else up to a `;` comment."""
    raw = raw.strip()
    if raw[:1] in ('"', "'"):
        end = raw.find(raw[0], 1)
        return raw[1:end] if end > 0 else raw[1:]
    return raw.split(";", 1)[0].strip()


def parse_phpfpm_config(text):
    """One FPM config file (php-fpm.conf or a pool.d/*.conf) -> {"includes": [globs],
    "pools": [{"name", "listen", "status_path", "status_listen", "pm", "max_children"}]}.

    FPM's format is php.ini's: `[www]` opens a pool (`[global]` is the master's), `key = value`,
    `;` comments; `$pool` in a value stands for the pool's name. Only the keys the collector
    needs are kept (a pool's file also holds env[] and php_admin_value[], never read further).
    """
    wanted = {"listen": "listen", "pm.status_path": "status_path",
              "pm.status_listen": "status_listen", "pm": "pm",
              "pm.max_children": "max_children"}
    includes, pools, section = [], {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("[") and "]" in line:
            section = line[1:line.index("]")].strip()
            if section.lower() != "global":
                pools.setdefault(section, {"name": section})
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), _ini_value(value)
        if key == "include":
            includes.append(value)
        elif section in pools and key in wanted:
            pools[section][wanted[key]] = value.replace("$pool", section)
    for pool in pools.values():
        try:
            pool["max_children"] = int(pool["max_children"])
        except (KeyError, ValueError):
            pool.pop("max_children", None)
    return {"includes": includes, "pools": list(pools.values())}


def read_phpfpm_pools(config_path):
    """A master's config file and the files its `include=` globs name -> its pools, in the
    order FPM reads them. A relative include is taken from the config's folder (FPM takes it
    from its -p prefix, which the process title does not show)."""
    pools, seen, queue = {}, set(), [config_path]
    while queue and len(seen) < PHPFPM_MAX_CONFIG_FILES:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                parsed = parse_phpfpm_config(handle.read())
        except OSError:
            if path == config_path:
                raise
            continue  # an included file removed since the glob, or not readable
        for pool in parsed["pools"]:
            pools.setdefault(pool["name"], {}).update(pool)
        for pattern in parsed["includes"]:
            pattern = os.path.join(os.path.dirname(path), pattern)
            queue.extend(sorted(glob.glob(pattern)))
    return list(pools.values())


def _fcgi_record(kind, body=b""):
    return _FCGI_HEADER.pack(1, kind, 1, len(body), 0) + body


def _fcgi_pair(name, value):
    """A FastCGI name-value pair: lengths under 128 in one byte, else four with the top bit."""
    def length(data):
        return bytes([len(data)]) if len(data) < 128 else struct.pack(">I", len(data) | 1 << 31)
    name, value = name.encode(), value.encode()
    return length(name) + length(value) + name + value


def _connect(address, timeout):
    """A connected socket to `listen`'s forms: /unix/path, host:port, [v6]:port, port."""
    if address.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        return sock
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    host = {"": "127.0.0.1", "*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return socket.create_connection((host, int(port)), timeout)


def fetch_fastcgi(address, script, query="", timeout=SERVICE_TIMEOUT):
    """GET `script?query` from a FastCGI server (PHP-FPM) on its socket -> (headers, body).

    One request (id 1, responder role, connection closed after): BEGIN_REQUEST, the CGI
    parameters, an empty PARAMS and an empty STDIN record, then STDOUT records until
    END_REQUEST. The reply is bounded (_FCGI_MAX_REPLY bytes).
    """
    uri = f"{script}?{query}" if query else script
    params = b"".join(_fcgi_pair(k, v) for k, v in (
        ("GATEWAY_INTERFACE", "CGI/1.1"), ("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", script),
        ("SCRIPT_FILENAME", script), ("REQUEST_URI", uri), ("QUERY_STRING", query),
        ("SERVER_SOFTWARE", "mpanel-agent"), ("REMOTE_ADDR", "127.0.0.1")))
    deadline = time.monotonic() + timeout
    with _connect(address, timeout) as sock:
        sock.sendall(_fcgi_record(_FCGI_BEGIN_REQUEST, struct.pack(">HB5x", 1, 0))
                     + _fcgi_record(_FCGI_PARAMS, params) + _fcgi_record(_FCGI_PARAMS)
                     + _fcgi_record(_FCGI_STDIN))
        reader, stdout = sock.makefile("rb"), bytearray()
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            header = reader.read(_FCGI_HEADER.size)
            if len(header) < _FCGI_HEADER.size:
                raise RuntimeError("the FastCGI server closed the connection mid-reply")
            _, kind, _, length, padding = _FCGI_HEADER.unpack(header)
            body = reader.read(length + padding)[:length]
            if kind == _FCGI_STDOUT:
                stdout += body
                if len(stdout) > _FCGI_MAX_REPLY:
                    raise RuntimeError("the FastCGI reply is too long")
            elif kind == _FCGI_END_REQUEST:
                break
    head, _, text = bytes(stdout).partition(b"\r\n\r\n")
    headers = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, text.decode("utf-8", "replace")


def parse_phpfpm_status(text):
    """The pool status page's `?json` form -> its figures as integers, keyed as FPM writes
    them. A sample (PHP 8.2):

    {"pool":"www","process manager":"dynamic","start time":1796173400,"start since":9,
     "accepted conn":1,"listen queue":0,"max listen queue":0,"listen queue len":0,
     "idle processes":0,"active processes":1,"total processes":1,"max active processes":1,
     "max children reached":0,"slow requests":0}
    """
    try:
        document = json.loads(text)
    except ValueError:
        raise RuntimeError("the status page is not FPM's JSON (is the path pm.status_path?)") \
            from None
    keys = ("accepted conn", "listen queue", "max listen queue", "listen queue len",
            "idle processes", "active processes", "total processes", "max children reached",
            "slow requests")
    if not isinstance(document, dict) or not all(
            isinstance(document.get(key), int) and document[key] >= 0 for key in keys):
        raise RuntimeError("the status page is not FPM's JSON (is the path pm.status_path?)")
    figures = {key: document[key] for key in keys}
    figures["pool"] = str(document.get("pool", ""))
    figures["process manager"] = str(document.get("process manager", ""))
    return figures


def parse_unix_diag(data):
    """Replies of a NETLINK_SOCK_DIAG dump of listening unix sockets (UDIAG_SHOW_NAME |
    UDIAG_SHOW_RQLEN) -> {socket path: (queued connections, backlog)}.

    FPM's status page cannot see a unix socket's queue on Linux (it reads TCP_INFO: "listen
    queue" stays 0 whatever waits), so the kernel is asked, as `ss -xl` does (Recv-Q, Send-Q).
    Layout: nlmsghdr (16 bytes), unix_diag_msg (16), then rtattrs (UNIX_DIAG_NAME = 0,
    UNIX_DIAG_RQLEN = 4: u32 rqueue, u32 wqueue), each 4-byte aligned; see sock_diag(7).
    """
    queues, offset = {}, 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16 or kind in (2, 3):  # NLMSG_ERROR, NLMSG_DONE
            break
        end, attr, name, rqlen = offset + length, offset + 32, None, None
        while attr + 4 <= end:
            attr_length, attr_type = struct.unpack_from("=HH", data, attr)
            if attr_length < 4:
                break
            payload = data[attr + 4:attr + attr_length]
            if attr_type == 0 and payload[:1] not in (b"", b"\x00"):  # abstract: not a path
                name = payload.rstrip(b"\x00").decode("utf-8", "replace")
            elif attr_type == 4 and len(payload) >= 8:
                rqlen = struct.unpack_from("=II", payload)
            attr += (attr_length + 3) & ~3
        if name and rqlen:
            queues[name] = rqlen
        offset += (length + 3) & ~3
    return queues


def fetch_unix_diag():
    """The kernel's dump of listening unix sockets, raw (parse_unix_diag reads it)."""
    netlink_sock_diag, sock_diag_by_family, tcp_listen = 4, 20, 10
    request = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 1 << tcp_listen, 0,
                          0x1 | 0x10, 0, 0)  # UDIAG_SHOW_NAME | UDIAG_SHOW_RQLEN
    header = struct.pack("=IHHII", 16 + len(request), sock_diag_by_family,
                         0x1 | 0x300, 1, 0)  # NLM_F_REQUEST | NLM_F_DUMP
    chunks = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, netlink_sock_diag) as sock:
        sock.settimeout(SERVICE_TIMEOUT)
        sock.sendall(header + request)
        while True:
            chunk = sock.recv(65536)
            chunks.append(chunk)
            # The dump ends with an NLMSG_DONE (or an NLMSG_ERROR) message.
            if not chunk or _last_netlink_type(chunk) in (2, 3):
                return b"".join(chunks)


def _last_netlink_type(chunk):
    offset, kind = 0, None
    while offset + 16 <= len(chunk):
        length, kind = struct.unpack_from("=IH", chunk, offset)
        if length < 16:
            break
        offset += (length + 3) & ~3
    return kind


def _phpfpm_processes(pids=None):
    """(pid, ppid, title) of the running php-fpm processes, of all (pids None) or of these.
    Only the name is read of every process (asking process_iter for the ppid too triples the
    scan: 12 ms for 130 processes); the parent and the title only of php-fpm's own."""
    rows = []
    procs = psutil.process_iter(["name"], ad_value=None) if pids is None else \
        (psutil.Process(pid) for pid in pids)
    for proc in procs:
        try:
            name = (proc.info["name"] if pids is None else proc.name()) or ""
            if name.startswith("php-fpm"):
                rows.append((proc.pid, proc.ppid(), " ".join(proc.cmdline())))
        except psutil.Error:
            continue
    return rows


def _started(pid):
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


PHPFPM_RESCAN = ABSENT_RECHECK


def _phpfpm_masters(ctx):
    """The running masters -> ({pid: config path}, worker counts or None).

    Scanning every process costs as much as the processes collector (5 ms of CPU for 120
    processes here), so the masters found are kept in ctx.found and the scan is repeated only
    when one of them is gone (a restart gives a new pid) or every PHPFPM_RESCAN seconds (a
    master started beside them). Worker counts come with a scan; without one, ask
    _phpfpm_workers, which looks at the masters' children only.
    """
    now, found = time.monotonic(), ctx.found.get("phpfpm")
    if found and found["until"] > now and all(
            _started(pid) == started for pid, (started, _) in found["masters"].items()):
        return {pid: config for pid, (_, config) in found["masters"].items()}, None
    masters, workers = parse_phpfpm_titles(_phpfpm_processes())
    ctx.found["phpfpm"] = {"until": now + PHPFPM_RESCAN, "masters": {
        pid: (_started(pid), config) for pid, config in masters.items()}}
    return masters, workers


def _phpfpm_workers(masters):
    """{(master pid, pool): workers} from the masters' children. Linux lists a process's
    children in /proc (CONFIG_PROC_CHILDREN, on in Debian's kernels): 0.1 ms, where psutil's
    children() reads every process's parent (2 ms here); psutil where the file is missing."""
    children = []
    for pid in masters:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as listing:
                children.extend(int(child) for child in listing.read().split())
        except (OSError, ValueError):
            try:
                children.extend(child.pid for child in psutil.Process(pid).children())
            except psutil.Error:
                continue
    return parse_phpfpm_titles(_phpfpm_processes(children))[1]


def find_phpfpm_pools(settings, masters, workers):
    """Every pool of every running master, from its config (or, unreadable, from its workers'
    titles), then services.phpfpm.pools, which adds pools or sets the statusPath (and listen)
    of a found one of that name. workers() -> {(master pid, pool): workers}, asked only when
    a config cannot be read. -> [{"name", "master" (pid or None), "listen", ...}]"""
    pools = []
    for pid, config in sorted(masters.items()):
        try:
            found = read_phpfpm_pools(config)
        except OSError as err:
            log.debug("phpfpm config unreadable path=%s error=%s", config, err)
            names = {pool for master, pool in workers() if master == pid}
            # A pool with pm.status_listen has a hidden one, <name>_status, to serve it.
            found = [{"name": name} for name in sorted(names)
                     if not (name.endswith("_status") and name[:-7] in names)]
        pools.extend(dict(pool, master=pid) for pool in found)
    extra = settings.get("pools") or []
    if not isinstance(extra, list) or not all(isinstance(p, dict) and p.get("name")
                                              for p in extra):
        raise RuntimeError("services.phpfpm.pools must be a list of {name, listen, statusPath}")
    for wanted in extra:
        match = next((p for p in pools if p["name"] == wanted["name"] and
                      wanted.get("listen") in (None, p.get("listen"))), None)
        if match is None:
            match = {"name": str(wanted["name"]), "master": None}
            pools.append(match)
        for key, field in (("listen", "listen"), ("statusPath", "status_path")):
            if wanted.get(key):
                match[field] = str(wanted[key])
    if not masters and not extra:
        raise ServiceAbsent("no php-fpm master is running")
    return pools


def _phpfpm_status(pool):
    """The pool's status figures over FastCGI -> (figures, None) or (None, why not)."""
    address = pool.get("status_listen") or pool.get("listen")
    if not address:
        return None, "its listen address is unknown (set services.phpfpm.pools)"
    try:
        headers, text = fetch_fastcgi(address, pool["status_path"], "json")
        status = headers.get("status", "200").split()[0]
        if status != "200":
            return None, f"{pool['status_path']} answered HTTP {status} (is it pm.status_path?)"
        return parse_phpfpm_status(text), None
    except socket.timeout:
        return None, "timed out: every worker is busy (pm.status_listen serves it apart)"
    except PermissionError:
        return None, f"permission denied on {address} (add the agent's user to its listen.group)"
    except (FileNotFoundError, ConnectionRefusedError):
        return None, f"nothing listens on {address}"
    except (OSError, RuntimeError, ValueError) as err:
        return None, str(err) or type(err).__name__


@collector("phpfpm", group=SERVICES)
def collect_phpfpm(ctx):
    """PHP-FPM pools: found from the running masters (psutil; their titles name the config
    file, whose pools and `include=` files are read), each pool's status page read over
    FastCGI on its socket when its config sets `pm.status_path` (`?json`), else its workers
    counted. Settings: `pools`, a list of {name, listen, statusPath} for what the config does not
    say (a pool of a master in a container; a status path to read). A unix socket's queue comes
    from the kernel (sock_diag), which FPM's own page cannot see.

    -> {"pools": [{"name", "listen", "source" ("status" or "processes"), "processManager",
    "maxChildren", "total", "active", "idle" (processes; active leaves out the one serving
    the agent's own status request), "listenQueue", "listenQueueLen" (connections waiting,
    and the backlog), "maxListenQueue" (the most that waited since FPM started; TCP only),
    "maxChildrenReached", "slowRequests" (times since the previous sample), "acceptedPerSec",
    "statusError" (why the status page was not read)}], "omitted" (pools past 50)}
    """
    masters, counts = _phpfpm_masters(ctx)

    def workers():
        nonlocal counts
        if counts is None:
            counts = _phpfpm_workers(masters)
        return counts

    pools = find_phpfpm_pools(ctx.services.get("phpfpm", {}), masters, workers)
    queues = {}
    if LINUX and any(p.get("listen", "").startswith("/") for p in pools[:PHPFPM_MAX_POOLS]):
        try:
            queues = parse_unix_diag(fetch_unix_diag())
        except OSError as err:
            log.debug("unix socket queues unreadable error=%s", err)
    entries, reachable = [], 0
    for pool in pools[:PHPFPM_MAX_POOLS]:
        listen = pool.get("listen", "")
        entry = {"name": pool["name"][:PHPFPM_MAX_TEXT], "listen": listen[:PHPFPM_MAX_TEXT],
                 "source": "processes"}
        status, why = _phpfpm_status(pool) if pool.get("status_path") else (None, None)
        if pool.get("pm") in ("static", "dynamic", "ondemand"):
            entry["processManager"] = pool["pm"]
        if "max_children" in pool:
            entry["maxChildren"] = pool["max_children"]
        if status is None:
            entry["total"] = sum(n for (master, name), n in workers().items()
                                 if name == pool["name"] and pool["master"] in (None, master))
            if why:
                entry["statusError"] = why[:PHPFPM_MAX_TEXT]
                reachable += not why.startswith("nothing listens")
        else:
            reachable += 1
            # Served on the pool's own socket, the status request is one of the active.
            own = 0 if pool.get("status_listen") else min(1, status["active processes"])
            entry.update(source="status", total=status["total processes"],
                         active=status["active processes"] - own,
                         idle=status["idle processes"] + own,
                         listenQueue=status["listen queue"],
                         listenQueueLen=status["listen queue len"])
            if status["process manager"] in ("static", "dynamic", "ondemand"):
                entry["processManager"] = status["process manager"]
            if not listen.startswith("/"):
                entry["maxListenQueue"] = status["max listen queue"]
            key = f"phpfpm:{listen}:{pool['name']}"
            ctx.rates.add(entry, "acceptedPerSec", key + ":accepted", status["accepted conn"])
            ctx.rates.increase(entry, "maxChildrenReached", key + ":maxChildren",
                               status["max children reached"])
            ctx.rates.increase(entry, "slowRequests", key + ":slow", status["slow requests"])
        if listen in queues:
            entry["listenQueue"], entry["listenQueueLen"] = queues[listen]
        entries.append(entry)
    if not reachable and not masters:
        raise ServiceAbsent("no php-fpm master runs and no configured pool answers")
    result = {"pools": entries}
    if len(pools) > PHPFPM_MAX_POOLS:
        result["omitted"] = len(pools) - PHPFPM_MAX_POOLS
    return result


def parse_apache(text):
    """mod_status `?auto` output ("Total Accesses: 1234", "BusyWorkers: 3", ...) -> dict."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    if "BusyWorkers" not in fields:
        raise ServiceAbsent("not an Apache mod_status page")
    return fields


@collector("apache", group=SERVICES)
def collect_apache(ctx):
    """Apache mod_status (settings: url, default http://127.0.0.1/server-status?auto).

    -> {"busyWorkers", "idleWorkers", "requestsPerSec"}
    """
    settings = ctx.services.get("apache", {})
    fields = parse_apache(_http_get(settings.get("url", "http://127.0.0.1/server-status?auto")))
    result = {"busyWorkers": int(fields["BusyWorkers"]),
              "idleWorkers": int(fields.get("IdleWorkers", 0))}
    if "Total Accesses" in fields:
        ctx.rates.add(result, "requestsPerSec", "apache:accesses", int(fields["Total Accesses"]))
    return result


def fetch_redis(settings):
    """INFO over a plain socket (RESP), AUTH first when a password is set."""
    try:
        if settings.get("socket"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(SERVICE_TIMEOUT)
            sock.connect(settings["socket"])
        else:
            sock = socket.create_connection((settings.get("host", "127.0.0.1"),
                                             int(settings.get("port", 6379))), SERVICE_TIMEOUT)
    except (ConnectionRefusedError, FileNotFoundError) as err:
        raise ServiceAbsent("redis is not listening") from err
    with sock:
        sock.settimeout(SERVICE_TIMEOUT)
        reader = sock.makefile("rb")
        if settings.get("password"):
            sock.sendall(_resp_command("AUTH", settings["password"]))
            reply = reader.readline()
            if not reply.startswith(b"+"):
                raise RuntimeError("redis refused the password")
        sock.sendall(_resp_command("INFO"))
        header = reader.readline()
        if header.startswith(b"-"):
            raise RuntimeError(header[1:].decode("utf-8", "replace").strip()[:200])
        if not header.startswith(b"$"):
            raise RuntimeError("unexpected reply from redis")
        length = int(header[1:])
        return reader.read(length + 2)[:length].decode("utf-8", "replace")


def _resp_command(*words):
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def parse_redis(text):
    """INFO text ("used_memory:1048576", "# Clients", ...) -> {key: value as str}."""
    fields = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, sep, value = line.partition(":")
            if sep:
                fields[key] = value.strip()
    if "used_memory" not in fields:
        raise RuntimeError("INFO reply without used_memory")
    return fields


@collector("redis", group=SERVICES)
def collect_redis(ctx):
    """Redis INFO (settings: host 127.0.0.1, port 6379, or socket; password).

    -> {"usedMemory" (bytes), "connectedClients", "opsPerSec" (commands per second)}
    """
    fields = parse_redis(fetch_redis(ctx.services.get("redis", {})))
    result = {"usedMemory": int(fields["used_memory"]),
              "connectedClients": int(fields.get("connected_clients", 0))}
    if "total_commands_processed" in fields:
        ctx.rates.add(result, "opsPerSec", "redis:commands",
                      int(fields["total_commands_processed"]))
    return result


POSTGRES_QUERY = (
    "SELECT json_build_object("
    "'connections', (SELECT count(*) FROM pg_stat_activity), "
    "'databases', (SELECT coalesce(json_agg(json_build_object('name', datname, 'size', "
    "pg_database_size(datname)) ORDER BY datname), '[]') FROM pg_database "
    "WHERE datallowconn AND NOT datistemplate AND has_database_privilege(datname, 'CONNECT')))"
)


def fetch_postgresql(settings):
    """Run POSTGRES_QUERY and return its one JSON value as text.

    By default the agent speaks PostgreSQL's wire protocol itself over a socket (trust, password,
    MD5 and SCRAM-SHA-256 logins): starting `psql` every minute costs ~20 ms of CPU, more than
    the rest of a collection. `method: "psql"` uses the psql client instead (for TLS-only or
    Kerberos set-ups the built-in client does not speak).
    """
    if settings.get("method", "socket") == "psql":
        return _postgresql_via_psql(settings)
    with _PgConnection(settings) as connection:
        rows = connection.query(POSTGRES_QUERY)
    return rows[0][0]


def _postgresql_via_psql(settings):
    import shutil
    import subprocess

    psql = settings.get("psql") or shutil.which("psql")
    if not psql:
        raise ServiceAbsent("psql is not installed")
    env = dict(os.environ, PGCONNECT_TIMEOUT="2", PGAPPNAME="mpanel-agent")
    if settings.get("password"):
        env["PGPASSWORD"] = str(settings["password"])
    command = [psql, "-X", "-A", "-t", "-w", "-h", str(settings.get("socket") or
                                                       settings.get("host", "127.0.0.1")),
               "-p", str(settings.get("port", 5432)), "-U", str(settings.get("user", "postgres")),
               "-d", str(settings.get("database", "postgres")), "-c", POSTGRES_QUERY]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=SERVICE_TIMEOUT * 2)
    except subprocess.TimeoutExpired:
        raise RuntimeError("psql timed out") from None
    if done.returncode != 0:
        if "Connection refused" in done.stderr or "No such file or directory" in done.stderr:
            raise ServiceAbsent("postgresql is not listening")
        lines = done.stderr.strip().splitlines()
        raise RuntimeError(f"psql: {lines[-1] if lines else 'failed'}"[:200])
    return done.stdout.strip()


class PgError(RuntimeError):
    pass


class _PgConnection:
    """Just enough of the PostgreSQL frontend/backend protocol (v3) to log in and run one
    simple query: no TLS, text results. https://www.postgresql.org/docs/current/protocol.html"""

    def __init__(self, settings):
        self.user = str(settings.get("user", "postgres"))
        self.password = str(settings.get("password") or "")
        port = int(settings.get("port", 5432))
        try:
            if settings.get("socket"):  # a folder such as /var/run/postgresql, as libpq takes
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(SERVICE_TIMEOUT)
                self.sock.connect(os.path.join(settings["socket"], f".s.PGSQL.{port}"))
            else:
                self.sock = socket.create_connection((settings.get("host", "127.0.0.1"), port),
                                                     SERVICE_TIMEOUT)
        except (ConnectionRefusedError, FileNotFoundError) as err:
            raise ServiceAbsent("postgresql is not listening") from err
        self.sock.settimeout(SERVICE_TIMEOUT)
        self.reader = self.sock.makefile("rb")
        self._login(str(settings.get("database", "postgres")))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.sock.sendall(b"X\x00\x00\x00\x04")  # Terminate
        except OSError:
            pass
        self.sock.close()

    def _send(self, kind, payload):
        self.sock.sendall(kind + (len(payload) + 4).to_bytes(4, "big") + payload)

    def _receive(self):
        header = self.reader.read(5)
        if len(header) < 5:
            raise PgError("postgresql closed the connection")
        body = self.reader.read(int.from_bytes(header[1:], "big") - 4)
        if header[:1] == b"E":
            fields = dict((part[:1], part[1:].decode("utf-8", "replace"))
                          for part in body.split(b"\x00") if part)
            raise PgError(f"postgresql: {fields.get(b'M', 'error')}"[:200])
        return header[:1], body

    def _login(self, database):
        params = b"".join(k.encode() + b"\x00" + v.encode() + b"\x00" for k, v in (
            ("user", self.user), ("database", database), ("application_name", "mpanel-agent")))
        payload = (196608).to_bytes(4, "big") + params + b"\x00"  # protocol 3.0
        self.sock.sendall((len(payload) + 4).to_bytes(4, "big") + payload)
        scram = None
        while True:
            kind, body = self._receive()
            if kind == b"Z":
                return
            if kind != b"R":
                continue  # ParameterStatus, BackendKeyData, notices
            code = int.from_bytes(body[:4], "big")
            if code in (3, 5, 10) and not self.password:
                raise PgError("postgresql asks for a password: set services.postgresql.password")
            if code == 3:  # cleartext
                self._send(b"p", self.password.encode() + b"\x00")
            elif code == 5:  # md5
                inner = hashlib.md5((self.password + self.user).encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                self._send(b"p", b"md5" + outer.encode() + b"\x00")
            elif code == 10:  # SASL: the server lists mechanisms
                if b"SCRAM-SHA-256" not in body[4:].split(b"\x00"):
                    raise PgError("postgresql offers no SASL mechanism the agent speaks")
                scram = ScramClient(self.password)
                first = scram.client_first().encode()
                self._send(b"p", b"SCRAM-SHA-256\x00" + len(first).to_bytes(4, "big") + first)
            elif code == 11:  # SASL continue
                self._send(b"p", scram.client_final(body[4:].decode()).encode())
            elif code == 12:  # SASL final
                scram.verify_server(body[4:].decode())
            elif code != 0:
                raise PgError(f"postgresql wants an authentication method ({code}) the agent "
                              "does not speak; use method psql")

    def query(self, sql):
        """Simple query -> rows of text values (None for NULL)."""
        self._send(b"Q", sql.encode() + b"\x00")
        rows = []
        while True:
            kind, body = self._receive()
            if kind == b"D":
                count, offset, row = int.from_bytes(body[:2], "big"), 2, []
                for _ in range(count):
                    length = int.from_bytes(body[offset:offset + 4], "big", signed=True)
                    offset += 4
                    if length < 0:
                        row.append(None)
                    else:
                        row.append(body[offset:offset + length].decode("utf-8", "replace"))
                        offset += length
                rows.append(row)
            elif kind == b"Z":
                return rows


class ScramClient:
    """SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL uses it: no channel binding, and the
    user name is taken from the start-up message, so the client sends an empty one."""

    def __init__(self, password, nonce=None, user=""):
        import base64

        self.b64 = base64
        self.password = password
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n={user},r={self.nonce}"
        self.expected_server_signature = None

    def client_first(self):
        return "n,," + self.first_bare

    def client_final(self, server_first):
        import hmac

        fields = dict(item.split("=", 1) for item in server_first.split(","))
        if not fields["r"].startswith(self.nonce):
            raise PgError("postgresql SCRAM nonce mismatch")
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(),
                                     self.b64.b64decode(fields["s"]), int(fields["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={fields['r']}"
        message = f"{self.first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.expected_server_signature = self.b64.b64encode(
            hmac.new(server_key, message, hashlib.sha256).digest()).decode()
        return f"{without_proof},p={self.b64.b64encode(proof).decode()}"

    def verify_server(self, server_final):
        import hmac

        if not hmac.compare_digest(server_final, f"v={self.expected_server_signature}"):
            raise PgError("postgresql SCRAM server signature mismatch")


def parse_postgresql(text):
    """The query's one JSON line -> {"connections", "databases": [{"name", "size"}]}."""
    document = json.loads(text)
    return {"connections": int(document["connections"]),
            "databases": [{"name": d["name"][:256], "size": int(d["size"])}
                          for d in document["databases"] if d.get("size") is not None]}


@collector("postgresql", group=SERVICES)
def collect_postgresql(ctx):
    """PostgreSQL (settings: host 127.0.0.1 or socket folder, port, user postgres, password,
    database postgres, method socket|psql).

    -> {"connections", "databases": [{"name", "size" (bytes)}]}
    """
    return parse_postgresql(fetch_postgresql(ctx.services.get("postgresql", {})))


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket, as the Docker Engine API speaks it."""

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def fetch_docker(settings):
    """GET /info from the Engine API on its unix socket -> JSON text."""
    path = settings.get("socket", "/var/run/docker.sock")
    if WINDOWS or not os.path.exists(path):
        raise ServiceAbsent("no docker socket")
    connection = _UnixHTTPConnection(path, SERVICE_TIMEOUT)
    try:
        connection.request("GET", "/info", headers={"Host": "docker"})
        response = connection.getresponse()
        body = response.read()
    except PermissionError:
        raise RuntimeError(f"permission denied on {path} (add the agent's user to the "
                           "docker group)") from None
    except ConnectionRefusedError:
        raise ServiceAbsent("docker is not running") from None
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"docker answered HTTP {response.status}")
    return body.decode("utf-8", "replace")


def parse_docker(text):
    """/info JSON -> {"containersTotal", "containersRunning", "images"}."""
    info = json.loads(text)
    return {"containersTotal": int(info["Containers"]),
            "containersRunning": int(info["ContainersRunning"]),
            "images": int(info.get("Images", 0))}


@collector("docker", group=SERVICES)
def collect_docker(ctx):
    """Docker Engine API (settings: socket, default /var/run/docker.sock).

    -> {"containersTotal", "containersRunning", "images"}
    """
    return parse_docker(fetch_docker(ctx.services.get("docker", {})))


# ===== Running collectors =======================================================================

_FAILING = set()


def run_collectors(names, ctx):
    """Run each collector; one that raises is reported in `unavailable` and logged once (and once
    more when it recovers), never fatal; one whose service is absent is left out silently.

    -> (metrics, unavailable): metrics maps each system collector to its dict and puts service
    results under metrics["services"]; unavailable maps failed collectors to their reason.
    """
    metrics, unavailable, services = {}, {}, {}
    now = time.monotonic()
    for name in names:
        spec = COLLECTORS.get(name)
        if spec is None or ctx.absent_until.get(name, 0) > now:
            continue
        started = time.perf_counter()
        try:
            result = spec.func(ctx)
        except ServiceAbsent as err:
            ctx.absent_until[name] = now + ABSENT_RECHECK
            log.debug("collector absent name=%s reason=%s", name, err)
            continue
        except Exception as err:  # the boundary: one collector must never stop the others
            unavailable[name] = f"{type(err).__name__}: {err}"[:300]
            if name not in _FAILING:
                log.warning("collector failed name=%s error=%s", name, unavailable[name])
                _FAILING.add(name)
            continue
        if name in _FAILING:
            log.warning("collector recovered name=%s", name)
            _FAILING.discard(name)
        log.debug("collector ok name=%s ms=%.2f", name, (time.perf_counter() - started) * 1000)
        if spec.group == SERVICES:
            services[name] = result
        else:
            metrics[name] = result
    if services:
        metrics[SERVICES] = services
    ctx.rates.end_cycle()
    return metrics, unavailable


# ===== Spill buffer =============================================================================

def is_corrupt(err):
    """Whether SQLite says the file itself is damaged (rather than full, locked or read-only)."""
    name = getattr(err, "sqlite_errorname", None)  # Python 3.11+
    if name:
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    return "malformed" in str(err) or "not a database" in str(err)


def _sqlite_uri(path, query):
    """A file: URI for SQLite (Windows drive letters and odd characters included)."""
    return pathlib.Path(path).absolute().as_uri() + "?" + query


def _pad_to_header_size(path):
    """Zero-fill a truncated SQLite file up to the size its header gives, without which SQLite
    refuses to read any of it; the missing pages then read as damaged, and only they."""
    with open(path, "r+b") as handle:
        header = handle.read(100)
        if len(header) < 100:
            return
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        expected = page_size * pages
        handle.seek(0, os.SEEK_END)
        if 0 < expected <= 1 << 32 and handle.tell() < expected:
            handle.truncate(expected)


class SpillBuffer:
    """Every sample, written to SQLite before it is sent and deleted only once the panel has
    stored it. WAL with synchronous=FULL: a committed sample survives kill -9 and power loss.
    Bounded by age and total size; what falls off is counted and logged by the caller.

    Age is measured on a clock a wall-clock step cannot move (seconds since boot, with the boot's
    id): NTP stepping the clock by hours never drops a sample as too old. Samples from an earlier
    boot are aged by the wall clock once, when the buffer is opened: nothing better survives a
    reboot.

    The file may fail under it. When it cannot be written (a full disk, a read-only or vanished
    folder) samples wait in memory, within the same bounds, and go to the file as soon as it
    takes writes again; samples the panel stored but the file could not delete are remembered,
    so they are not sent twice. A file SQLite calls damaged (random bytes, truncated) is moved
    aside for a person to look at, after every sample that can still be read has been taken
    from it, and a fresh file is started. Each change is logged once; nothing here raises for
    the file's trouble."""

    def __init__(self, path, max_age=3600, max_bytes=20_000_000):
        self.path = path
        self.max_age, self.max_bytes = max_age, max_bytes
        self.db = None
        self.memory = []  # [id, boot_id, since_boot, wall, body], oldest first; ids below 0
        self.last_memory_id = 0
        self.unacked = set()  # ids the panel stored that the file could not delete yet
        self.trouble = ""  # why the file cannot be written, while it cannot
        self.prepared = False
        self.read_only = False  # opened as it stands, for delivering, while writes fail
        self.closed = False
        self._ready_for_writes()

    # -- the file --

    def _open(self, depth=0):
        """Open the file when it is not open. -> True when it is open (maybe read-only)."""
        if self.db is not None:
            return True
        try:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
            # Reads every page: damage anywhere is found now, while the rest can be rescued.
            check = self.db.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise sqlite3.DatabaseError(f"database disk image is malformed: {check[:3]}")
        except sqlite3.DatabaseError as err:
            self._close_db()
            if is_corrupt(err) and depth == 0 and self._set_aside(err):
                return self._open(depth + 1)
            self._unwritable(err)
            return self._open_read_only()
        except OSError as err:
            self._close_db()
            self._unwritable(err)
            return False
        self.prepared = False
        return True

    def _open_read_only(self):
        """The file as it stands, for reading only, when it cannot be opened for writing (a full
        disk leaves no room for SQLite's -shm): what it holds is still delivered. This ignores a
        -wal left by kill -9; those samples wait until the file can be written again."""
        if not os.path.exists(self.path):
            return False
        try:
            self.db = sqlite3.connect(_sqlite_uri(self.path, "mode=ro&immutable=1"), uri=True,
                                      isolation_level=None)
            self.db.execute("SELECT 1 FROM samples LIMIT 0")
        except sqlite3.Error:
            self._close_db()
            return False
        self.read_only = True
        return True

    def _ready_for_writes(self):
        """Open, with the table as this version writes it. -> False when it cannot be now."""
        if self.read_only:
            self._close_db()  # and try for writes again: space may have returned
        if not self._open() or self.read_only:
            return False
        if not self.prepared:
            try:
                self._prepare()
            except sqlite3.DatabaseError as err:
                self._fault(err)
                return False
            self.prepared = True
        return True

    def _readable(self):
        return self.db is not None and (self.prepared or self._has_table())

    def _prepare(self):
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS samples (id INTEGER PRIMARY KEY "
                        "AUTOINCREMENT, taken_at REAL NOT NULL, body TEXT NOT NULL, "
                        "boot_id TEXT, since_boot REAL)")
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(samples)")}
        for column, kind in (("boot_id", "TEXT"), ("since_boot", "REAL")):
            if column not in columns:  # a buffer left by agent 0.2.0
                self.db.execute(f"ALTER TABLE samples ADD COLUMN {column} {kind}")
        moment = now_moment()
        self.db.execute("UPDATE samples SET boot_id = ?, since_boot = ? - max(0, ? - taken_at) "
                        "WHERE boot_id IS NOT ?",
                        (moment.boot_id, moment.since_boot, moment.wall, moment.boot_id))

    def _has_table(self):
        try:
            return self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'samples'") \
                .fetchone() is not None
        except sqlite3.DatabaseError:
            return False

    def _close_db(self):
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
        self.db, self.read_only = None, False

    def _fault(self, err):
        """A query failed: rescue and replace a damaged file, or note that it takes no writes.
        Never on the strength of a read-only view: that one sees no locks, so another process's
        writes can look like damage."""
        if is_corrupt(err) and not self.read_only:
            self._close_db()
            if self._set_aside(err):
                self._open(depth=1)
                return
        self._unwritable(err)

    def _unwritable(self, err):
        reason = f"{type(err).__name__}: {err}"[:300]
        if not self.trouble:
            log.warning("buffer file cannot be written, keeping samples in memory until it can "
                        "path=%s error=%s max_bytes=%s", self.path, reason, self.max_bytes)
        self.trouble = reason

    def _writable(self):
        if self.trouble:
            log.warning("buffer file writable again path=%s buffered=%s", self.path, len(self))
            self.trouble = ""

    def _set_aside(self, err):
        """Take what can be read from a damaged file, then move it aside. -> True if moved."""
        rescued = self._rescue()
        aside = set_aside(self.path, "corrupt")
        if aside is None and os.path.exists(self.path):
            return False
        moment = now_moment()
        self.memory[:0] = [[self._memory_id(), moment.boot_id,
                            moment.since_boot - max(0.0, moment.wall - wall), wall, body]
                           for wall, body in rescued]
        self.memory.sort(key=lambda row: row[2])
        self.unacked.clear()
        log.warning("buffer file damaged, moved aside and starting a fresh one path=%s "
                    "kept_as=%s error=%s rescued=%s", self.path, aside, err, len(rescued))
        return True

    def _rescue(self, budget=5000):
        """(taken_at, body) of every row still readable, oldest first. A damaged page stops a
        scan where it lies, and pages are not in id order, so: one scan from the newest end, then
        from the oldest, stepping past each damaged stretch (one id at a time, then doubling),
        within `budget` queries."""
        with tempfile.TemporaryDirectory(prefix="mpanel-rescue-") as scratch:
            copy = os.path.join(scratch, "buffer.sqlite3")
            try:
                for suffix in ("", "-wal"):
                    if os.path.exists(self.path + suffix):
                        shutil.copyfile(self.path + suffix, copy + suffix)
                _pad_to_header_size(copy)
                db = sqlite3.connect(_sqlite_uri(copy, "mode=ro"), uri=True)
                db.execute("SELECT 1 FROM samples LIMIT 0")
            except (OSError, sqlite3.Error):
                return []
            return self._rescue_rows(db, budget)

    def _rescue_rows(self, db, budget):
        found = {}

        def scan(query, args):
            """Rows of `query` until the end (-> True) or damage (-> False)."""
            try:
                for row_id, taken_at, body in db.execute(query, args):
                    if row_id not in self.unacked and isinstance(body, str):
                        found[row_id] = (float(taken_at or 0), body)
                    scan.last = row_id
            except (sqlite3.Error, TypeError, ValueError):
                return False
            return True

        try:
            scan("SELECT id, taken_at, body FROM samples ORDER BY id DESC", ())
            try:
                newest = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'samples'") \
                    .fetchone()[0]
            except (sqlite3.Error, TypeError):
                newest = max(found, default=0)
            position, misses = 0, 0
            while budget > 0 and position < newest:
                budget -= 1
                scan.last = None
                if scan("SELECT id, taken_at, body FROM samples WHERE id > ? ORDER BY id",
                        (position,)):
                    break
                if scan.last is not None:
                    position, misses = scan.last, 0
                misses += 1
                position += 1 if misses <= 64 else 2 ** min(misses - 64, 40)
        finally:
            db.close()
        return [found[row_id] for row_id in sorted(found)]

    def _flush_memory(self):
        """Move samples from memory to the file and finish deletes it could not do. -> True
        when nothing is left waiting."""
        if not self.memory and not self.unacked:
            return True
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("DELETE FROM samples WHERE id = ?", [(i,) for i in self.unacked])
            self.db.executemany("INSERT INTO samples (boot_id, since_boot, taken_at, body) "
                                "VALUES (?, ?, ?, ?)", [row[1:] for row in self.memory])
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as err:
            if self.db is not None and self.db.in_transaction:
                try:
                    self.db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self._fault(err)
            return False
        self.memory, self.unacked = [], set()
        return True

    def _memory_id(self):
        self.last_memory_id -= 1
        return self.last_memory_id

    # -- samples --

    def push(self, sample, moment=None):
        moment = moment or now_moment()
        row = [moment.boot_id, moment.since_boot, moment.wall,
               json.dumps(sample, separators=(",", ":"))]
        for _ in range(2):  # a second try after a damaged file was replaced
            if not (self._ready_for_writes() and self._flush_memory()):
                continue
            try:
                cursor = self.db.execute("INSERT INTO samples (boot_id, since_boot, taken_at, "
                                         "body) VALUES (?, ?, ?, ?)", row)
            except sqlite3.DatabaseError as err:
                self._fault(err)
                continue
            self._writable()
            return cursor.lastrowid
        row_id = self._memory_id()
        self.memory.append([row_id] + row)
        return row_id

    def peek(self, limit, max_bytes=256 * 1024):
        """Oldest samples first: up to `limit` of them and about `max_bytes` of JSON."""
        stored = []
        if self._readable():
            try:
                stored = self.db.execute("SELECT id, body FROM samples ORDER BY id LIMIT ?",
                                         (limit + len(self.unacked),)).fetchall()
            except sqlite3.DatabaseError as err:
                self._fault(err)  # a damaged file's readable rows are now in memory
                stored = []
        candidates = [row for row in stored if row[0] not in self.unacked]
        candidates += [(row[0], row[4]) for row in self.memory]
        rows, size, unreadable = [], 0, []
        for row_id, body in candidates:
            if len(rows) >= limit or (rows and size + len(body) > max_bytes):
                break
            try:
                sample = json.loads(body)
            except (TypeError, ValueError):
                sample = None
            if not isinstance(sample, dict):
                unreadable.append(row_id)
                continue
            rows.append((row_id, sample))
            size += len(body)
        if unreadable:
            log.warning("unreadable samples in the buffer, dropping them count=%s",
                        len(unreadable))
            self.ack(unreadable)
        return rows

    def ack(self, ids):
        in_memory = {i for i in ids if i < 0}
        if in_memory:
            self.memory = [row for row in self.memory if row[0] not in in_memory]
        in_file = {i for i in ids if i > 0} | self.unacked
        if not in_file:
            return
        self.unacked = in_file  # until the file has let them go
        if self.db is None:
            return
        try:
            self.db.executemany("DELETE FROM samples WHERE id = ?", [(i,) for i in in_file])
        except sqlite3.DatabaseError as err:
            self._fault(err)
            return
        self.unacked = set()

    def prune(self, moment=None):
        """Drop samples older than max_age, then the oldest beyond max_bytes; -> count dropped."""
        moment = moment or now_moment()
        cutoff = moment.since_boot - self.max_age
        kept = [row for row in self.memory if row[2] >= cutoff]
        dropped = len(self.memory) - len(kept)
        self.memory = kept
        in_memory = sum(len(row[4]) for row in self.memory)
        if not self._readable():
            total, in_file = in_memory, []
        else:
            try:
                dropped += self.db.execute("DELETE FROM samples WHERE boot_id = ? AND "
                                           "since_boot < ?", (moment.boot_id, cutoff)).rowcount
                total = in_memory + self.db.execute("SELECT coalesce(sum(length(body)), 0) "
                                                    "FROM samples").fetchone()[0]
                in_file = [] if total <= self.max_bytes else self.db.execute(
                    "SELECT id, length(body) FROM samples ORDER BY id").fetchall()
            except sqlite3.DatabaseError as err:
                self._fault(err)
                total, in_file = in_memory, []
        excess = total - self.max_bytes
        cutoff_id = None
        for row_id, length in in_file:
            if excess <= 0:
                break
            excess -= length
            cutoff_id = row_id
        if cutoff_id is not None:
            try:
                dropped += self.db.execute("DELETE FROM samples WHERE id <= ?",
                                           (cutoff_id,)).rowcount
            except sqlite3.DatabaseError as err:
                self._fault(err)
        while excess > 0 and self.memory:
            excess -= len(self.memory.pop(0)[4])
            dropped += 1
        return dropped

    def __len__(self):
        stored = 0
        if self.db is not None:
            try:
                stored = self.db.execute("SELECT count(*) FROM samples").fetchone()[0]
            except sqlite3.DatabaseError:
                stored = 0
        return max(0, stored - len(self.unacked)) + len(self.memory)

    def __contains__(self, sample_id):
        if sample_id < 0:
            return any(row[0] == sample_id for row in self.memory)
        if self.db is None or sample_id in self.unacked:
            return False
        try:
            return self.db.execute("SELECT 1 FROM samples WHERE id = ?",
                                   (sample_id,)).fetchone() is not None
        except sqlite3.DatabaseError:
            return False

    def close(self):
        """Write what waits in memory if the file takes it now, then close (once)."""
        if self.closed:
            return
        self.closed = True
        if self._ready_for_writes():
            self._flush_memory()
        self._close_db()


# ===== Reporter =================================================================================

@dataclasses.dataclass
class Outcome:
    """What became of one request. `status` is 0 when no HTTP answer arrived."""

    status: int
    data: dict = dataclasses.field(default_factory=dict)
    error: str = ""
    retry_after: float = None

    @property
    def ok(self):
        return 200 <= self.status < 300


class Reporter:
    """Talks to the panel: one urllib3 pool (one kept-alive connection), explicit timeouts,
    TLS 1.2+, optional CA bundle or certificate pin, gzip bodies. Never raises for network or
    HTTP trouble: every call returns an Outcome. Backoff state lives here."""

    def __init__(self, config):
        self.base = config.url
        self.max_delay = config.retry_max_delay
        self.headers = {
            "Authorization": f"Bearer {config.api_key}",
            "Content-Type": "application/json",
            "User-Agent": f"mpanel-agent/{__version__}",
        }
        # Our own SSL context rather than urllib3's TLS options: those (ssl_minimum_version)
        # exist only in urllib3 2, and Debian 12, Ubuntu 22.04 and RHEL 9 ship 1.26.
        # urllib3 matches the host name itself (IP addresses too, which Python's check would
        # refuse under urllib3 1.26, as it sends no SNI for them): hence check_hostname off.
        context = ssl.create_default_context(cafile=config.ca_bundle or None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False
        tls = {"ssl_context": context}
        if config.pin_sha256:
            # The pin replaces CA trust: it lets a self-signed panel be trusted exactly.
            context.verify_mode = ssl.CERT_NONE
            tls["assert_fingerprint"] = config.pin_sha256
            tls["cert_reqs"] = "CERT_NONE"
        self.pool = urllib3.PoolManager(
            num_pools=1, maxsize=1, retries=False,
            timeout=urllib3.Timeout(connect=5.0, read=config.timeout), **tls)
        self.failures = 0
        self.not_before = 0.0  # monotonic time before which nothing is sent

    def use_key(self, api_key):
        self.headers["Authorization"] = f"Bearer {api_key}"

    def request(self, method, path, body=None):
        # Our clock as we send (RFC 9110 lets a client say it): the panel warns when it is off
        # and judges our samples by it, so a clock stepped back still shows fresh figures.
        headers = dict(self.headers, Date=email.utils.formatdate(wall_time(), usegmt=True))
        payload = None
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            if len(payload) > 512:
                payload = gzip.compress(payload, compresslevel=6)
                headers["Content-Encoding"] = "gzip"
        try:
            response = self.pool.request(method, self.base + path, body=payload, headers=headers)
        except urllib3.exceptions.SSLError as err:
            return Outcome(0, error=f"TLS: {_reason(err)}")
        except urllib3.exceptions.HTTPError as err:
            return Outcome(0, error=f"{type(err).__name__}: {_reason(err)}")
        try:
            data = json.loads(response.data or b"{}")
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        error = "" if 200 <= response.status < 300 else \
            str(data.get("error") or response.reason or "")[:300]
        return Outcome(response.status, data, error,
                       parse_retry_after(response.headers.get("Retry-After")))

    # -- backoff --

    def may_send(self):
        return time.monotonic() >= self.not_before

    def succeeded(self):
        self.failures = 0
        self.not_before = 0.0

    def failed(self, retry_after=None, floor=1.0, permanent=False):
        """Exponential backoff with full jitter, capped; the server's Retry-After wins. A
        `permanent` refusal (one retrying will not change) waits the longest at once."""
        self.failures += 1
        if retry_after is not None:
            delay = min(max(retry_after, 0.0), 3600.0)
        elif permanent:
            delay = random.uniform(0.8, 1.0) * self.max_delay
        else:
            ceiling = min(self.max_delay, floor * 2 ** min(self.failures - 1, 20))
            delay = random.uniform(ceiling / 2, ceiling)
        self.not_before = time.monotonic() + delay
        return delay


def parse_retry_after(value):
    """Retry-After as seconds (RFC 9110: delay-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (moment - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def _reason(err):
    return str(getattr(err, "reason", None) or err)[:200]


_SAMPLE_INDEX = re.compile(r"^samples\[(\d+)\]")
# Answers that mean "not now" rather than "no": the panel is down, restarting, overloaded, or a
# proxy in front of it lost it (and 404/405: a panel mid-upgrade). Any other refusal will not
# change by asking again soon.
TRANSIENT_STATUSES = frozenset({0, 404, 405, 408, 429})
# Refusals of what a metrics body holds, dealt with sample by sample (drop one, split a batch):
# each makes progress, so they need no backoff.
SAMPLE_REFUSALS = frozenset({400, 413, 415, 422})


# ===== The agent ================================================================================

def _key_digest(api_key):
    return hashlib.sha256(api_key.encode()).hexdigest()


def effective_api_key(config, state):
    """The key to use: one the panel handed over (kept in the state file) replaces the key in
    config.json — as long as config.json still holds the key it replaced. An admin who puts a
    different key in config.json is obeyed."""
    handed = state.get("apiKey")
    if handed and state.get("replacesKey") == _key_digest(config.api_key):
        return handed
    return config.api_key


class Stopping(Exception):
    """Raised by the signal handler to cut a network call short on SIGTERM/SIGINT."""


class Agent:
    """Registers, collects, buffers, delivers. Interval and collectors follow the panel."""

    BATCH_SAMPLES = 50

    def __init__(self, config, reporter=None, buffer=None):
        self.config = config
        self.state = StateFile(config.state_dir)
        self.reporter = reporter or Reporter(config)
        self.reporter.use_key(effective_api_key(config, self.state.data))
        self.buffer = buffer or SpillBuffer(os.path.join(config.state_dir, "buffer.sqlite3"),
                                            config.buffer_max_age, config.buffer_max_bytes)
        self.context = CollectorContext(self.state.data.get("collectors"), config.services)
        self.interval = config.report_interval
        self.local_collectors = expand_collectors(config.enabled_collectors)
        self.collectors = self.local_collectors
        self.batch_size = self.BATCH_SAMPLES
        self.stop_event = threading.Event()
        self.in_network = False
        self.trouble = ""  # what the panel last said no with, while it does
        self.reregistered = False  # after a 403 on metrics, until a batch is stored
        self.clock_offset = None  # wall clock minus boot clock at the previous sample

    @property
    def key_rejected(self):
        return self.trouble == "key rejected"

    # -- talking to the panel --

    def send(self, method, path, body=None):
        """One request; a SIGTERM during it raises Stopping (see main), and so does one that
        came before it (during a collection, say): a stop never waits on a new request."""
        if self.stop_event.is_set():
            raise Stopping()
        self.in_network = True
        try:
            return self.reporter.request(method, path, body)
        finally:
            self.in_network = False

    def note_outcome(self, what, outcome):
        """Set the backoff, and log changes of state only (first failure, recovery): every
        refusal backs off, so none can make the agent spin."""
        if outcome.ok and isinstance(outcome.data.get("newApiKey"), str):
            self.adopt_key(outcome.data["newApiKey"])
        if outcome.ok:
            if self.trouble:
                log.warning("panel accepts requests again request=%s was=%r", what, self.trouble)
            self.trouble = ""
            self.reporter.succeeded()
            return
        if what == "metrics" and outcome.status in SAMPLE_REFUSALS:
            return  # drain() drops the sample or splits the batch
        if outcome.status == 401:
            trouble = "key rejected"
            if trouble != self.trouble:
                log.error("API key rejected by the panel (%s): check controlPanel.apiKey; "
                          "backing off", what)
            delay = self.reporter.failed(floor=30.0)
        elif outcome.status in TRANSIENT_STATUSES or outcome.status >= 500:
            trouble = "unavailable"
            if trouble != self.trouble:
                log.warning("panel unavailable request=%s status=%s error=%s; buffering",
                            what, outcome.status, outcome.error)
            delay = self.reporter.failed(outcome.retry_after)
        else:
            trouble = f"{what} refused with {outcome.status}: {outcome.error}"
            if trouble != self.trouble:
                log.warning("panel refused request=%s status=%s error=%s; retrying will not "
                            "change that: backing off to retry_max_delay=%ss, buffering",
                            what, outcome.status, outcome.error, self.config.retry_max_delay)
            delay = self.reporter.failed(outcome.retry_after, permanent=True)
        self.trouble = trouble
        log.debug("backing off seconds=%.1f buffered=%s", delay, len(self.buffer))

    def adopt_key(self, new_key):
        """Zero-touch rotation: the panel handed over a new key in an authenticated answer.
        Keep it in the state file (written atomically) and use it from the next request."""
        if not re.match(r"^agent_[0-9a-f]{12}_[A-Za-z0-9_-]{40}$", new_key):
            log.warning("panel sent a malformed new key; keeping the current one")
            return
        self.state.data["apiKey"] = new_key
        self.state.data["replacesKey"] = _key_digest(self.config.api_key)
        self.state.save()
        self.reporter.use_key(new_key)
        log.warning("API key rotated by the panel: now using key_id=%s (kept in %s)",
                    new_key.split("_")[1], self.state.path)

    # -- registration and settings --

    def identity(self):
        return {
            "hostname": self.config.resolved_hostname[:255],
            "os": f"{platform.system()} {platform.release()}"[:50],
            "arch": (platform.machine() or "unknown")[:50],
            "version": __version__,
            # Whole seconds: psutil's value wobbles by a fraction between calls, and a change
            # here means a new registration (after a reboot: the panel shows uptime from it).
            "bootTime": int(psutil.boot_time()),
        }

    @property
    def server_id(self):
        return self.state.data.get("serverId")

    def ensure_registered(self):
        """Register when never registered, or when what we registered has changed."""
        identity = self.identity()
        if self.server_id and self.state.data.get("registeredAs") == identity:
            return Outcome(200, {"serverId": self.server_id})
        outcome = self.send("POST", "/api/agent/register", identity)
        self.note_outcome("register", outcome)
        if outcome.ok and isinstance(outcome.data.get("serverId"), int):
            self.state.data["serverId"] = outcome.data["serverId"]
            self.state.data["registeredAs"] = identity
            self.state.save()
            log.info("registered server_id=%s hostname=%s", self.server_id, identity["hostname"])
        return outcome

    def refresh_settings(self):
        outcome = self.send("GET", "/api/agent/config")
        self.note_outcome("config", outcome)
        if outcome.ok:
            self.apply_settings(outcome.data)
        return outcome

    def apply_interval(self, interval):
        """The interval the panel asks for (`reportInterval`, or a metrics answer's
        `nextReportIn`)."""
        if isinstance(interval, int) and 1 <= interval <= 3600 and interval != self.interval:
            log.info("report interval changed from=%s to=%s", self.interval, interval)
            self.interval = interval

    def apply_settings(self, data):
        """GET /api/agent/config's answer: the interval and the enabled collectors."""
        self.apply_interval(data.get("reportInterval"))
        # The panel can narrow what config.json enables, never widen it; without a list it has
        # not narrowed anything (any more): every collector config.json enables runs.
        enabled = data.get("metricsEnabled")
        chosen = self.local_collectors
        if isinstance(enabled, list):
            allowed = set(expand_collectors([n for n in enabled if isinstance(n, str)]))
            chosen = tuple(n for n in self.local_collectors if n in allowed)
        if chosen != self.collectors:
            log.info("collectors changed to=%s", ",".join(chosen))
            self.collectors = chosen

    # -- one cycle --

    def note_clock(self, moment):
        """Log a step of the wall clock (NTP, a person, a VM resumed) once, by how far it went:
        samples keep the time they were taken and the buffer ages by the boot clock, so nothing
        is dropped for it; the panel refuses samples stamped ahead of its own clock."""
        offset = moment.wall - moment.since_boot
        saved = self.state.data.get("clock") or {}
        if self.clock_offset is None and saved.get("bootId") == moment.boot_id:
            self.clock_offset = saved.get("offset")  # the previous run's, for --once
        if self.clock_offset is not None and \
                abs(offset - self.clock_offset) > CLOCK_STEP_SECONDS:
            log.warning("wall clock stepped seconds=%+.0f: buffered samples are kept; samples "
                        "now carry the new time", offset - self.clock_offset)
        self.clock_offset = offset
        self.state.data["clock"] = {"bootId": moment.boot_id, "offset": round(offset, 3)}

    def collect(self):
        """One sample (without serverId: that is added when it is sent)."""
        self.note_clock(now_moment())
        metrics, unavailable = run_collectors(self.collectors, self.context)
        self.state.data["collectors"] = self.context.to_json()
        sample = {"timestamp": utc_now_iso(), "metrics": metrics}
        if unavailable:
            sample["unavailable"] = unavailable
        return sample

    def collect_and_buffer(self):
        sample = self.collect()
        sample_id = self.buffer.push(sample)
        log.debug("sample buffered timestamp=%s id=%s", sample["timestamp"], sample_id)
        dropped = self.buffer.prune()
        if dropped:
            log.warning("buffer full: dropped oldest samples count=%s max_age=%ss max_bytes=%s",
                        dropped, self.config.buffer_max_age, self.config.buffer_max_bytes)
        self.state.save()
        return sample_id

    def drain(self):
        """Send buffered samples oldest first, in batches, until the buffer is empty or the
        panel fails. -> True when the buffer is empty."""
        while not self.stop_event.is_set():
            if not self.reporter.may_send():
                return False
            if not self.server_id and not self.ensure_registered().ok:
                return False
            rows = self.buffer.peek(self.batch_size)
            if not rows:
                return True
            if len(rows) == 1:
                body = dict(rows[0][1], serverId=self.server_id)
            else:
                body = {"serverId": self.server_id, "samples": [sample for _, sample in rows]}
            outcome = self.send("POST", "/api/agent/metrics", body)
            if outcome.status == 403 and not self.reregistered:
                # serverId is not this key's: the key was moved to another server. Register
                # again, once: a 403 after that is a refusal like any other.
                log.warning("panel says serverId %s is not this key's; registering again",
                            self.server_id)
                self.reregistered = True
                self.state.data.pop("serverId", None)
                self.state.data.pop("registeredAs", None)
                if self.ensure_registered().ok:
                    continue
                return False
            self.note_outcome("metrics", outcome)
            if outcome.ok:
                self.buffer.ack([row_id for row_id, _ in rows])
                self.batch_size = self.BATCH_SAMPLES
                self.reregistered = False
                next_in = outcome.data.get("nextReportIn")
                if isinstance(next_in, int):
                    self.apply_interval(next_in)
                if len(rows) > 1:
                    log.info("replayed buffered samples count=%s left=%s", len(rows),
                             len(self.buffer))
                continue
            if outcome.status not in SAMPLE_REFUSALS:
                return False
            self.refuse_samples(outcome, rows)
        return False

    def refuse_samples(self, outcome, rows):
        """The panel refused what a batch holds: drop the sample it names (it can never be
        stored), or split a batch it did not pin down."""
        match = _SAMPLE_INDEX.match(outcome.data.get("field") or "")
        if match and int(match.group(1)) < len(rows):
            bad = rows[int(match.group(1))]
        elif len(rows) > 1:
            # Not pinned on one sample (too large, unreadable): retry one by one.
            self.batch_size = max(1, len(rows) // 2)
            return
        else:
            bad = rows[0]
        log.warning("panel refused a sample, dropping it timestamp=%s status=%s error=%s",
                    bad[1].get("timestamp"), outcome.status, outcome.error)
        self.buffer.ack([bad[0]])

    def heartbeat(self):
        if not self.server_id or not self.reporter.may_send():
            return None
        outcome = self.send("POST", "/api/agent/heartbeat",
                            {"serverId": self.server_id, "timestamp": utc_now_iso()})
        self.note_outcome("heartbeat", outcome)
        return outcome

    # -- modes --

    def once(self):
        """Collect one sample, deliver it and whatever was buffered; -> process exit code."""
        try:
            sample_id = self.collect_and_buffer()
            registered = self.ensure_registered()
            delivered = registered.ok and self.drain()
            if delivered or sample_id not in self.buffer:
                return 0  # this run's sample got through; older ones wait for the next run
            reason = "API key rejected" if self.key_rejected else \
                "the panel could not be reached or refused the sample"
            waiting = len(self.buffer)
            self.buffer.close()  # writes samples held in memory, if the file takes them now
            if self.buffer.memory:
                print(f"error: sample not delivered ({reason}); {len(self.buffer.memory)} "
                      f"sample(s) are lost: the buffer file cannot be written "
                      f"({self.buffer.trouble})", file=sys.stderr)
            else:
                print(f"error: sample not delivered ({reason}); {waiting} sample(s) stay "
                      f"buffered for the next run", file=sys.stderr)
            return 1
        finally:
            self.buffer.close()

    def run_forever(self):
        """Collect every `interval` seconds until stopped; deliver what the buffer holds when
        the panel lets us. Between reports longer than heartbeatInterval, heartbeats keep the
        server from looking offline (the panel's threshold is 5 minutes)."""
        log.info("agent starting version=%s url=%s interval=%s buffered=%s", __version__,
                 self.config.url, self.interval, len(self.buffer))
        try:
            self.refresh_settings()
            now = time.monotonic()
            next_sample, next_settings = now, now + SETTINGS_EVERY
            next_heartbeat = now + self.config.heartbeat_interval
            while not self.stop_event.is_set():
                now = time.monotonic()
                if now >= next_sample:
                    self.collect_and_buffer()
                    if self.reporter.may_send():
                        self.ensure_registered()  # again after an upgrade or rename
                    self.drain()
                    # After delivering: the answer's nextReportIn may have changed the interval.
                    next_sample = now + self.interval
                    next_heartbeat = time.monotonic() + self.config.heartbeat_interval
                else:
                    if len(self.buffer) and self.reporter.may_send():
                        self.drain()
                    if now >= next_heartbeat:
                        self.heartbeat()
                        next_heartbeat = now + self.config.heartbeat_interval
                if now >= next_settings:
                    self.refresh_settings()
                    next_settings = now + SETTINGS_EVERY
                wake = min(next_sample, next_heartbeat, next_settings)
                if len(self.buffer):
                    wake = min(wake, max(self.reporter.not_before, time.monotonic() + 0.05))
                self.stop_event.wait(max(0.0, wake - time.monotonic()))
        except Stopping:
            pass
        self.state.save()
        self.buffer.close()
        if self.buffer.memory:
            log.warning("samples held in memory are lost: the buffer file cannot be written "
                        "count=%s error=%s", len(self.buffer.memory), self.buffer.trouble)
        log.info("agent stopped")
        return 0


SETTINGS_EVERY = 3600


# ===== Windows service ==========================================================================
# With pywin32 installed, `agent.py --install-service` registers the agent as the Windows service
# "mpanel-agent" (auto start; install.ps1 adds restart-on-failure with sc.exe). pywin32's
# pythonservice.exe imports this file and runs AgentService; without pywin32 install.ps1 uses a
# scheduled task as SYSTEM instead (docs/install.md says why).

SERVICE_NAME = "mpanel-agent"


def _load_pywin32():
    try:
        import servicemanager
        import win32service
        import win32serviceutil
    except ImportError:
        return None
    return servicemanager, win32service, win32serviceutil


def make_service_class(modules):
    """The service class over pywin32's ServiceFramework (a function, so the class can be built
    wherever pywin32 imports — and only there)."""
    servicemanager, win32service, win32serviceutil = modules

    class AgentService(win32serviceutil.ServiceFramework):
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = "mPanel monitoring agent"
        _svc_description_ = "Pushes this server's metrics to the mPanel control panel."

        def __init__(self, args):
            win32serviceutil.ServiceFramework.__init__(self, args)
            self.agent = None

        def SvcStop(self):
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
            if self.agent is not None:
                self.agent.stop_event.set()  # run_forever returns within a second or two

        def SvcDoRun(self):
            config = load_config(None)  # %ProgramData%\mpanel-agent\config.json
            setup_logging(config)
            problems = config.problems()
            if problems:
                servicemanager.LogErrorMsg("mpanel-agent: " + "; ".join(problems))
                return
            self.agent = Agent(config)
            servicemanager.LogInfoMsg(f"mpanel-agent {__version__} started")
            self.agent.run_forever()

    return AgentService


if WINDOWS and _load_pywin32():
    AgentService = make_service_class(_load_pywin32())


def manage_service(action):
    """--install-service / --remove-service (Windows, pywin32)."""
    modules = _load_pywin32()
    if not WINDOWS or modules is None:
        print("error: the Windows service needs Windows and pywin32", file=sys.stderr)
        return 2
    _, win32service, win32serviceutil = modules
    if action == "install":
        # "<folder>\\agent.AgentService", with the path: pythonservice.exe puts the folder on
        # sys.path, imports this file and finds the module-level class built above (a bare
        # "agent.AgentService", which `python -m agent` would give, is not on its path).
        cls = globals()["AgentService"]
        class_string = os.path.splitext(os.path.abspath(__file__))[0] + ".AgentService"
        win32serviceutil.InstallService(
            class_string, SERVICE_NAME, cls._svc_display_name_,
            startType=win32service.SERVICE_AUTO_START, description=cls._svc_description_)
        print(f"service {SERVICE_NAME} installed (starts at boot)")
    else:
        win32serviceutil.RemoveService(SERVICE_NAME)
        print(f"service {SERVICE_NAME} removed")
    return 0


# ===== Command line =============================================================================

def build_parser():
    parser = argparse.ArgumentParser(description="mPanel agent: push this server's metrics.")
    parser.add_argument("--config", help=f"config.json (default {default_config_path()})")
    parser.add_argument("--url", help="panel URL, e.g. https://panel.example.com")
    parser.add_argument("--api-key", help="the server's API key (prefer config.json: "
                                          "command lines are visible to other users)")
    parser.add_argument("--state-dir", help="folder for the state file and the buffer")
    parser.add_argument("--interval", type=int, help="seconds between reports")
    parser.add_argument("--log-level", help="debug, info, warning, error")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="collect, deliver, exit (for cron)")
    mode.add_argument("--print", action="store_true", help="print one payload, send nothing")
    mode.add_argument("--check", action="store_true", help="check config and key, then exit")
    mode.add_argument("--version", action="store_true", help="print the version")
    if WINDOWS and _load_pywin32():  # install.ps1 looks for these in --help
        mode.add_argument("--install-service", action="store_true",
                          help="register the Windows service mpanel-agent (auto start)")
        mode.add_argument("--remove-service", action="store_true",
                          help="remove the Windows service")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.version:
        print(f"mpanel-agent {__version__}")
        return 0
    if getattr(args, "install_service", False) or getattr(args, "remove_service", False):
        return manage_service("install" if args.install_service else "remove")
    flags = {"url": args.url, "api_key": args.api_key, "state_dir": args.state_dir,
             "report_interval": args.interval, "log_level": args.log_level}
    try:
        config = load_config(args.config, flags=flags)
    except (OSError, ValueError, TypeError) as err:
        print(f"error: cannot read the configuration: {err}", file=sys.stderr)
        return 2
    setup_logging(config)

    if args.print:
        context = CollectorContext(StateFile(config.state_dir).data.get("collectors"),
                                   config.services)
        metrics, unavailable = run_collectors(expand_collectors(config.enabled_collectors),
                                              context)
        sample = {"timestamp": utc_now_iso(), "metrics": metrics}
        if unavailable:
            sample["unavailable"] = unavailable
        print(json.dumps(sample, indent=2))
        return 0

    problems = config.problems()
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2

    if args.check:
        reporter = Reporter(config)
        reporter.use_key(effective_api_key(config, StateFile(config.state_dir).data))
        outcome = reporter.request("GET", "/api/agent/config")
        if outcome.ok:
            print(f"ok: {config.url} accepted the key; reportInterval="
                  f"{outcome.data.get('reportInterval')}")
            return 0
        reason = "API key rejected" if outcome.status == 401 else \
            (outcome.error or f"HTTP {outcome.status}")
        print(f"error: {config.url}: {reason}", file=sys.stderr)
        return 1

    try:
        agent = Agent(config)
    except sqlite3.Error as err:
        print(f"error: cannot open the buffer in {config.state_dir}: {err}", file=sys.stderr)
        return 2
    if args.once:
        return agent.once()

    def stop(signum, frame):
        log.info("signal received signal=%s", signum)
        agent.stop_event.set()
        if agent.in_network:
            raise Stopping()  # cut the request short: the sample stays buffered

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return agent.run_forever()


if __name__ == "__main__":
    sys.exit(main())
