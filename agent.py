#!/usr/bin/env python3
"""mPanel agent: collects this server's metrics and pushes them to an mPanel panel.

One file; needs Python 3.8+, psutil and urllib3. It only makes outbound HTTPS requests
(`Authorization: Bearer <key>`), so it works behind NAT and opens no port. A sample the panel
does not take at once goes to a local SQLite buffer and is removed only once the panel has
stored it, so an outage, a restart or `kill -9` during one loses nothing; the buffer is replayed
oldest first, in batches.

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
               "allowInsecureHttp": false, "autoUpdate": false,
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

Self-upgrade (agent.autoUpdate, off unless install.sh --auto-update or a person sets it): the
panel may offer a new agent.py in its answers ({version, sha256, path}); the agent fetches it from
the panel it reports to, checks size and SHA-256, runs it with --version and --check, keeps it in
<stateDir>/upgrade/ beside the previous one and restarts into it. The installed agent.py stays as
it was and starts every run: it runs the upgraded copy, and while that has not reported once it
watches it and puts the previous file back when it exits or stays silent (see "Self-upgrade").
Nothing else the panel sends is ever run.
"""
import argparse
import collections
import dataclasses
import datetime
import email.utils
import functools
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
import py_compile
import random
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import weakref

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
    auto_update: bool = False  # run the agent.py a panel's rollout offers (Self-upgrade)
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
    "auto_update": ("agent", "autoUpdate"),
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
    "upgrade": dict, "failedUpgrades": list,
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
            # json.dumps, not json.dump: dump() encodes in pure Python, chunk by chunk (1.2 ms
            # of the agent's CPU a minute for a state of 130 processes' times; dumps: 0.1).
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(self.data, separators=(",", ":")))
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
        # Services this server has answered for: one of them gone is "down", not "absent".
        self.seen = set(saved.get("seen") or ())
        self.held = {}  # service name -> what its collector keeps between samples
        # What collectors share within one run_collectors() call (see process_table); None
        # between calls, so a collector called by itself reads afresh.
        self.cycle = None

    def to_json(self):
        return {"cpu": self.cpu.previous, "rates": self.rates.to_json(),
                "processes": self.process_times.to_json(), "seen": sorted(self.seen)}


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
    filesystems are left out, and bind mounts of a file system already listed; a mount we may
    not stat (permissions, a dead NFS server) is skipped rather than failing the collector.
    "io" has no rates on the first sample.
    """
    mounts, listed = [], set()
    for part in psutil.disk_partitions(all=False):
        if part.fstype in PSEUDO_FILESYSTEMS or "cdrom" in part.opts:
            continue
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        # A bind mount shows the same file system again (same device, same figures): it is
        # listed once, at the first place it is mounted.
        same = (part.device, usage.total, usage.used, usage.free)
        if same in listed:
            continue
        listed.add(same)
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
    "errorsOutPerSec", "dropsInPerSec", "dropsOutPerSec"}]}; loopback left out, and
    interfaces that have not carried a packet since boot (ifb0, dummy0, tunl0: devices a
    kernel module made, which say nothing and cost bytes on the wire every minute).
    """
    interfaces = []
    now = since_boot()
    for name, counters in psutil.net_io_counters(pernic=True).items():
        if name == "lo" or name.lower().startswith("loopback"):
            continue
        if not (counters.packets_sent or counters.packets_recv):
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
# What psutil reads of every process where there is no /proc (Windows, macOS, BSD).
PROCESS_ATTRS = ["pid", "name", "status", "cpu_times", "memory_info", "create_time"]
# /proc/<pid>/stat after the name's closing parenthesis (proc(5)), 0-based: state, flags,
# utime and stime (clock ticks), starttime (clock ticks after boot), rss (pages).
STAT_STATE, STAT_FLAGS, STAT_UTIME, STAT_STIME, STAT_STARTTIME, STAT_RSS = 0, 6, 11, 12, 19, 21
PF_KTHREAD = 0x00200000  # include/linux/sched.h: a kernel thread, which has no command line
# The kernel keeps a process's name cut at TASK_COMM_LEN - 1 characters.
COMM_LENGTH = 15
# What is read of a command line to complete a cut name: its first argument is all it needs.
CMDLINE_READ = 16384


def full_name(name, cmdline):
    """A name the kernel cut at 15 characters, completed from the raw /proc/<pid>/cmdline as
    psutil.Process.name() does: the first argument's base name when it starts with the cut
    name (arguments are NUL-separated; a process that rewrote its title may use spaces)."""
    text = os.fsdecode(cmdline)
    if not text:
        return name
    sep = "\0" if text.endswith("\0") else " "
    args = text[:-1].split(sep) if text.endswith(sep) else text.split(sep)
    if sep == "\0" and len(args) == 1 and " " in text:
        args = text.split(" ")
    extended = os.path.basename(args[0])
    return extended if extended.startswith(name) else name


def _read_small(path, size=4096):
    """The first `size` bytes of a file, by os.open and os.read: a Python file object costs
    twice the system calls' time for a /proc file read once (0.85 against 1.47 ms for 88
    processes' stat here). -> b"" when it cannot be read (a process that ended meanwhile, or
    not ours to read)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        return os.read(fd, size)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _proc_stat_table():
    """Linux: every process from one read of /proc/<pid>/stat, where psutil reads stat twice
    and statm once for the same figures, and the command line of every name 15 characters
    long, kernel threads' too (7.6 -> 3.6 ms of CPU for 129 processes here, 42 of them). The
    figures are psutil's: rss is statm's resident pages, which stat repeats; a name cut at 15
    characters is completed as psutil.Process.name() does it, from the command line (read
    only for those, and never for a kernel thread, which has none)."""
    clock, page, boot = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE"), psutil.boot_time()
    rows = []
    with os.scandir("/proc") as listing:
        pids = [int(entry.name) for entry in listing if entry.name.isdigit()]
    for pid in pids:
        data = _read_small(f"/proc/{pid}/stat")
        if not data:  # it ended meanwhile
            continue
        close = data.rfind(b")")
        fields = data[close + 2:].split()
        name = os.fsdecode(data[data.find(b"(") + 1:close])
        if len(name) >= COMM_LENGTH and not int(fields[STAT_FLAGS]) & PF_KTHREAD:
            cmdline = _read_small(f"/proc/{pid}/cmdline", CMDLINE_READ)
            if len(cmdline) == CMDLINE_READ:  # cut: keep whole arguments, as full_name splits
                cmdline = cmdline[:cmdline.rfind(b"\0") + 1] or cmdline
            if cmdline:  # else ended meanwhile, or not ours to read
                name = full_name(name, cmdline)
        rows.append({"pid": pid, "name": name, "running": fields[STAT_STATE] == b"R",
                     "cpu": int(fields[STAT_UTIME]) / clock + int(fields[STAT_STIME]) / clock,
                     "rss": int(fields[STAT_RSS]) * page,
                     "started": int(fields[STAT_STARTTIME]) / clock + boot})
    return rows


def _psutil_table():
    rows = []
    for proc in psutil.process_iter(PROCESS_ATTRS, ad_value=None):
        info = proc.info
        rows.append({"pid": info["pid"], "name": info["name"],
                     "running": info["status"] == psutil.STATUS_RUNNING,
                     "cpu": sum(info["cpu_times"][:2]) if info["cpu_times"] else None,
                     "rss": info["memory_info"].rss if info["memory_info"] else None,
                     "started": info["create_time"]})
    return rows


def process_table(ctx):
    """Every process as {"pid", "name", "running" (bool), "cpu" (user + system seconds),
    "rss" (bytes), "started" (create time, epoch seconds)}; None where access is denied.

    Walked once per collection: the processes and watched collectors both need every process,
    and the second walk cost a third of the first (130 processes here). Kept in ctx.cycle for
    the rest of run_collectors(); walked afresh on each call outside it.
    """
    if ctx.cycle is not None and "processes" in ctx.cycle:
        return ctx.cycle["processes"]
    table = _proc_stat_table() if LINUX and os.path.isdir("/proc/self") else _psutil_table()
    if ctx.cycle is not None:
        ctx.cycle["processes"] = table
    return table


@collector("processes")
def collect_processes(ctx):
    """Every process, from the collection's one walk (process_table: /proc/<pid>/stat on
    Linux, psutil.process_iter() elsewhere): one cheap pass reading only pid, name, status, CPU
    times, memory and start time; the user is looked up for the few processes that make the
    top lists.

    -> {"total", "running": counts, "topCpu", "topMemory": up to 5 each of {"pid", "name",
    "user", "cpuPercent" (share of one core since the previous sample, as top shows it),
    "rss" (bytes)}}. Names only: command lines and environments carry passwords, so they are
    never read. topCpu is empty on the very first sample (no previous times to compare).
    """
    now = since_boot()
    elapsed = now - ctx.process_times.taken_at if ctx.process_times.taken_at else None
    previous = ctx.process_times.previous
    times, rows, running, total = {}, [], 0, 0
    for info in process_table(ctx):
        total += 1
        if info["running"]:
            running += 1
        if not info["pid"]:  # Windows' "System Idle Process" is idle time, not a process
            continue
        cpu_seconds = info["cpu"]
        key = f"{info['pid']}:{int(info['started'] or 0)}"
        cpu_percent = None
        if cpu_seconds is not None:
            times[key] = round(cpu_seconds, 2)
            before = previous.get(key)
            if before is not None and elapsed and elapsed > 0 and cpu_seconds >= before:
                cpu_percent = round(100.0 * (cpu_seconds - before) / elapsed, 1)
        rows.append((info["pid"], info["name"] or "?", cpu_percent, info["rss"]))
    ctx.process_times.previous, ctx.process_times.taken_at = times, now

    users = {}

    def entry(row):
        pid, name, cpu_percent, rss = row
        item = {"pid": pid, "name": name[:256]}
        user = process_user(pid, users)
        if user is not None:
            item["user"] = user[:256]
        if cpu_percent is not None:
            item["cpuPercent"] = cpu_percent
        if rss is not None:
            item["rss"] = rss
        return item

    busy = sorted((r for r in rows if r[2]), key=lambda r: r[2], reverse=True)[:TOP_N]
    heavy = sorted((r for r in rows if r[3] is not None), key=lambda r: r[3], reverse=True)[:TOP_N]
    return {"total": total, "running": running,
            "topCpu": [entry(r) for r in busy], "topMemory": [entry(r) for r in heavy]}


def process_user(pid, names):
    """The user name of a process's real uid, as psutil.Process.username() gives it (the uid
    as text when no passwd entry has it), or None when it cannot be read. `names` caches uid ->
    name across calls. Linux reads the Uid line of /proc/<pid>/status: psutil reads stat as
    well to make the Process, and asks the passwd database again for every process (1.0 ->
    0.3 ms for the ten processes of the top lists here)."""
    if not LINUX:
        try:
            return psutil.Process(pid).username()
        except (psutil.Error, KeyError):
            return None
    status = _read_small(f"/proc/{pid}/status")
    at = status.find(b"\nUid:")
    if at < 0:  # ended meanwhile
        return None
    uid = int(status[at + 5:].split(None, 1)[0])
    if uid not in names:
        import pwd

        try:
            names[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            names[uid] = str(uid)
    return names[uid]


# Chips whose readings are the CPU's, by the name psutil gives them (the hwmon driver's): Intel's
# coretemp (package and cores), AMD's k10temp and zenpower (Tctl, Tdie, Tccd), the thermal
# zone x86_pkg_temp, and ARM boards' cpu_thermal / soc_thermal zones.
CPU_SENSORS = ("coretemp", "k10temp", "zenpower", "x86_pkg_temp", "cpu_thermal", "cpu-thermal",
               "soc_thermal", "cpu")
SENSORS_MAX = 50  # readings sent, hottest first; the rest are counted in `omitted`
# Readings outside this are a sensor with nothing connected (-128, -273) or a misread
# register (65261.8 °C), not a temperature.
SENSOR_RANGE = (-50.0, 200.0)


def fetch_sensors():
    """psutil.sensors_temperatures() (Linux: /sys/class/hwmon/*/temp*_input) -> {chip:
    [[label, current, high, critical]]} (°C; high and critical may be None). ServiceAbsent where
    there is none: other systems, and virtual machines, whose hypervisor shows no sensor."""
    read = getattr(psutil, "sensors_temperatures", None)
    raw = read() if read is not None else {}
    if not raw:
        raise ServiceAbsent("no temperature sensors here")
    return {chip: [list(reading) for reading in readings] for chip, readings in raw.items()}


def parse_sensors(raw):
    """fetch_sensors()' readings -> {"cpuMax": the hottest CPU reading (package or core), °C,
    absent when no chip is a CPU's (CPU_SENSORS), "readings": [{"name": chip, "label",
    "current", "high", "critical" (°C, one decimal; high and critical when the chip says)}],
    hottest first, at most SENSORS_MAX, "omitted": readings left out}."""
    low, high_most = SENSOR_RANGE
    readings, cpu = [], []
    for chip, entries in raw.items():
        for label, current, high, critical in entries:
            if not isinstance(current, NUMBER) or not low <= current <= high_most:
                continue
            reading = {"name": _wire_text(str(chip)), "label": _wire_text(str(label or "")),
                       "current": round(float(current), 1)}
            for key, value in (("high", high), ("critical", critical)):
                if isinstance(value, NUMBER) and low < value <= high_most:
                    reading[key] = round(float(value), 1)
            readings.append(reading)
            if str(chip).lower() in CPU_SENSORS:
                cpu.append(reading["current"])
    if not readings:
        raise ServiceAbsent("no temperature sensor gives a reading")
    readings.sort(key=lambda r: r["current"], reverse=True)
    section = {"cpuMax": max(cpu)} if cpu else {}
    section.update(readings=readings[:SENSORS_MAX], omitted=max(0, len(readings) - SENSORS_MAX))
    return section


@collector("sensors")
def collect_sensors(ctx):
    """Temperatures, where the machine has sensors (psutil.sensors_temperatures(): Linux's
    hwmon; raw input such as {"coretemp": [["Package id 0", 52.0, 100.0, 100.0], ["Core 0",
    45.0, 100.0, 100.0]]}). Absent, and looked for again every ABSENT_RECHECK, where there is
    none: on other systems, and in virtual machines such as the one this project is tested in.

    -> {"cpuMax": °C, "readings": [{"name", "label", "current", "high", "critical"}],
    "omitted"} (see parse_sensors)
    """
    return parse_sensors(fetch_sensors())


# ===== Service collectors =======================================================================
# Each service is split into fetch_<svc>(settings) -- I/O with a short timeout, raising
# ServiceAbsent when the service is not there -- and a pure parse_<svc>(raw) tested on captured
# output. A service that is absent is looked for again only every ABSENT_RECHECK seconds.

SERVICE_TIMEOUT = 2.0
ABSENT_RECHECK = 600


STATUS_PAGE_MAX = 1_000_000  # bytes read of a status page


def _http_get(url, timeout=SERVICE_TIMEOUT):
    """GET a local status page -> text. Refused connection or 404 means "not here".

    HTTP/1.0 over a socket of its own, read to the close (an HTTP/1.0 answer is never
    chunked): urllib3's pool, and http.client's header parsing beneath it, cost three times
    the CPU for one small page a minute (nginx's collector here: 1.25 -> 0.4 ms). https is
    verified against the system's CAs, as urllib3 did."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RuntimeError(f"not an http(s) URL: {url}"[:200])
    https = parts.scheme == "https"
    try:
        sock = socket.create_connection((parts.hostname, parts.port or (443 if https else 80)),
                                        timeout=timeout)
    except ConnectionRefusedError as err:
        raise ServiceAbsent(f"nothing listens at {url}") from err
    try:
        if https:
            sock = _verified_context().wrap_socket(sock, server_hostname=parts.hostname)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]
        sock.sendall(f"GET {target} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: mpanel-agent/"
                     f"{__version__}\r\nConnection: close\r\n\r\n".encode("ascii", "replace"))
        chunks, size = [], 0
        while size <= STATUS_PAGE_MAX:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        sock.close()
    head, sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if not sep or len(status_line) < 2 or not status_line[0].startswith(b"HTTP/") or \
            not status_line[1].isdigit():
        raise RuntimeError(f"{url} did not answer HTTP"[:200])
    status = int(status_line[1])
    if status == 404:
        raise ServiceAbsent(f"{url} not found")
    if status != 200:
        raise RuntimeError(f"{url} answered HTTP {status}")
    return body[:STATUS_PAGE_MAX].decode("utf-8", "replace")


_VERIFIED_CONTEXT = []


def _verified_context():
    """One SSL context for https status pages: loading the system's CAs takes milliseconds."""
    if not _VERIFIED_CONTEXT:
        _VERIFIED_CONTEXT.append(ssl.create_default_context())
    return _VERIFIED_CONTEXT[0]


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
    from its -p prefix, which the process title does not show).

    Read again only when a file read or a folder an include globs in has changed (mtime,
    size): reading and parsing them every sample was a third of the collector's CPU."""
    kept = _PHPFPM_CONFIGS.get(config_path)
    if kept is not None and all(_stamp(path) == stamp for path, stamp in kept[0]):
        return [dict(pool) for pool in kept[1]]
    pools, seen, queue, stamps = {}, set(), [config_path], []
    while queue and len(seen) < PHPFPM_MAX_CONFIG_FILES:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        stamps.append((path, _stamp(path)))
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
            stamps.append((os.path.dirname(pattern), _stamp(os.path.dirname(pattern))))
            queue.extend(sorted(glob.glob(pattern)))
    _PHPFPM_CONFIGS[config_path] = (stamps, [dict(pool) for pool in pools.values()])
    return list(pools.values())


_PHPFPM_CONFIGS = {}  # config path -> ([(path, stamp)] of what was read, pools)


def _stamp_of(stat):
    """What tells a file or folder changed: (mtime_ns, size, inode) of its os.stat."""
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def _stamp(path):
    """_stamp_of the file at `path`, None when it is gone (or cannot be looked at)."""
    try:
        return _stamp_of(os.stat(path))
    except OSError:
        return None


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
    processes here), so the masters found are kept in ctx.held and the scan is repeated only
    when one of them is gone (a restart gives a new pid), when none was found, or every
    PHPFPM_RESCAN seconds (a master started beside them). Worker counts come with a scan; without one, ask
    _phpfpm_workers, which looks at the masters' children only.
    """
    now, found = time.monotonic(), ctx.held.get("phpfpm")
    # None found is not kept: a service seen before is looked for at every sample while gone.
    if found and found["masters"] and found["until"] > now and all(
            _started(pid) == started for pid, (started, _) in found["masters"].items()):
        return {pid: config for pid, (_, config) in found["masters"].items()}, None
    masters, workers = parse_phpfpm_titles(_phpfpm_processes())
    ctx.held["phpfpm"] = {"until": now + PHPFPM_RESCAN, "masters": {
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
    if LINUX and any(p.get("listen", "").startswith("/") for p in pools[:WATCHED_LIMIT]):
        try:
            queues = parse_unix_diag(fetch_unix_diag())
        except OSError as err:
            log.debug("unix socket queues unreadable error=%s", err)
    entries, reachable = [], 0
    for pool in pools[:WATCHED_LIMIT]:
        listen = pool.get("listen", "")
        entry = {"name": pool["name"][:NAME_LENGTH], "listen": listen[:NAME_LENGTH],
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
                entry["statusError"] = why[:NAME_LENGTH]
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
    if len(pools) > WATCHED_LIMIT:
        result["omitted"] = len(pools) - WATCHED_LIMIT
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


# ----- TLS certificates of the hosted sites -----------------------------------------------------
# Found from the web servers' own configs (the certificate files they serve) and from endpoints
# listed in config (the local handshake). Certificates change rarely: a file is read again only
# when its mtime changes, an endpoint's handshake is redone every CERTIFICATE_HANDSHAKE_EVERY.

CERTIFICATES_MAX = 50  # entries sent; the rest are counted in `omitted`
CERTIFICATE_NAMES_MAX = 20  # names per entry (matching uses them all)
CERTIFICATE_TEXT_MAX = 200
CERTIFICATE_HANDSHAKE_EVERY = 300
CONFIG_FILES_MAX = 300  # config files followed through includes, so a loop cannot run away
CONFIG_INCLUDE_DEPTH = 10
NGINX_CONFIG = "/etc/nginx/nginx.conf"
APACHE_CONFIG = ("/etc/apache2/sites-enabled/*", "/etc/httpd/conf.d/*.conf")
UNREADABLE_HINT = ("permission denied: the agent's user needs read access to this file (never "
                   "the key) and search access to its folders, or list the site in endpoints")
# DER object identifiers, as their encoded bytes.
_OID_COMMON_NAME, _OID_ORGANIZATION = b"\x55\x04\x03", b"\x55\x04\x0a"
_OID_SUBJECT_ALT_NAME = b"\x55\x1d\x11"


def _wire_text(text, most=CERTIFICATE_TEXT_MAX):
    """Text the panel stores as is: UTF-8 (a path's undecodable bytes become U+FFFD), no NUL
    (a certificate may carry one: the null-prefix attack), at most `most` characters."""
    text = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    return text[:most]


def _der(data, offset):
    """The DER item at `offset` -> (tag, start of its content, end)."""
    if offset + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length, offset = data[offset], data[offset + 1], offset + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or offset + count > len(data):
            raise ValueError("bad DER length")
        length, offset = int.from_bytes(data[offset:offset + count], "big"), offset + count
    if offset + length > len(data):
        raise ValueError("truncated DER")
    return tag, offset, offset + length


def _der_children(data, start, end):
    while start < end:
        tag, inner, start = _der(data, start)
        yield tag, data[inner:start]


def _der_string(tag, value):
    if tag == 0x1E:  # BMPString
        return value.decode("utf-16-be", "replace")
    if tag == 0x1C:  # UniversalString
        return value.decode("utf-32-be", "replace")
    if tag == 0x14:  # TeletexString: latin-1 in practice
        return value.decode("latin-1")
    return value.decode("utf-8", "replace")  # UTF8String, PrintableString, IA5String


def _der_name(value):
    """An X.501 Name (SEQUENCE OF SET OF {type, value}) -> {type OID bytes: first value}."""
    found = {}
    for _, rdn in _der_children(value, 0, len(value)):
        for _, pair in _der_children(rdn, 0, len(rdn)):
            (_, oid), (tag, text) = list(_der_children(pair, 0, len(pair)))[:2]
            found.setdefault(oid, _der_string(tag, text))
    return found


def _der_time(tag, value):
    """UTCTime (YYMMDDHHMMSSZ; 50-99 are 19xx, RFC 5280 4.1.2.5) or GeneralizedTime -> epoch."""
    text = value.decode("ascii")
    if tag == 0x17:
        text = ("19" if int(text[:2]) >= 50 else "20") + text
    moment = datetime.datetime.strptime(text[:14], "%Y%m%d%H%M%S")
    return int(moment.replace(tzinfo=datetime.timezone.utc).timestamp())


# Memoized on the DER bytes: the same certificates come every sample, and parsing them was
# most of the collector's CPU. Callers only read what it returns.
@functools.lru_cache(maxsize=CERTIFICATES_MAX * 2)
def parse_certificate(der):
    """An X.509 certificate (DER, RFC 5280) -> {"subject": subject CN, "issuer": issuer CN
    (else O), "dnsNames", "ipAddresses": its subjectAltName entries, "notBefore", "notAfter":
    epoch seconds}. Only the few fields read here are decoded; ValueError if it is not one."""
    try:
        _, start, end = _der(der, 0)
        _, tbs = next(_der_children(der, start, end))
        fields = list(_der_children(tbs, 0, len(tbs)))
        if fields and fields[0][0] == 0xA0:  # [0] version; v1 certificates have none
            fields = fields[1:]
        # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, [1] [2] [3]
        issuer, (_, validity), subject = _der_name(fields[2][1]), fields[3], _der_name(fields[4][1])
        (before_tag, before), (after_tag, after) = list(_der_children(validity, 0,
                                                                      len(validity)))[:2]
        dns, ips = [], []
        for tag, extensions in fields[6:]:
            if tag != 0xA3:  # [3] extensions
                continue
            _, sequence = next(_der_children(extensions, 0, len(extensions)))
            for _, extension in _der_children(sequence, 0, len(sequence)):
                parts = list(_der_children(extension, 0, len(extension)))
                if parts[0][1] != _OID_SUBJECT_ALT_NAME:
                    continue
                _, names = next(_der_children(parts[-1][1], 0, len(parts[-1][1])))
                for name_tag, name in _der_children(names, 0, len(names)):
                    if name_tag == 0x82:  # dNSName
                        dns.append(name.decode("ascii", "replace"))
                    elif name_tag == 0x87 and len(name) in (4, 16):  # iPAddress
                        ips.append(str(ipaddress.ip_address(name)))
        return {"subject": subject.get(_OID_COMMON_NAME, ""),
                "issuer": issuer.get(_OID_COMMON_NAME) or issuer.get(_OID_ORGANIZATION, ""),
                "dnsNames": dns, "ipAddresses": ips,
                "notBefore": _der_time(before_tag, before), "notAfter": _der_time(after_tag, after)}
    except (IndexError, StopIteration, UnicodeDecodeError, ValueError, OverflowError) as err:
        raise ValueError(f"not an X.509 certificate ({err})") from None


def pem_certificate(text):
    """The first certificate of a PEM file (the site's own in a full chain) -> DER bytes."""
    import base64
    import binascii

    match = re.search(r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----",
                      text)
    if not match:
        raise ValueError("no PEM certificate in the file")
    try:
        return base64.b64decode("".join(match.group(1).split()), validate=True)
    except binascii.Error:
        raise ValueError("a PEM certificate that is not base64") from None


def certificate_covers(certificate, name):
    """Whether `certificate` (parse_certificate's) is valid for the host `name`, as RFC 6125
    section 6 says a client checks: an IP address against iPAddress names only; a DNS name
    against dNSName entries, the subject CN only when there is none (6.4.4); a wildcard only as
    the whole left-most label, standing for exactly one label (6.4.3), never for a public
    suffix's first level (`*.com`). A served wildcard (nginx `*.example.com`) is covered by the
    same wildcard only."""
    name = name.rstrip(".").lower()
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        address = None
    if address is not None:
        return any(ipaddress.ip_address(ip) == address for ip in certificate["ipAddresses"])
    patterns = certificate["dnsNames"] or ([certificate["subject"]] if certificate["subject"]
                                           else [])
    for pattern in patterns:
        pattern = pattern.rstrip(".").lower()
        if pattern == name:
            return True
        if pattern.startswith("*.") and "*" not in pattern[2:] and "." in pattern[2:]:
            label, dot, rest = name.partition(".")
            if dot and label and label != "*" and rest == pattern[2:]:
                return True
    return False


def checkable_names(server_names):
    """The names a site serves that a certificate can be checked against: nginx's catch-all
    `_`, regexes (~...), variables and `www.example.*` forms are not host names; nginx's
    `.example.com` stands for example.com and *.example.com."""
    names = []
    for name in server_names:
        name = name.strip().lower()
        if name.startswith("."):
            candidates = [name[1:], "*" + name]
        else:
            candidates = [name]
        for candidate in candidates:
            if candidate and candidate != "_" and not candidate.startswith("~") and \
                    "$" not in candidate and "*" not in candidate[1:] and \
                    candidate not in names:
                names.append(candidate)
    return names


_NGINX_TOKEN = re.compile(r"""#[^\n]*|"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([{};])|([^\s{};]+)""")


def nginx_tokens(text):
    """nginx config text -> [(word, is punctuation)]: comments dropped, quotes taken off."""
    tokens = []
    for match in _NGINX_TOKEN.finditer(text):
        quoted, single, punctuation, word = match.groups()
        if punctuation:
            tokens.append((punctuation, True))
        elif quoted is not None or single is not None or word is not None:
            tokens.append((next(v for v in (quoted, single, word) if v is not None), False))
    return tokens


def nginx_statements(tokens, include=None):
    """nginx_tokens() -> [(directive, [args], [inner statements] or None)]. `include`
    (pattern -> statements) stands in for each `include` directive, where nginx reads the
    included files in its place."""
    def block(position):
        statements, words = [], []
        while position < len(tokens):
            value, mark = tokens[position]
            position += 1
            if not mark:
                words.append(value)
            elif value == ";":
                if words:
                    if words[0] == "include" and include is not None and len(words) > 1:
                        statements.extend(include(words[1]))
                    else:
                        statements.append((words[0], words[1:], None))
                words = []
            elif value == "{":
                inner, position = block(position)
                if words:
                    statements.append((words[0], words[1:], inner))
                words = []
            else:  # "}"
                return statements, position
        return statements, position

    return block(0)[0]


def nginx_sites(statements, inherited=()):
    """TLS sites of nginx statements -> [{"serverNames", "certificate"}]: one per certificate
    (RSA and ECDSA ones are both served) of each `server` that listens with `ssl` (or `quic`,
    or the old `ssl on`); ssl_certificate is inherited from the http block."""
    sites = []
    certificates = [args[0] for name, args, inner in statements
                    if name == "ssl_certificate" and args and inner is None] or list(inherited)
    for name, args, inner in statements:
        if inner is None:
            continue
        if name != "server":
            sites.extend(nginx_sites(inner, certificates))
            continue
        own = [a[0] for n, a, i in inner if n == "ssl_certificate" and a and i is None]
        tls = any(n == "listen" and ("ssl" in a[1:] or "quic" in a[1:]) for n, a, i in inner) \
            or any(n == "ssl" and a[:1] == ["on"] for n, a, i in inner)
        names = [word for n, a, i in inner if n == "server_name" for word in a]
        if tls:
            sites.extend({"serverNames": names, "certificate": path}
                         for path in own or certificates)
    return sites


_APACHE_WORD = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')


def apache_lines(text):
    """Apache config text -> [[directive, args...]]: comments dropped, `\\` continuations
    joined, quotes taken off; a section opens as ["<VirtualHost", ...] and closes as
    ["</VirtualHost"]."""
    lines = []
    for line in re.sub(r"\\\r?\n", " ", text).splitlines():
        line = line.strip()
        if line.startswith("<") and line.endswith(">"):
            line = line[:-1]
        if line and not line.startswith("#"):
            lines.append([m.group(1) if m.group(1) is not None else m.group(2)
                          for m in _APACHE_WORD.finditer(line)])
    return lines


def apache_sites(lines):
    """TLS sites of Apache directive lines -> [{"serverNames", "certificate"}]: each
    <VirtualHost> with an SSLCertificateFile and no `SSLEngine off` (certbot's vhosts say `on`
    in an included options file); names are ServerName, then every ServerAlias."""
    sites, host = [], None
    for words in lines:
        directive = words[0].lower()
        if directive == "<virtualhost":
            host = {"names": [], "aliases": [], "certificate": None, "tls": True}
        elif directive == "</virtualhost":
            if host and host["tls"] and host["certificate"]:
                sites.append({"serverNames": host["names"] + host["aliases"],
                              "certificate": host["certificate"]})
            host = None
        elif host is not None and len(words) > 1:
            if directive == "servername":  # [scheme://]host[:port]
                host["names"] = [re.sub(r":\d+$", "", words[1].split("://")[-1])]
            elif directive == "serveralias":
                host["aliases"].extend(words[1:])
            elif directive == "sslcertificatefile":
                host["certificate"] = words[1]
            elif directive == "sslengine":
                host["tls"] = words[1].lower() == "on"
    return sites


class _ConfigReader:
    """Reads config files through their includes, keeping what each file said until its mtime
    changes; bounded in depth and in files, so an include loop ends."""

    def __init__(self, cache):
        self.cache = cache  # path -> ((mtime_ns, size), parsed)
        self.files = 0

    def parsed(self, path, parse, depth):
        """parse(text of `path`), or None past the bounds or when it cannot be read."""
        if depth > CONFIG_INCLUDE_DEPTH or self.files >= CONFIG_FILES_MAX:
            return None
        self.files += 1
        try:
            stat = os.stat(path)
            stamp = (stat.st_mtime_ns, stat.st_size)
            kept = self.cache.get(path)
            if kept is None or kept[0] != stamp:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    kept = (stamp, parse(handle.read()))
                self.cache[path] = kept
        except OSError:
            return None
        return kept[1]

    def expand(self, pattern, base):
        import glob

        pattern = os.path.join(base, pattern)
        if os.path.isdir(pattern):  # Apache includes every file of a folder
            pattern = os.path.join(pattern, "*")
        paths = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        return [path for path in paths if os.path.isfile(path)]

    def nginx(self, path, base, depth=0):
        """nginx_statements() of `path`, its includes read in their place."""
        def include(pattern):
            return [statement for included in self.expand(pattern, base)
                    for statement in self.nginx(included, base, depth + 1)]

        return nginx_statements(self.parsed(path, nginx_tokens, depth) or [], include)

    def apache(self, path, base, depth=0):
        """apache_lines() of `path`, its Include and IncludeOptional lines read in their place."""
        expanded = []
        for words in self.parsed(path, apache_lines, depth) or []:
            if words[0].lower() in ("include", "includeoptional") and len(words) > 1:
                for included in self.expand(words[1], base):
                    expanded.extend(self.apache(included, base, depth + 1))
            else:
                expanded.append(words)
        return expanded


def _local_address(host, port):
    """The address to reach `host` at, if it is one of this machine's (loopback, or an
    interface's: psutil.net_if_addrs) -> str; else ValueError. A name is resolved by the system
    resolver (/etc/hosts first); the agent connects to no address that is not its own."""
    own = {ipaddress.ip_address(address.address.split("%")[0])
           for addresses in psutil.net_if_addrs().values() for address in addresses
           if address.family in (socket.AF_INET, socket.AF_INET6)}
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ValueError(f"cannot resolve {host}: {err.strerror}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if address.is_loopback or address in own:
            return str(address)
    raise ValueError(f"{host} is not an address of this server: the agent calls no outside "
                     "address")


def _endpoints(settings):
    """services.certificates.endpoints -> [(host, port, server name or "")]: each entry
    "host:port" or {"address": "host:port", "serverName": "..."}; a bad one raises ValueError.
    The server name (sent as SNI, and the name checked) is the host's, unless it is an address
    or serverName says otherwise."""
    found = []
    for entry in settings.get("endpoints") or []:
        if isinstance(entry, str):
            entry = {"address": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
            raise ValueError(f"certificates.endpoints: {entry!r} is not \"host:port\" or "
                             "{\"address\": ..., \"serverName\": ...}")
        parts = urllib.parse.urlsplit("//" + entry["address"])
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or not port:
            raise ValueError(f"certificates.endpoints: {entry['address']!r} is not host:port")
        try:
            ipaddress.ip_address(parts.hostname)
            named = ""
        except ValueError:
            named = parts.hostname
        found.append((parts.hostname, port, str(entry.get("serverName") or named)))
    return found


def served_certificate(host, port, server_name=""):
    """The certificate a local TLS server presents (DER): a handshake that checks nothing
    (CERT_NONE: an expired or mismatched certificate is what we came to see), SNI set to
    `server_name` so the server picks that site's."""
    address = _local_address(host, port)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((address, port), SERVICE_TIMEOUT) as sock:
        with context.wrap_socket(sock, server_hostname=server_name or None) as tls:
            return tls.getpeercert(binary_form=True)


def _certificate_file(path, cache):
    """DER of the certificate at `path` -> (der, None) or (None, why not); read again only when
    its mtime or size changed."""
    try:
        stamp = _stamp_of(os.stat(path))  # os.stat's own error says why it is unreadable
        kept = cache.get(path)
        if kept is None or kept[0] != stamp:
            with open(path, encoding="ascii", errors="replace") as handle:
                text = handle.read(1_000_000)
            try:
                kept = (stamp, (pem_certificate(text), None))
            except ValueError as err:
                kept = (stamp, (None, str(err)))
            cache[path] = kept
        return kept[1]
    except PermissionError:
        return None, UNREADABLE_HINT
    except FileNotFoundError:
        return None, "no such file"
    except OSError as err:
        return None, f"unreadable: {err.strerror or err}"


def fetch_certificates(settings, cache):
    """Every certificate to look at -> [{"source": "nginx"|"apache"|"endpoint", "file" or
    "endpoint", "serverNames", "der" or "error"}], the same file once however many sites serve
    it. `cache` (kept by the collector between samples) holds files read and handshakes done.
    ServiceAbsent when no config names a TLS site and no endpoint is listed."""
    reader = _ConfigReader(cache.setdefault("configs", {}))
    sites = []
    nginx = settings.get("nginxConfig", NGINX_CONFIG)
    if nginx and os.path.isfile(nginx):
        base = os.path.dirname(nginx)  # nginx's prefix: includes and paths are relative to it
        sites.extend(dict(site, source="nginx", base=base) for site in nginx_sites(
            reader.nginx(nginx, base)))
    apache = settings.get("apacheConfig", APACHE_CONFIG)
    for pattern in [apache] if isinstance(apache, str) else apache or ():
        # Relative includes are relative to ServerRoot: /etc/apache2, /etc/httpd.
        base = os.path.dirname(os.path.dirname(pattern))
        for path in reader.expand(pattern, base):
            sites.extend(dict(site, source="apache", base=base) for site in apache_sites(
                reader.apache(path, base)))
    endpoints = _endpoints(settings)
    if not sites and not endpoints:
        raise ServiceAbsent("no TLS site in the nginx or Apache configs and no endpoints")

    items, by_file = [], {}
    for site in sites:
        path = site["certificate"]
        if path in by_file:
            by_file[path]["serverNames"].extend(site["serverNames"])
            continue
        item = by_file[path] = {"source": site["source"], "file": path,
                                "serverNames": list(site["serverNames"])}
        if "$" in path or path.startswith("data:"):
            item["error"] = "the certificate is named by a variable the agent cannot resolve"
        else:
            item["der"], item["error"] = _certificate_file(os.path.join(site["base"], path),
                                                           cache.setdefault("files", {}))
        items.append(item)

    handshakes, now = cache.setdefault("handshakes", {}), time.monotonic()
    for host, port, server_name in endpoints:
        key = (host, port, server_name)
        if key not in handshakes or now - handshakes[key][0] >= CERTIFICATE_HANDSHAKE_EVERY:
            try:
                outcome = (served_certificate(host, port, server_name), None)
            except ValueError as err:  # not a local address
                outcome = (None, str(err))
            except OSError as err:  # refused, timed out, not TLS (ssl.SSLError)
                outcome = (None, f"handshake failed: {err.strerror or err}")
            handshakes[key] = (now, outcome)
        der, error = handshakes[key][1]
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        items.append({"source": "endpoint", "endpoint": address,
                      "serverNames": [server_name] if server_name else [], "der": der,
                      "error": error})
    return items


def parse_certificates(items, now):
    """fetch_certificates' items at wall time `now` -> the section (see collect_certificates).
    Most urgent first: unreadable ones, then by days left; past CERTIFICATES_MAX the rest are
    counted in `omitted`."""
    entries = []
    for item in items:
        names = checkable_names(item["serverNames"])
        entry = {"name": _wire_text(names[0] if names else item.get("file")
                                    or item["endpoint"]),
                 "source": item["source"]}
        for key in ("file", "endpoint"):
            if key in item:
                entry[key] = _wire_text(item[key])
        certificate, error = None, item.get("error")
        if item.get("der") is not None:
            try:
                certificate = parse_certificate(item["der"])
            except ValueError as err:
                error = str(err)
        if certificate is None:
            entry["error"] = _wire_text(error or "no certificate")
            entries.append(entry)
            continue
        entry.update(
            subject=_wire_text(certificate["subject"]),
            names=[_wire_text(n) for n in (certificate["dnsNames"] +
                                           certificate["ipAddresses"])[:CERTIFICATE_NAMES_MAX]],
            issuer=_wire_text(certificate["issuer"]),
            notAfter=certificate["notAfter"],
            daysLeft=round((certificate["notAfter"] - now) / 86400, 1))
        if names:
            unmatched = [n for n in names if not certificate_covers(certificate, n)]
            entry["matches"] = not unmatched
            if unmatched:
                entry["unmatched"] = [_wire_text(n) for n in unmatched[:CERTIFICATE_NAMES_MAX]]
        entries.append(entry)
    entries.sort(key=lambda e: ("daysLeft" in e, e.get("daysLeft", 0), e["name"]))
    readable = [e["daysLeft"] for e in entries if "daysLeft" in e]
    section = {"total": len(entries),
               "expired": sum(1 for e in entries if e.get("notAfter", now + 1) <= now),
               "mismatched": sum(1 for e in entries if e.get("matches") is False),
               "unreadable": sum(1 for e in entries if "error" in e)}
    if readable:
        section["minDaysLeft"] = min(readable)
    section["certificates"] = entries[:CERTIFICATES_MAX]
    section["omitted"] = max(0, len(entries) - CERTIFICATES_MAX)
    return section


@collector("certificates", group=SERVICES)
def collect_certificates(ctx):
    """TLS certificates of the sites this server hosts, from nginx's config (nginx.conf and
    what it includes: server_name, ssl_certificate, listen ... ssl) and Apache's
    (<VirtualHost> with SSLEngine on: ServerName, ServerAlias, SSLCertificateFile), plus the
    local handshake of the endpoints listed in config. Settings (services.certificates):
    nginxConfig (default /etc/nginx/nginx.conf), apacheConfig (a path or glob, or a list;
    default /etc/apache2/sites-enabled/* and /etc/httpd/conf.d/*.conf), endpoints (a list of
    "host:port" or {"address": "host:port", "serverName": "shop.example.com"}: the SNI name and
    the name checked, by default the host's unless it is an address; this server's own
    addresses only, refused otherwise). The agent reads the certificate files,
    never the keys; one readable only by root is reported as unreadable, with the reason.

    Raw input: a PEM file ("-----BEGIN CERTIFICATE-----\\nMIID...") or a handshake's DER.
    -> {"total", "expired", "mismatched", "unreadable": counts, "minDaysLeft": fewest days
    until a readable one expires (negative: expired), "certificates": [{"name": the first name
    the site serves, "source": nginx|apache|endpoint, "file" or "endpoint", "subject": subject
    CN, "names": subjectAltName DNS and IP entries, "issuer": issuer CN or O, "notAfter": epoch
    seconds, "daysLeft": days (one decimal), "matches": every name served is covered (RFC
    6125), "unmatched": the names that are not, "error": why there is no certificate}] (at most
    50, most urgent first), "omitted": entries left out}
    """
    cache = vars(ctx).setdefault("certificate_cache", {})  # lives as long as the context
    return parse_certificates(fetch_certificates(ctx.services.get("certificates", {}), cache),
                              wall_time())


def _service_socket(name, path=None, host="127.0.0.1", port=None):
    """A connected socket to a local service: its unix socket `path`, else (host, port); with
    SERVICE_TIMEOUT. ServiceAbsent when nothing listens there (Redis, PostgreSQL, MySQL)."""
    try:
        if path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(SERVICE_TIMEOUT)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.create_connection((host, int(port)), SERVICE_TIMEOUT)
    except (ConnectionRefusedError, FileNotFoundError) as err:
        raise ServiceAbsent(f"{name} is not listening") from err
    sock.settimeout(SERVICE_TIMEOUT)
    return sock


def fetch_redis(settings):
    """INFO over a plain socket (RESP), AUTH first when a password is set."""
    sock = _service_socket("redis", settings.get("socket"), settings.get("host", "127.0.0.1"),
                           settings.get("port", 6379))
    with sock:
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


# ----- Mail queue (Postfix, Exim) ---------------------------------------------------------------
# The queue is counted from the spool directories themselves: `mailq`, `postqueue -p` and
# `exim -bpc` fork a program every minute and walk the same files (and print addresses). Only
# the envelope's time (and Exim's frozen flag) is read from a queue file; senders, recipients
# and content are never parsed, kept or sent.

POSTFIX_QUEUE = "/var/spool/postfix"
POSTFIX_QUEUES = ("active", "deferred", "hold", "incoming", "maildrop")
EXIM_SPOOLS = ("/var/spool/exim4/input", "/var/spool/exim/input")
# A walk stops after this many messages (or SERVICE_TIMEOUT seconds) and says so (`truncated`),
# so a queue of millions costs the agent a bounded time.
MAIL_QUEUE_LIMIT = 100_000
# A Postfix queue file starts with its size record (~97 bytes) and its arrival time record;
# Exim's -H file with its id, user, sender, time and flag lines, which rarely pass 1 KB.
POSTFIX_HEAD_BYTES = 160
EXIM_HEAD_BYTES = 8192
# What the agent's user needs, said when the queue cannot be read.
MAIL_QUEUE_ACCESS = {
    "postfix": "the agent must run as root to count it",
    "exim": "the agent must run as root, or its user join the spool's group (Debian-exim, "
            "or exim), which may read every message",
}


def _is_there(path):
    """Whether the folder `path` is there, or may be: a parent the agent may not search
    (Debian's /var/spool/exim4 is mode 750) hides it, and that is not an absence."""
    try:
        os.stat(path)
    except PermissionError:
        return True
    except OSError:
        return False
    return os.path.isdir(path)


def _mta_running():
    """Which mail server's daemon runs ("postfix", "exim" or None): only asked when both
    spools are on disk (one is a removed package's leftover)."""
    for proc in psutil.process_iter(["name"], ad_value=None):
        name = proc.info["name"] or ""
        if name == "master":  # Postfix's master daemon (/usr/lib/postfix/sbin/master)
            return "postfix"
        if name in ("exim4", "exim"):
            return "exim"
    return None


def _queue_files(top, limit, deadline, suffix=""):
    """Yield the regular files under `top` whose name ends with `suffix` (Postfix hashes some
    queues into subfolders, Exim with split_spool_directory), at most `limit`; raise
    _WalkStopped past it or past the `deadline` (monotonic)."""
    folders, seen = [top], 0
    while folders:
        folder = folders.pop()
        try:
            listing = os.scandir(folder)
        except FileNotFoundError:
            continue  # a hashed subfolder removed meanwhile
        with listing:  # read as it goes: a listing of 100,000 entries held whole is ~10 MB
            for entry in listing:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif entry.name.endswith(suffix) and entry.is_file(follow_symlinks=False):
                    if seen >= limit or time.monotonic() > deadline:
                        raise _WalkStopped
                    seen += 1
                    yield entry


class _WalkStopped(Exception):
    pass


def _read_head(path, size):
    """The first `size` bytes of a queue file, or None when it went away meanwhile (delivered,
    moved to another queue)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except FileNotFoundError:
        return None


def parse_postfix_arrival(head):
    """Arrival time (seconds since the epoch) from the start of a Postfix queue file, or None.

    Records are a type byte, a length (7 bits a byte, low first) and data; the file begins
    b"C_            315  ...T\\x111796173498 805701A..." -- the size record, then the time
    record "T" (seconds and microseconds). The file's mtime is no use: Postfix sets a deferred
    message's mtime to its next delivery attempt. Reading stops at the time record or at the
    sender record ("S"), which is never looked into.
    """
    offset = 0
    while offset < len(head):
        kind, length, shift = head[offset:offset + 1], 0, 0
        offset += 1
        while offset < len(head):
            byte = head[offset]
            offset += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if kind == b"T":
            seconds = head[offset:offset + length].split(b" ")[0]
            return int(seconds) if seconds.isdigit() and offset + length <= len(head) else None
        if kind not in (b"C", b"A", b"c") or offset + length > len(head):
            return None
        offset += length
    return None


def parse_exim_header(head):
    """(received time, frozen) from the start of an Exim -H spool file.

    The file is: its name, "user uid gid", "<sender>", "<received time> <warnings>", then
    option lines starting with "-" ("-frozen 1796173448" when frozen), then the recipients.
    The sender line is skipped unread; reading stops at the first line after the options.
    """
    lines = head.split(b"\n")
    if len(lines) < 5 or not lines[0].endswith(b"-H"):
        return None, False
    received = lines[3].split(b" ")[0]
    frozen = False
    for line in lines[4:]:
        if not line.startswith(b"-"):
            break
        if line.startswith(b"-frozen "):
            frozen = True
    return (int(received) if received.isdigit() else None), frozen


def fetch_mailqueue(settings):
    """Walk the mail server's queue -> {"mta", "counts": {queue: messages}, "oldest": arrival
    time or None, "frozen" (Exim), "truncated"}."""
    postfix = settings.get("postfixQueue", POSTFIX_QUEUE)
    has_postfix = _is_there(os.path.join(postfix, "deferred"))
    spools = [settings["eximSpool"]] if settings.get("eximSpool") else EXIM_SPOOLS
    exim = next((spool for spool in spools if _is_there(spool)), None)
    if has_postfix and exim:
        mta = "exim" if _mta_running() == "exim" else "postfix"
    elif has_postfix or exim:
        mta = "postfix" if has_postfix else "exim"
    else:
        raise ServiceAbsent("no Postfix queue or Exim spool")
    tops = {queue: os.path.join(postfix, queue) for queue in POSTFIX_QUEUES} \
        if mta == "postfix" else {"input": exim}
    raw = {"mta": mta, "counts": {}, "oldest": None, "truncated": False}
    if mta == "exim":
        raw["frozen"] = 0
    left, deadline = MAIL_QUEUE_LIMIT, time.monotonic() + SERVICE_TIMEOUT
    for queue, top in tops.items():
        count = 0
        try:
            # Exim: the -H files only, not -D (the body) or -J (a delivery's journal).
            for entry in _queue_files(top, left, deadline, "-H" if mta == "exim" else ""):
                if mta == "exim":
                    head = _read_head(entry.path, EXIM_HEAD_BYTES)
                    if head is None:
                        continue
                    arrival, frozen = parse_exim_header(head)
                    raw["frozen"] += frozen
                else:
                    head = _read_head(entry.path, POSTFIX_HEAD_BYTES)
                    if head is None:
                        continue
                    arrival = parse_postfix_arrival(head)
                count += 1
                if arrival is None:  # a file still being written: its mtime is its arrival
                    try:
                        arrival = int(entry.stat().st_mtime)
                    except FileNotFoundError:
                        continue
                if raw["oldest"] is None or arrival < raw["oldest"]:
                    raw["oldest"] = arrival
        except _WalkStopped:
            raw["truncated"] = True
        except PermissionError as err:
            raise RuntimeError(f"cannot read the {mta} queue ({err.filename}): "
                               f"{MAIL_QUEUE_ACCESS[mta]} (README, mail queue)") from None
        raw["counts"][queue] = count
        left -= count
        if raw["truncated"]:
            break
    return raw


def parse_mailqueue(raw, now):
    """The walk's tallies -> the wire section (pure): counts, total, age of the oldest."""
    result = {"mta": raw["mta"], "total": sum(raw["counts"].values())}
    if raw["mta"] == "postfix":
        result.update({queue: raw["counts"].get(queue, 0) for queue in POSTFIX_QUEUES})
    else:
        result["frozen"] = raw["frozen"]
    if raw["oldest"] is not None:
        result["oldestAge"] = max(0, int(now - raw["oldest"]))
    if raw["truncated"]:
        result["truncated"] = True
    return result


@collector("mailqueue", group=SERVICES)
def collect_mailqueue(ctx):
    """The mail queue of Postfix or Exim, from the spool (settings: postfixQueue, default
    /var/spool/postfix; eximSpool, default /var/spool/exim4/input or /var/spool/exim/input).
    Which one is there is found from the folders (and, when both are, the running daemon).

    Postfix: the files under active, deferred, hold, incoming and maildrop, each opened for its
    first 160 bytes (the arrival time record). Exim: the *-H files of the input folder, read up
    to the end of their option lines (the "-frozen <time>" flag). Needs root: Postfix's queue
    folders are postfix's alone (mode 700; group postdrop may only write maildrop), Exim's
    spool is its group's, which may read every message.

    -> {"mta": "postfix"|"exim", "total" (messages), Postfix: "active", "deferred", "hold",
    "incoming", "maildrop"; Exim: "frozen"; "oldestAge" (seconds since the oldest message
    arrived; absent when the queue is empty), "truncated" (true when the walk stopped at
    MAIL_QUEUE_LIMIT messages or SERVICE_TIMEOUT seconds: the counts are lower bounds)}
    """
    return parse_mailqueue(fetch_mailqueue(ctx.services.get("mailqueue", {})), wall_time())


# ----- Watched processes ------------------------------------------------------------------------

# A service's list (watched processes, systemd units, PHP-FPM pools): at most this many entries,
# each name this long (panel/protocol.py's MAX_SERVICE_ENTRIES, MAX_SERVICE_NAME).
WATCHED_LIMIT = 50
NAME_LENGTH = 200


def _name_list(settings, key):
    """A list of names from config (a single string is taken as one), duplicates dropped."""
    names = settings.get(key) or []
    if isinstance(names, str):
        names = [names]
    return list(dict.fromkeys(str(name) for name in names if str(name).strip()))


@collector("watched", group=SERVICES)
def collect_watched(ctx):
    """Processes named in config (settings: names, e.g. ["named", "pure-ftpd", "crond"]),
    found by psutil by their name (/proc/<pid>/stat; the full name when that is cut at 15
    characters). A name no process is called is then looked for as the base name of first
    arguments (/proc/<pid>/cmdline: only then, as reading every command line costs a quarter
    more; only its first word is compared, and nothing of it is sent). Off when no names
    are set.

    -> {"processes": [{"name", "count" (running; 0 is a "down"), "cpuPercent" (their summed
    share of one core since the previous sample, absent on the first), "rss" (summed resident
    memory, bytes)}], "omitted" (names past the first 50)}
    """
    names = _name_list(ctx.services.get("watched", {}), "names")
    if not names:
        raise ServiceAbsent("no watched process names configured")
    kept = names[:WATCHED_LIMIT]
    matched, others = {name: [] for name in kept}, []
    # The collection's one walk (process_table): the figures below were read in it.
    for info in process_table(ctx):
        (matched[info["name"]] if info["name"] in matched else others).append(info)
    missing = {name for name, procs in matched.items() if not procs}
    if missing:
        for info in others:
            try:
                argv = psutil.Process(info["pid"]).cmdline()
            except psutil.Error:
                continue
            first = os.path.basename(argv[0]) if argv and argv[0] else None
            if first in missing:
                matched[first].append(info)
    now = since_boot()
    entries = []
    for name, procs in matched.items():
        entry = {"name": name[:NAME_LENGTH], "count": 0, "rss": 0}
        for info in procs:
            entry["count"] += 1
            if info["cpu"] is None or info["rss"] is None or info["started"] is None:
                continue  # running, though its figures are not ours to read
            entry["rss"] += info["rss"]
            # Centiseconds of CPU: their rate per second is a share of one core in %.
            rate = ctx.rates.per_second(f"watched:{info['pid']}:{int(info['started'])}",
                                        100.0 * info["cpu"], now)
            if rate is not None:
                entry["cpuPercent"] = round(entry.get("cpuPercent", 0.0) + rate, 2)
        entries.append(entry)
    result = {"processes": entries}
    if len(names) > WATCHED_LIMIT:
        result["omitted"] = len(names) - WATCHED_LIMIT
    return result


# ----- systemd ----------------------------------------------------------------------------------
# systemctl is forked (it talks to systemd over D-Bus or its private socket): once a minute for
# the failed units, once more when units are listed in config.

SYSTEMD_RUNTIME = "/run/systemd/system"
UNIT_STATE_LENGTH = 64
UNIT_TYPES = (".service", ".socket", ".target", ".timer", ".mount", ".automount", ".swap",
              ".path", ".slice", ".scope", ".device")


def parse_systemctl_failed(text):
    """`systemctl list-units --failed --plain --no-legend --no-pager` -> [{"name",
    "loadState", "activeState", "subState"}].

    Each line: "unit load active sub description", e.g.
    "mariadb.service loaded failed failed MariaDB 10.11.6 database server"; older systemd
    versions put a "●" before the name even with --plain.
    """
    units = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0] in ("●", "*"):
            words = words[1:]
        if len(words) >= 4:
            units.append({"name": words[0][:NAME_LENGTH],
                          "loadState": words[1][:UNIT_STATE_LENGTH],
                          "activeState": words[2][:UNIT_STATE_LENGTH],
                          "subState": words[3][:UNIT_STATE_LENGTH]})
    return units


def parse_systemctl_show(text):
    """`systemctl show -p Id,ActiveState,SubState,LoadState <units>` -> {unit: {"activeState",
    "subState", "loadState"}}. One block of "Key=value" lines per unit, blocks separated by an
    empty line, keys in systemd's own order:

    Id=nginx.service
    LoadState=loaded
    ActiveState=active
    SubState=running
    """
    states, block = {}, {}
    for line in text.splitlines() + [""]:
        key, sep, value = line.partition("=")
        if sep:
            block[key] = value.strip()
            continue
        if block.get("Id"):
            states[block["Id"]] = {
                field: block[key][:UNIT_STATE_LENGTH]
                for field, key in (("activeState", "ActiveState"), ("subState", "SubState"),
                                   ("loadState", "LoadState")) if key in block}
        block = {}
    return states


def _systemctl(*arguments):
    import subprocess

    systemctl = shutil.which("systemctl")
    if not systemctl:
        raise ServiceAbsent("systemctl is not installed")
    try:
        done = subprocess.run([systemctl, *arguments, "--no-pager"], capture_output=True,
                              text=True, timeout=SERVICE_TIMEOUT,
                              env=dict(os.environ, SYSTEMD_COLORS="0", LC_ALL="C"))
    except subprocess.TimeoutExpired:
        raise RuntimeError("systemctl timed out") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise RuntimeError(f"systemctl: {lines[-1] if lines else 'failed'}"[:200])
    return done.stdout


def fetch_systemd(settings):
    """-> (list-units --failed output, show output or "" when no units are configured)."""
    if WINDOWS or not os.path.isdir(SYSTEMD_RUNTIME):
        raise ServiceAbsent("systemd is not this system's init")
    failed = _systemctl("list-units", "--failed", "--plain", "--no-legend")
    units = _name_list(settings, "units")[:WATCHED_LIMIT]
    shown = _systemctl("show", "-p", "Id,ActiveState,SubState,LoadState", "--", *units) \
        if units else ""
    return failed, shown


def parse_systemd(failed_text, show_text, units):
    """The two outputs and the configured units -> the wire section (pure): the configured
    units first, in their order, then the failed ones not among them, at most 50."""
    failed = parse_systemctl_failed(failed_text)
    states = parse_systemctl_show(show_text)
    listed, named = [], set()
    for unit in units:
        # systemctl takes "php8.2-fpm" for "php8.2-fpm.service" and says so in Id=.
        unit_id = unit if unit in states or unit.endswith(UNIT_TYPES) else f"{unit}.service"
        named.update((unit, unit_id))
        listed.append(dict({"name": unit[:NAME_LENGTH]}, **states.get(unit_id, {})))
    listed.extend(unit for unit in failed if unit["name"] not in named)
    result = {"failed": len(failed), "units": listed[:WATCHED_LIMIT]}
    if len(listed) > WATCHED_LIMIT:
        result["omitted"] = len(listed) - WATCHED_LIMIT
    return result


@collector("systemd", group=SERVICES)
def collect_systemd(ctx):
    """systemd's failed units and the state of the units named in config (settings: units,
    e.g. ["nginx.service", "php8.2-fpm"]), from `systemctl list-units --failed` and `systemctl
    show -p Id,ActiveState,SubState,LoadState <units>`. Looked for when /run/systemd/system
    exists (systemd is the init).

    -> {"failed" (units in the failed state), "units": [{"name", "activeState" (active,
    inactive, failed, activating, ...), "subState" (running, dead, exited, ...), "loadState"
    (loaded, not-found, masked, ...)}]: the configured units, then the failed ones, at most
    50; "omitted" (entries past 50)}
    """
    settings = ctx.services.get("systemd", {})
    failed, shown = fetch_systemd(settings)
    return parse_systemd(failed, shown, _name_list(settings, "units")[:WATCHED_LIMIT])


POSTGRES_CONNECTIONS = "'connections', (SELECT count(*) FROM pg_stat_activity)"
POSTGRES_SIZES = (
    "'databases', (SELECT coalesce(json_agg(json_build_object('name', datname, 'size', "
    "pg_database_size(datname)) ORDER BY datname), '[]') FROM pg_database "
    "WHERE datallowconn AND NOT datistemplate AND has_database_privilege(datname, 'CONNECT'))")
# One query, one JSON value: connections at every sample, database sizes when due.
POSTGRES_QUERY = f"SELECT json_build_object({POSTGRES_CONNECTIONS}, {POSTGRES_SIZES})"
POSTGRES_COUNT_QUERY = f"SELECT json_build_object({POSTGRES_CONNECTIONS})"
# pg_database_size() and information_schema.tables walk every database's files and tables: on
# a server with hundreds of them that takes the server seconds (13.6 ms of waiting on this
# machine's), so sizes are read this seldom and the last known sent between.
DATABASE_SIZES_INTERVAL = 300
DATABASES_MAX = 50  # sizes sent, the largest; "omitted" counts the rest


def largest_databases(sizes):
    """{name: bytes} -> {"databases": [{"name", "size"}] of the DATABASES_MAX largest, by name,
    "omitted": how many more (only when some are)}."""
    ranked = sorted(({"name": str(name)[:200], "size": size} for name, size in sizes.items()),
                    key=lambda d: -d["size"])
    kept = {"databases": sorted(ranked[:DATABASES_MAX], key=lambda d: d["name"])}
    if len(ranked) > DATABASES_MAX:
        kept["omitted"] = len(ranked) - DATABASES_MAX
    return kept


def sizes_due(held, now):
    """Whether a collector's database sizes are to be read again (held: its ctx.held entry)."""
    return held.get("sizesAt") is None or now - held["sizesAt"] >= DATABASE_SIZES_INTERVAL


def keep_sizes(held, figures, due, now, read=True):
    """The other half of sizes_due: a sample that was due (and `read` its sizes) keeps them as
    the last known; every sample then sends the last known."""
    if due:
        held["sizesAt"] = now  # a timeout while summing is not retried before the next due
        if read:
            held["databases"] = {k: figures[k] for k in ("databases", "omitted") if k in figures}
    figures.update(held.get("databases", {}))


def fetch_postgresql(settings, sizes=True):
    """Run POSTGRES_QUERY (POSTGRES_COUNT_QUERY without `sizes`) and return its one JSON value
    as text.

    By default the agent speaks PostgreSQL's wire protocol itself over a socket (trust, password,
    MD5 and SCRAM-SHA-256 logins): starting `psql` every minute costs ~20 ms of CPU, more than
    the rest of a collection. `method: "psql"` uses the psql client instead (for TLS-only or
    Kerberos set-ups the built-in client does not speak).
    """
    query = POSTGRES_QUERY if sizes else POSTGRES_COUNT_QUERY
    if settings.get("method", "socket") == "psql":
        return _postgresql_via_psql(settings, query)
    with _PgConnection(settings) as connection:
        rows = connection.query(query)
    return rows[0][0]


def _postgresql_via_psql(settings, query):
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
               "-d", str(settings.get("database", "postgres")), "-c", query]
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
        # A socket folder such as /var/run/postgresql, as libpq takes it.
        folder = settings.get("socket")
        self.sock = _service_socket(
            "postgresql", os.path.join(folder, f".s.PGSQL.{port}") if folder else None,
            settings.get("host", "127.0.0.1"), port)
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
    """The query's one JSON line -> {"connections", "databases": [{"name", "size"}] (when the
    line has them: the DATABASES_MAX largest), "omitted"}."""
    document = json.loads(text)
    parsed = {"connections": int(document["connections"])}
    if "databases" in document:
        parsed.update(largest_databases({d["name"]: int(d["size"]) for d in document["databases"]
                                         if d.get("size") is not None}))
    return parsed


@collector("postgresql", group=SERVICES)
def collect_postgresql(ctx):
    """PostgreSQL (settings: host 127.0.0.1 or socket folder, port, user postgres, password,
    database postgres, method socket|psql).

    -> {"connections", "databases": [{"name", "size" (bytes)}] (at most DATABASES_MAX, the
    largest; "omitted" counts the rest)}. Sizes are read every DATABASE_SIZES_INTERVAL seconds
    and the last known sent between.
    """
    held = ctx.held.setdefault("postgresql", {})
    now = time.monotonic()
    due = sizes_due(held, now)
    figures = parse_postgresql(fetch_postgresql(ctx.services.get("postgresql", {}), sizes=due))
    keep_sizes(held, figures, due, now)
    return figures


# The usual places of the server's unix socket: Debian and Ubuntu (both spellings of /run), then
# RHEL and its kin.
MYSQL_SOCKETS = ("/run/mysqld/mysqld.sock", "/var/run/mysqld/mysqld.sock",
                 "/var/lib/mysql/mysql.sock")
# SHOW GLOBAL STATUS and SHOW GLOBAL VARIABLES rows the collector reads (both need no privilege).
MYSQL_STATUS = ("Aborted_clients", "Aborted_connects", "Innodb_buffer_pool_pages_data",
                "Innodb_buffer_pool_pages_total", "Innodb_buffer_pool_read_requests",
                "Innodb_buffer_pool_reads", "Innodb_page_size", "Questions", "Slow_queries",
                "Threads_connected", "Threads_running", "Uptime")
MYSQL_VARIABLES = ("max_connections", "version")
# Counters that become per-second rates: status name -> wire field.
MYSQL_RATES = (("Questions", "queriesPerSec"), ("Slow_queries", "slowQueriesPerSec"),
               ("Aborted_connects", "abortedConnectsPerSec"),
               ("Aborted_clients", "abortedClientsPerSec"))
MYSQL_SYSTEM_SCHEMAS = ("information_schema", "mysql", "performance_schema", "sys")


def _mysql_in(names):
    return ", ".join(f"'{name}'" for name in names)


# Two queries, not a join of schemata and tables: MariaDB 10.11 takes 12-21 ms for the LEFT
# JOIN (it reads every schema's tables, the system ones too) and 0.3 ms for the two.
MYSQL_SIZES_QUERY = (
    "SELECT table_schema, SUM(data_length + index_length) FROM information_schema.tables "
    f"WHERE table_schema NOT IN ({_mysql_in(MYSQL_SYSTEM_SCHEMAS)}) GROUP BY table_schema")
MYSQL_SCHEMAS_QUERY = ("SELECT schema_name FROM information_schema.schemata "
                       f"WHERE schema_name NOT IN ({_mysql_in(MYSQL_SYSTEM_SCHEMAS)})")


def fetch_mysql(settings, sizes=True, replica=True):
    """Log in, read status, variables, replication and (when `sizes`) database sizes -> the
    rows: {"status": [[name, value]], "variables": [[name, value]], "replica": {column: value}
    or None (a primary, no privilege to ask, or not asked: `replica` False), "sizes":
    [[schema, bytes]] (schemas with tables) and "schemas": [[schema]] (all, empty ones too),
    both None when not read}.

    The agent speaks the client/server protocol itself: the `mariadb` client started every
    minute for the same queries costs 7.5 ms of CPU, the built-in client 0.3-0.7 ms (MariaDB
    10.11 here, medians of 20). A timeout while summing sizes keeps what was read before it:
    sizes are the last queries, and only they can take long.
    """
    with _MysqlConnection(settings) as connection:
        raw = {"status": connection.query("SHOW GLOBAL STATUS WHERE Variable_name IN ("
                                          + _mysql_in(MYSQL_STATUS) + ")")[1],
               "variables": connection.query("SHOW GLOBAL VARIABLES WHERE Variable_name IN ("
                                             + _mysql_in(MYSQL_VARIABLES) + ")")[1],
               "replica": connection.replica_status() if replica else None, "sizes": None,
               "schemas": None}
        if sizes:
            try:
                raw["schemas"] = connection.query(MYSQL_SCHEMAS_QUERY)[1]
                raw["sizes"] = connection.query(MYSQL_SIZES_QUERY)[1]
            except (socket.timeout, MysqlError) as err:
                raw["schemas"] = raw["sizes"] = None
                log.debug("mysql sizes not read reason=%s", err)
    return raw


class MysqlError(RuntimeError):
    def __init__(self, code, message):
        super().__init__(f"mysql: {message} ({code})"[:200])
        self.code = code


def _os_user_name():
    """The effective user's name: what unix_socket / auth_socket logins check."""
    if WINDOWS:
        import getpass

        return getpass.getuser()
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _lenenc_int(data, pos):
    """A length-encoded integer at `pos` -> (value, next position); None for 0xFB (NULL)."""
    first = data[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFB:
        return None, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if size is None:
        raise MysqlError(0, "malformed length in a reply")
    return int.from_bytes(data[pos + 1:pos + 1 + size], "little"), pos + 1 + size


def _lenenc_text(data, pos):
    length, pos = _lenenc_int(data, pos)
    if length is None:
        return None, pos
    return data[pos:pos + length].decode("utf-8", "replace"), pos + length


def mysql_native_scramble(password, nonce):
    """mysql_native_password: SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password)))."""
    if not password:
        return b""
    stage1 = hashlib.sha1(password.encode()).digest()
    mask = hashlib.sha1(nonce + hashlib.sha1(stage1).digest()).digest()
    return bytes(a ^ b for a, b in zip(stage1, mask))


def caching_sha2_scramble(password, nonce):
    """caching_sha2_password's fast path: SHA256(p) XOR SHA256(SHA256(SHA256(p)) + nonce)."""
    if not password:
        return b""
    stage1 = hashlib.sha256(password.encode()).digest()
    mask = hashlib.sha256(hashlib.sha256(stage1).digest() + nonce).digest()
    return bytes(a ^ b for a, b in zip(stage1, mask))


class _MysqlConnection:
    """Just enough of the MySQL client/server protocol (MySQL and MariaDB speak the same one) to
    log in and run text queries: handshake v10, no TLS, no compression.
    https://dev.mysql.com/doc/dev/mysql-server/latest/PAGE_PROTOCOL.html

    Logins: mysql_native_password; caching_sha2_password (its fast path, and over the unix
    socket its full one, where the server takes the password in clear because the socket is
    private to the machine); unix_socket (MariaDB) and auth_socket (MySQL), where the server
    checks the connecting process's uid and the client sends only the user name; and the
    server's auth switch request to any of these.
    """

    # Capability flags (CLIENT_*): LONG_PASSWORD, LONG_FLAG, PROTOCOL_41, TRANSACTIONS,
    # SECURE_CONNECTION, PLUGIN_AUTH, PLUGIN_AUTH_LENENC_CLIENT_DATA. No DEPRECATE_EOF: result
    # sets end in EOF packets, which every server version sends.
    CAPABILITIES = 0x1 | 0x4 | 0x200 | 0x2000 | 0x8000 | 0x80000 | 0x200000
    PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH = 0x200, 0x8000, 0x80000
    UTF8MB4 = 45  # utf8mb4_general_ci, known to MySQL >= 5.5.3 and every MariaDB

    def __init__(self, settings):
        self.user = str(settings.get("user") or _os_user_name())
        self.password = str(settings.get("password") or "")
        self.seq = 0
        path = settings.get("socket")
        if not path and not settings.get("host") and not settings.get("port") and not WINDOWS:
            path = next((p for p in MYSQL_SOCKETS if os.path.exists(p)), None)
        # Over the unix socket nothing leaves the machine: caching_sha2_password's full login
        # may send the password in clear there (as the mysql client does), never over TCP.
        self.private = bool(path)
        self.sock = _service_socket("mysql", path, settings.get("host", "127.0.0.1"),
                                    settings.get("port", 3306))
        self.reader = self.sock.makefile("rb")
        try:
            self._login()
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.seq = 0
            self._send(b"\x01")  # COM_QUIT
        except OSError:
            pass
        self.sock.close()

    def _read(self, size):
        data = self.reader.read(size)
        if len(data) < size:
            raise MysqlError(0, "the server closed the connection")
        return data

    def _receive(self):
        payload = b""
        while True:
            header = self._read(4)
            length = int.from_bytes(header[:3], "little")
            self.seq = (header[3] + 1) % 256
            payload += self._read(length)
            if length < 0xFFFFFF:  # a full-size packet is continued by the next one
                return payload

    def _send(self, payload):
        self.sock.sendall(len(payload).to_bytes(3, "little") + bytes([self.seq]) + payload)
        self.seq = (self.seq + 1) % 256

    @staticmethod
    def _error(packet):
        code = int.from_bytes(packet[1:3], "little")
        message = packet[3:]
        if message[:1] == b"#":  # SQL state marker and the five-character state
            message = message[6:]
        return MysqlError(code, message.decode("utf-8", "replace"))

    def _login(self):
        greeting = self._receive()
        if greeting[:1] == b"\xff":  # e.g. too many connections, host blocked
            raise self._error(greeting)
        if greeting[0] != 10:
            raise MysqlError(0, f"handshake version {greeting[0]} is not 10")
        pos = greeting.index(b"\x00", 1) + 1 + 4  # server version, connection id
        nonce = greeting[pos:pos + 8]
        pos += 9
        capabilities = int.from_bytes(greeting[pos:pos + 2], "little")
        plugin = "mysql_native_password"
        if len(greeting) > pos + 2:
            capabilities |= int.from_bytes(greeting[pos + 5:pos + 7], "little") << 16
            nonce_length = greeting[pos + 7]
            pos += 18  # capabilities, charset, status, capabilities, nonce length, reserved
            if capabilities & self.SECURE_CONNECTION:
                rest = max(13, nonce_length - 8)
                nonce += greeting[pos:pos + rest - 1]  # its last byte is a NUL
                pos += rest
            if capabilities & self.PLUGIN_AUTH:
                plugin = greeting[pos:].split(b"\x00")[0].decode() or plugin
        if not capabilities & self.PROTOCOL_41 or not capabilities & self.SECURE_CONNECTION:
            raise MysqlError(0, "server too old (no 4.1 protocol)")
        if plugin not in ("mysql_native_password", "caching_sha2_password"):
            plugin = "mysql_native_password"  # the server switches to its own, or takes this
        answer = self._answer(plugin, nonce)
        self._send(self.CAPABILITIES.to_bytes(4, "little") + (1 << 24).to_bytes(4, "little")
                   + bytes([self.UTF8MB4]) + bytes(23) + self.user.encode() + b"\x00"
                   + bytes([len(answer)]) + answer + plugin.encode() + b"\x00")
        while True:
            packet = self._receive()
            if packet[0] == 0x00:  # OK: logged in
                return
            if packet[0] == 0xFF:
                raise self._error(packet)
            if packet[0] == 0xFE:  # auth switch request: another plugin, a fresh nonce
                if len(packet) == 1:
                    raise MysqlError(0, "server asks for the pre-4.1 password hash")
                name, _, data = packet[1:].partition(b"\x00")
                plugin = name.decode("utf-8", "replace")
                self._send(self._answer(plugin, data[:-1] if data.endswith(b"\x00") else data))
            elif packet[0] == 0x01 and plugin == "caching_sha2_password":
                if packet[1:2] == b"\x04":  # not in the server's cache: full authentication
                    if not self.private:
                        raise MysqlError(0, "caching_sha2_password needs a full login, which "
                                            "the agent does only over the unix socket "
                                            "(services.mysql.socket)")
                    self._send(self.password.encode() + b"\x00")
                # 0x03: fast authentication succeeded; the OK follows
            else:
                raise MysqlError(0, f"unexpected reply while logging in as {self.user}")

    def _answer(self, plugin, nonce):
        if plugin == "mysql_native_password":
            return mysql_native_scramble(self.password, nonce[:20])
        if plugin == "caching_sha2_password":
            return caching_sha2_scramble(self.password, nonce[:20])
        if plugin in ("unix_socket", "auth_socket"):
            return b""  # the server checks our uid; nothing to send
        if plugin == "mysql_clear_password" and self.private:
            return self.password.encode() + b"\x00"
        raise MysqlError(0, f"the server asks for login method {plugin[:40]}, which the agent "
                            "does not speak")

    def query(self, sql):
        """COM_QUERY -> (column names, rows of text values, None for NULL)."""
        self.seq = 0
        self._send(b"\x03" + sql.encode())
        packet = self._receive()
        if packet[0] == 0xFF:
            raise self._error(packet)
        if packet[0] == 0x00:  # a statement without a result set
            return [], []
        count = _lenenc_int(packet, 0)[0]
        names = []
        for _ in range(count):
            column, pos = self._receive(), 0
            for _ in range(5):  # catalog, schema, table, original table, then the name
                name, pos = _lenenc_text(column, pos)
            names.append(name)
        self._receive()  # EOF after the column definitions
        rows = []
        while True:
            packet = self._receive()
            if packet[0] == 0xFE and len(packet) < 9:  # EOF
                return names, rows
            if packet[0] == 0xFF:
                raise self._error(packet)
            row, pos = [], 0
            for _ in range(count):
                value, pos = _lenenc_text(packet, pos)
                row.append(value)
            rows.append(row)

    def replica_status(self):
        """SHOW REPLICA STATUS (MySQL >= 8.0.22, MariaDB >= 10.5) or SHOW SLAVE STATUS (older)
        -> {column: value} of the (first) replication channel; None on a primary, or when the
        user may not ask (MariaDB: REPLICA MONITOR; MySQL: REPLICATION CLIENT)."""
        for statement in ("SHOW REPLICA STATUS", "SHOW SLAVE STATUS"):
            try:
                names, rows = self.query(statement)
            except MysqlError as err:
                if err.code == 1064:  # syntax error: an older server, try the older words
                    continue
                if err.code in (1227, 1142):  # access denied
                    return None
                raise
            return dict(zip(names, rows[0])) if rows else None
        return None


def parse_mysql(raw):
    """fetch_mysql's rows -> (figures as sent, counters for rates).

    SHOW GLOBAL STATUS rows look like ["Threads_connected", "3"], ["Uptime", "855"]; variables
    ["max_connections", "151"], ["version", "10.11.19-MariaDB-0+deb12u1"]. Counters:
    {status name: value} of MYSQL_RATES and the buffer pool's reads and read requests.
    """
    status = {name: value for name, value in raw["status"]}
    variables = {name: value for name, value in raw["variables"]}
    if "Threads_connected" not in status:
        raise RuntimeError("SHOW GLOBAL STATUS without Threads_connected")

    def number(name):
        value = status.get(name)
        return int(value) if value not in (None, "") else None

    connections, most = number("Threads_connected"), int(variables.get("max_connections") or 0)
    figures = {"up": True, "version": str(variables.get("version", ""))[:200],
               "uptime": number("Uptime"), "connections": connections,
               "maxConnections": most,
               "connectionsPercent": round(min(100.0, 100.0 * connections / most), 2)
               if most else None,
               "threadsRunning": number("Threads_running")}
    pages, used = number("Innodb_buffer_pool_pages_total"), \
        number("Innodb_buffer_pool_pages_data")
    if pages:  # 0 or absent without InnoDB
        figures["bufferPoolBytes"] = pages * (number("Innodb_page_size") or 16384)
        figures["bufferPoolUsedPercent"] = round(min(100.0, 100.0 * (used or 0) / pages), 2)
    replica = raw.get("replica")
    if replica:
        def column(*names):
            return next((replica[n] for n in names if n in replica), None)

        figures["replicaIoRunning"] = column("Replica_IO_Running", "Slave_IO_Running") == "Yes"
        figures["replicaSqlRunning"] = column("Replica_SQL_Running",
                                              "Slave_SQL_Running") == "Yes"
        lag = column("Seconds_Behind_Source", "Seconds_Behind_Master")
        if lag not in (None, ""):  # NULL while the SQL thread is stopped
            figures["replicaLag"] = int(lag)
        for key, name in (("replicaIoErrno", "Last_IO_Errno"), ("replicaSqlErrno",
                                                                "Last_SQL_Errno")):
            if column(name) not in (None, "", "0"):
                figures[key] = int(column(name))
    if raw.get("sizes") is not None:
        totals = {name: 0 for name, in raw.get("schemas") or ()}  # a schema with no tables
        totals.update((name, int(size or 0)) for name, size in raw["sizes"])
        figures.update(largest_databases(totals))
    counters = {name: number(name) for name, _ in MYSQL_RATES + (
        ("Innodb_buffer_pool_reads", None), ("Innodb_buffer_pool_read_requests", None))}
    return ({k: v for k, v in figures.items() if v is not None},
            {k: v for k, v in counters.items() if v is not None})


@collector("mysql", group=SERVICES)
def collect_mysql(ctx):
    """MySQL or MariaDB over its unix socket or TCP (settings: socket, default the first of
    MYSQL_SOCKETS that exists; host and port, default 127.0.0.1:3306 when no socket is there;
    user, default the agent's OS user name, which is what a unix_socket / auth_socket login
    needs; password, optional).

    -> {"up", "version", "uptime" (s), "connections", "maxConnections", "connectionsPercent",
    "threadsRunning", "queriesPerSec" (Questions), "slowQueriesPerSec",
    "abortedConnectsPerSec", "abortedClientsPerSec", "bufferPoolBytes",
    "bufferPoolUsedPercent", "bufferPoolHitPercent" (since the previous sample),
    "replicaIoRunning", "replicaSqlRunning", "replicaLag" (s), "replicaIoErrno",
    "replicaSqlErrno" (on a replica only), "databases": [{"name", "size" (bytes)}] (at most
    DATABASES_MAX, the largest; "omitted" counts the rest)}. Sizes are read every
    DATABASE_SIZES_INTERVAL seconds and the last known sent between; a primary is asked
    whether it replicates as often. A server seen up by this agent that stops answering is
    {"up": false}, not absent.
    """
    held = ctx.held.setdefault("mysql", {})
    now = time.monotonic()
    due = sizes_due(held, now)
    # A replica is asked for its replication at every sample; a primary as seldom as for its
    # sizes (SHOW REPLICA STATUS's 60-odd column definitions were a third of the collector's
    # CPU): one made a replica shows it within DATABASE_SIZES_INTERVAL.
    ask_replica = due or held.get("replica", True)
    try:
        raw = fetch_mysql(ctx.services.get("mysql", {}), sizes=due, replica=ask_replica)
    except (ServiceAbsent, socket.timeout, ConnectionError):
        if held.get("seen"):
            return {"up": False}
        raise
    figures, counters = parse_mysql(raw)
    held["seen"] = True
    if ask_replica:
        held["replica"] = raw["replica"] is not None
    keep_sizes(held, figures, due, now, read=raw["sizes"] is not None)
    for name, field in MYSQL_RATES:
        if name in counters:
            ctx.rates.add(figures, field, f"mysql:{name}", counters[name])
    if "Innodb_buffer_pool_read_requests" not in counters or \
            "Innodb_buffer_pool_reads" not in counters:
        return figures
    # The hit ratio over the interval, not since start: 1 - disk reads / logical reads.
    requests = ctx.rates.per_second("mysql:bufferPoolReadRequests",
                                    counters["Innodb_buffer_pool_read_requests"])
    misses = ctx.rates.per_second("mysql:bufferPoolReads", counters["Innodb_buffer_pool_reads"])
    if requests and misses is not None:
        figures["bufferPoolHitPercent"] = round(max(0.0, 100.0 * (1 - misses / requests)), 2)
    return figures


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
    ctx.cycle = {}
    try:
        _run_each(names, ctx, now, metrics, unavailable, services)
    finally:
        ctx.cycle = None  # nothing of this collection is held until the next
    if services:
        metrics[SERVICES] = services
    ctx.rates.end_cycle()
    return metrics, unavailable


def _run_each(names, ctx, now, metrics, unavailable, services):
    """run_collectors' loop: each result into metrics or services, each failure into unavailable."""
    for name in names:
        spec = COLLECTORS.get(name)
        if spec is None or ctx.absent_until.get(name, 0) > now:
            continue
        started = time.perf_counter()
        try:
            result = spec.func(ctx)
        except ServiceAbsent as err:
            if name in ctx.seen:
                # It answered before: say it is gone, and look again every sample, so the
                # panel's "service down" alert resolves as soon as it is back.
                unavailable[name] = f"gone: {err}"[:300]
                if name not in _FAILING:
                    log.warning("service gone name=%s reason=%s", name, err)
                    _FAILING.add(name)
                continue
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
            ctx.seen.add(name)
        else:
            metrics[name] = result


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
    """Samples waiting for the panel (the daemon's undelivered ones, every one of --once's),
    in SQLite, deleted only once the panel has stored them. WAL with synchronous=FULL: a
    committed sample survives kill -9 and power loss.
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

    @property
    def idle(self):
        """Nothing waits in it and its file took the last write: a new sample may go to the
        panel without passing through it."""
        return not (self.trouble or self.memory or self.unacked or len(self))

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


class Interrupter:
    """Cuts the Reporter's requests short from another thread: `halt()` shuts down the socket
    of every open connection, so a blocked send or recv returns at once with an error (which
    urllib3 reports like any lost connection: "not delivered, stays buffered"), and every
    connection opened after it is shut down as soon as it is connected. Nothing else can end a
    blocked recv early without raising inside urllib3 (see stop_on_signals). A TCP connect or
    TLS handshake under way is not cut (urllib3 hands over no socket before both are done):
    that waits out its connect timeout, 5 s at most."""

    def __init__(self):
        self.lock = threading.Lock()  # taken in threads only, never in a signal handler
        self.halted = False
        self.sockets = weakref.WeakSet()

    def connected(self, sock):
        with self.lock:
            self.sockets.add(sock)
            halted = self.halted
        if halted:
            self._shut(sock)

    def halt(self):
        with self.lock:
            self.halted = True
            sockets = list(self.sockets)
        for sock in sockets:
            self._shut(sock)

    @staticmethod
    def _shut(sock):
        try:
            # socket.socket's own shutdown, also for an SSLSocket: SSLSocket.shutdown() would
            # drop its TLS object under the thread that is reading through it.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass  # already closed, or never connected: nothing in flight on it

    def pool_classes(self):
        """urllib3's HTTP and HTTPS pool classes, with connections that register their socket
        here once connected (`connect()` sets `.sock` in urllib3 1.26 and 2.x alike)."""
        interrupter = self
        classes = {}
        for scheme, pool in (("http", urllib3.HTTPConnectionPool),
                             ("https", urllib3.HTTPSConnectionPool)):
            class Connection(pool.ConnectionCls):
                def connect(self):
                    super().connect()
                    interrupter.connected(self.sock)

            classes[scheme] = type(pool.__name__, (pool,), {"ConnectionCls": Connection})
        return classes


class Reporter:
    """Talks to the panel: one urllib3 pool (one kept-alive connection), explicit timeouts,
    TLS 1.2+, optional CA bundle or certificate pin, gzip bodies. Never raises for network or
    HTTP trouble: every call returns an Outcome. Backoff state lives here. `halt()` (from
    another thread) cuts the request in flight short and fails every later one at once."""

    def __init__(self, config):
        self.base = config.url
        self.max_delay = config.retry_max_delay
        self.headers = {
            "Authorization": f"Bearer {config.api_key}",
            "Content-Type": "application/json",
            "User-Agent": f"mpanel-agent/{__version__}",
            # Not http.client's "Accept-Encoding: identity": the panel's answers are a few
            # plain bytes, and those 27 were 1.3 % of the 2 KB a minute the agent may send.
            "Accept-Encoding": urllib3.util.SKIP_HEADER,
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
        self.interrupter = Interrupter()
        self.pool.pool_classes_by_scheme = self.interrupter.pool_classes()
        self.failures = 0
        self.not_before = 0.0  # monotonic time before which nothing is sent

    def use_key(self, api_key):
        self.headers["Authorization"] = f"Bearer {api_key}"

    def halt(self):
        self.interrupter.halt()

    def _dated_headers(self):
        # Our clock as we send (RFC 9110 lets a client say it): the panel warns when it is off
        # and judges our samples by it, so a clock stepped back still shows fresh figures.
        return dict(self.headers, Date=email.utils.formatdate(wall_time(), usegmt=True))

    def request(self, method, path, body=None):
        headers = self._dated_headers()
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

    def download(self, path, limit):
        """GET `path` of the panel (never another origin: only the path is the panel's to
        name) over this pool, as bytes. -> (bytes, "") or (None, why); at most `limit` bytes
        are read, so a hostile answer cannot fill memory."""
        try:
            response = self.pool.request("GET", self.base + path, headers=self._dated_headers(),
                                         preload_content=False)
            try:
                if response.status != 200:
                    return None, f"HTTP {response.status}"
                data = response.read(limit + 1)
            finally:
                response.release_conn()
        except urllib3.exceptions.HTTPError as err:
            return None, f"{type(err).__name__}: {_reason(err)}"
        if len(data) > limit:
            return None, f"larger than {limit} bytes"
        return data, ""

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
    """Raised by Agent.send, in the agent's own code, when a stop was asked: no request starts
    after it, and one it cut short is not taken for the panel's failure. (Never raised from a
    signal handler: see stop_on_signals.)"""


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
        self.trouble = ""  # what the panel last said no with, while it does
        self.reregistered = False  # after a 403 on metrics, until a batch is stored
        self.clock_offset = None  # wall clock minus boot clock at the previous sample
        self.state_saved_at = None  # monotonic time of the last state write
        self.offer = None  # the newest upgrade the panel offered (Self-upgrade), while unheeded
        self.argv = ()  # the command line's arguments, for the upgraded file (main sets them)
        self.restart_into_upgrade = False  # set when a new agent.py is in place: main re-execs

    @property
    def key_rejected(self):
        return self.trouble == "key rejected"

    # -- talking to the panel --

    def stop(self):
        """Ask the agent to stop, from any thread — the Windows service's, or the one
        stop_on_signals starts — but never from a signal handler: the event and the
        interrupter take locks that the interrupted main thread may hold. A request in flight
        is cut short; its samples stay buffered."""
        self.stop_event.set()  # first: the request cut short below finds it set
        self.reporter.halt()

    def send(self, method, path, body=None):
        """One request. A stop asked before it (during a collection, say) raises Stopping: a
        stop never waits on a new request; so does one that cut it short. An answer that
        arrived all the same is returned, so a sample the panel stored is taken off the
        buffer."""
        if self.stop_event.is_set():
            raise Stopping()
        outcome = self.reporter.request(method, path, body)
        if not outcome.status and self.stop_event.is_set():
            raise Stopping()  # not the panel's failure: nothing to log, no backoff
        return outcome

    def note_outcome(self, what, outcome):
        """Set the backoff, and log changes of state only (first failure, recovery): every
        refusal backs off, so none can make the agent spin."""
        if outcome.ok and isinstance(outcome.data.get("newApiKey"), str):
            self.adopt_key(outcome.data["newApiKey"])
        if outcome.ok and self.config.auto_update and \
                isinstance(outcome.data.get("upgrade"), dict):
            self.offer = outcome.data["upgrade"]  # heeded after this cycle (try_upgrade)
        if outcome.ok and what == "metrics":
            confirm_upgrade(self.state)
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
            "autoUpdate": self.config.auto_update,
            **upgrade_report(self.state.data),
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

    def try_upgrade(self):
        """Heed the panel's latest upgrade offer, if autoUpdate allows it (Self-upgrade).
        -> True when the new agent.py is in place and this process should start it."""
        offer, self.offer = self.offer, None
        if offer is None or not self.config.auto_update:
            return False
        switched = install_upgrade(self, offer)
        if switched:
            self.restart_into_upgrade = True
        return switched

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

    def spill(self, sample):
        """Keep a sample in the buffer until the panel has stored it. -> its buffer id."""
        sample_id = self.buffer.push(sample)
        log.debug("sample buffered timestamp=%s id=%s", sample["timestamp"], sample_id)
        dropped = self.buffer.prune()
        if dropped:
            log.warning("buffer full: dropped oldest samples count=%s max_age=%ss max_bytes=%s",
                        dropped, self.config.buffer_max_age, self.config.buffer_max_bytes)
        return sample_id

    def save_state(self, when_due=False):
        """Write the state file; with when_due, only every STATE_SAVE_EVERY seconds. What
        must not be lost (serverId, a new key) is saved as it changes, and everything at a stop:
        between those the state holds counters, which a kill -9 sets back by minutes at most
        (the next rates then span the longer interval)."""
        now = time.monotonic()
        if when_due and self.state_saved_at is not None and \
                now - self.state_saved_at < STATE_SAVE_EVERY:
            return
        if self.state.save():
            self.state_saved_at = now

    def report(self):
        """The daemon's cycle: collect a sample and deliver it after whatever the buffer holds.
        The sample goes to the buffer only when it is not delivered at once (the panel out of
        reach or refusing, a backoff, older samples waiting, a stop): on a working link the
        agent writes nothing to disk for it. The buffer's two fsync'd commits a minute were
        a tenth of the agent's CPU. A kill -9 can lose the one sample on its way, as it can
        one being collected; a stop keeps it."""
        sample = self.collect()
        self.save_state(when_due=True)
        hand = []
        if self.buffer.idle:
            hand.append(sample)
        else:
            self.spill(sample)
        try:
            if self.reporter.may_send():
                self.ensure_registered()  # again after an upgrade or rename
            self.drain(hand)
        finally:
            if hand:  # not delivered
                self.spill(hand.pop())

    def drain(self, hand=None):
        """Send buffered samples oldest first, in batches, then the sample in `hand` (a list
        of at most one, emptied once it is delivered or refused for good), until both are
        done or the panel fails. -> True when nothing is left to send."""
        hand = hand if hand is not None else []
        while not self.stop_event.is_set():
            if not self.reporter.may_send():
                return False
            if not self.server_id and not self.ensure_registered().ok:
                return False
            rows = self.buffer.peek(self.batch_size) or [(IN_HAND, sample) for sample in hand]
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
                self.settle(rows, hand)
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
            self.refuse_samples(outcome, rows, hand)
        return False

    def settle(self, rows, hand, stored=True):
        """The panel is done with these rows (stored them, or refused them for good): take them
        off the buffer, or out of the hand."""
        if rows and rows[0][0] == IN_HAND:
            hand.clear()
            if stored:
                log.debug("sample delivered timestamp=%s", rows[0][1]["timestamp"])
        else:
            self.buffer.ack([row_id for row_id, _ in rows])

    def refuse_samples(self, outcome, rows, hand):
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
        self.settle([bad], hand, stored=False)

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
            # Written before it is sent: a run is a process of its own, which cron or a person
            # may cut short at any point.
            sample_id = self.spill(self.collect())
            self.save_state()
            try:
                delivered = self.ensure_registered().ok and self.drain()
                if delivered:
                    self.try_upgrade()  # the next run starts the new file
            except Stopping:
                delivered = False
            if delivered or sample_id not in self.buffer:
                return 0  # this run's sample got through; older ones wait for the next run
            if self.stop_event.is_set():
                reason = "stopped by a signal"
            elif self.key_rejected:
                reason = "API key rejected"
            else:
                reason = "the panel could not be reached or refused the sample"
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
                    self.report()
                    if self.try_upgrade():
                        break  # main() starts the new file in this process
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
        self.save_state()
        self.buffer.close()
        if self.buffer.memory:
            log.warning("samples held in memory are lost: the buffer file cannot be written "
                        "count=%s error=%s", len(self.buffer.memory), self.buffer.trouble)
        log.info("agent stopped")
        return 0


SETTINGS_EVERY = 3600
STATE_SAVE_EVERY = 600  # seconds between the daemon's writes of its counters (save_state)
# drain()'s row id for the sample in hand: the buffer's own are above 0 (file) or below (memory).
IN_HAND = 0


# ===== Self-upgrade =============================================================================
# Only with agent.autoUpdate true (install.sh --auto-update). The panel's answers may carry
# {"upgrade": {"version", "sha256", "path"}}: the agent takes from it a version, a digest and a
# path on the panel it already reports to, never a URL nor a command. It downloads the file over
# its own authenticated connection (the same TLS checks, CA bundle or pin), refuses it when it
# is larger than UPGRADE_MAX_BYTES or its SHA-256 differs, and runs it with --version (it must
# say the offered version) and --check (it must start, read the config and be accepted by the
# panel) before anything is switched.
#
# Files: the installed agent.py (/opt/mpanel-agent, root's, never written by the agent) is the
# base; upgrades live in <stateDir>/upgrade/ (the agent's own 0700 folder): agent.py (the
# upgraded copy), agent.py.previous (the copy before it, if there was one) and agent.py.new
# (while checking). The base starts every run and hands over to the copy (launch_upgraded).
#
# Falling back: the state's "upgrade" record says "trying" from the switch until the new file
# has had a sample stored by the panel. While it says so, the base does not exec the copy but
# runs it as a child and watches: a child that exits first (a daemon; a cron run:
# UPGRADE_FAILED_RUNS runs), or has not reported within the confirmation window, is stopped,
# the previous file is put back and the failure recorded (and told the panel at the next
# registration: upgradeFailed). The watcher is the base's code, which the upgrade never
# changed, so a new file that cannot even start cannot take its own fallback with it. A
# re-install of the base (install.sh) makes the copies stale: they are set aside.

UPGRADE_DIR = "upgrade"
UPGRADE_MAX_BYTES = 4 * 1024 * 1024  # agent.py is ~200 KB
UPGRADE_CHECK_TIMEOUT = 120  # seconds for each of --version and --check
UPGRADE_FAILED_RUNS = 3  # cron runs of a new file without a stored sample before falling back
UPGRADE_WINDOW_INTERVALS = 3  # a daemon's new file must report within this many intervals...
UPGRADE_WINDOW_SLACK = 60  # ...plus this many seconds (registering, a slow start)
LAUNCHED_ENV = "MPANEL_AGENT_BASE"  # set for the copy: the base's path (it runs no launcher)
_UPGRADE_PATH = re.compile(r"^/api/agent/[A-Za-z0-9_-]+(?:/[A-Za-z0-9_.-]+)*$")
_VERSION_TEXT = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+-]{0,19}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MODE_FLAGS = ("--once", "--print", "--check", "--version")


class UpgradePaths:
    def __init__(self, state_dir):
        self.folder = os.path.join(state_dir, UPGRADE_DIR)
        self.current = os.path.join(self.folder, "agent.py")
        self.previous = self.current + ".previous"
        self.new = self.current + ".new"


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(65536), b""):
            digest.update(chunk)
    return digest.hexdigest()


def base_path():
    """The installed agent.py: this file, or the one that launched this copy."""
    return os.environ.get(LAUNCHED_ENV) or os.path.abspath(__file__)


def valid_offer(offer, running_version, failed):
    """(version, sha256, path) of an offer worth taking, or None with why not. Pure."""
    version, sha256, path = (offer.get(key) for key in ("version", "sha256", "path"))
    if not (isinstance(version, str) and _VERSION_TEXT.match(version)):
        return None, "no valid version"
    if not (isinstance(sha256, str) and _SHA256.match(sha256)):
        return None, "no valid sha256"
    # Only a path of the panel's agent API: the origin is always the configured panel's.
    if not (isinstance(path, str) and _UPGRADE_PATH.match(path) and ".." not in path):
        return None, "the path is not one of the panel's agent API"
    if version == running_version:
        return None, "already running it"
    if sha256 in failed:
        return None, "this file failed here before"
    return (version, sha256, path), ""


def upgrade_report(state_data):
    """What the registration says of the last upgrade: its failure, while it is the last."""
    record = state_data.get("upgrade") or {}
    if record.get("state") == "failed":
        return {"upgradeFailed": {"version": str(record.get("to", ""))[:20],
                                  "reason": str(record.get("reason", ""))[:200]}}
    return {}


def confirm_upgrade(state):
    """The panel stored a sample of ours: a "trying" upgrade to this version has worked."""
    record = state.data.get("upgrade")
    if record and record.get("state") == "trying" and record.get("to") == __version__:
        record.update(state="confirmed", confirmedAt=utc_now_iso())
        state.save()
        log.warning("upgrade confirmed from=%s to=%s", record.get("from"), __version__)


def _fail_upgrade(state, version, sha256, reason):
    reason = " ".join(reason.split())  # one line of plain text: it goes to the panel
    state.data["upgrade"] = {"state": "failed", "from": __version__, "to": version,
                             "sha256": sha256, "reason": reason[:200], "at": utc_now_iso()}
    failed = [d for d in state.data.get("failedUpgrades") or [] if isinstance(d, str)]
    state.data["failedUpgrades"] = (failed + [sha256])[-10:]
    state.save()
    state.data.pop("registeredAs", None)  # registers again: the panel hears of it
    log.warning("upgrade refused version=%s reason=%s", version, reason)


def _checked_args(argv, mode):
    """The command line for the new file: the same options, `mode` as the mode, and
    --config made absolute (the copy runs from its own folder)."""
    args, rest = [], list(argv)
    while rest:
        arg = rest.pop(0)
        if arg in _MODE_FLAGS:
            continue
        if arg == "--config" and rest:
            args += [arg, os.path.abspath(rest.pop(0))]
        elif arg.startswith("--config="):
            args.append("--config=" + os.path.abspath(arg.split("=", 1)[1]))
        else:
            args.append(arg)
    return args + ([mode] if mode else [])


def _run_new(path, args):
    """Run the new file as ourselves (the agent's user: nothing more privileged) -> (code,
    output)."""
    env = dict(os.environ, **{LAUNCHED_ENV: base_path()})
    try:
        done = subprocess.run([sys.executable, path, *args], env=env, capture_output=True,
                              text=True, timeout=UPGRADE_CHECK_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"did not finish within {UPGRADE_CHECK_TIMEOUT} s"
    except OSError as err:
        return None, str(err)
    return done.returncode, (done.stdout + done.stderr).strip()[-200:]


def install_upgrade(agent, offer):
    """Fetch, check and switch to the offered agent.py. -> True when it is in place (the
    caller then starts it); every refusal is recorded and told the panel."""
    state = agent.state
    failed = state.data.get("failedUpgrades") or []
    taken, why = valid_offer(offer, __version__, failed)
    if taken is None:
        log.debug("upgrade offer ignored reason=%s", why)
        return False
    if WINDOWS:
        # The service host (pythonservice.exe) imports the base itself: no launcher runs there
        # yet, so there would be no fallback (docs/install.md).
        log.info("upgrade offer ignored: self-upgrade is not supported on Windows yet")
        return False
    version, sha256, path = taken
    log.warning("upgrade offered from=%s to=%s sha256=%s", __version__, version, sha256)
    data, why = agent.reporter.download(path, UPGRADE_MAX_BYTES)
    if data is None:
        log.warning("upgrade download failed version=%s reason=%s; trying again when offered",
                    version, why)
        return False  # the link, not the file: the next offer tries again
    if hashlib.sha256(data).hexdigest() != sha256:
        _fail_upgrade(state, version, sha256, "the downloaded file's SHA-256 differs from the "
                                              "announced one")
        return False
    paths = UpgradePaths(agent.config.state_dir)
    try:
        os.makedirs(paths.folder, mode=0o700, exist_ok=True)
        with open(paths.new, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        _fail_upgrade(state, version, sha256, f"cannot write {paths.new}: {err}")
        return False
    code, output = _run_new(paths.new, _checked_args(agent.argv, "--version"))
    if code != 0 or output.split()[-1:] != [version]:
        reason = f"--version said {output!r}, not {version}" if code == 0 else \
            f"--version failed ({code}): {output}"
        _fail_upgrade(state, version, sha256, reason)
        return False
    code, output = _run_new(paths.new, _checked_args(agent.argv, "--check"))
    if code != 0:
        _fail_upgrade(state, version, sha256, f"--check failed ({code}): {output}")
        return False
    try:
        if os.path.exists(paths.current):
            shutil.copy2(paths.current, paths.previous + ".tmp")
            os.replace(paths.previous + ".tmp", paths.previous)
            had_previous = True
        else:
            had_previous = False
            if os.path.exists(paths.previous):
                os.unlink(paths.previous)
        # Recorded before the switch: a crash between the two leaves a "trying" record over the
        # old file, which the watcher then finds silent and puts back (no harm done).
        state.data["upgrade"] = {"state": "trying", "from": __version__, "to": version,
                                 "sha256": sha256, "at": utc_now_iso(), "previous": had_previous,
                                 "base": file_sha256(base_path()), "runs": 0}
        if not state.save():
            raise OSError("the state file cannot be written")
        os.replace(paths.new, paths.current)
        py_compile.compile(paths.current, doraise=True)
    except (OSError, py_compile.PyCompileError) as err:
        _restore(state, paths, f"switching failed: {err}")
        return False
    log.warning("upgrade in place from=%s to=%s: restarting into it", __version__, version)
    return True


def _restore(state, paths, reason):
    """Put the previous file back (or none: the base) and record the failure."""
    record = state.data.get("upgrade") or {}
    try:
        if record.get("previous") and os.path.exists(paths.previous):
            os.replace(paths.previous, paths.current)
        elif os.path.exists(paths.current):
            os.unlink(paths.current)
    except OSError as err:
        log.error("could not put the previous agent back path=%s error=%s", paths.current, err)
    version = str(record.get("to", ""))
    log.warning("upgrade failed, previous agent restored version=%s reason=%s", version, reason)
    _fail_upgrade(state, version, str(record.get("sha256", "")), reason)


def upgrade_window(config):
    return UPGRADE_WINDOW_INTERVALS * config.report_interval + UPGRADE_WINDOW_SLACK


def launch_upgraded(config, argv, once):
    """The base's first step: run the upgraded copy if there is one. Returns only when this
    process should go on as the base itself (no copy, or it was just rolled back), with the
    exit code of a supervised cron run when that run is over (else None)."""
    if os.environ.get(LAUNCHED_ENV) or WINDOWS:
        return None
    paths = UpgradePaths(config.state_dir)
    if not os.path.isfile(paths.current):
        return None
    state = StateFile(config.state_dir)
    record = state.data.get("upgrade") or {}
    if record.get("base") and record.get("base") != file_sha256(base_path()):
        # install.sh put another agent.py in place since: it wins over older upgrades.
        for stale in (paths.current, paths.previous):
            if os.path.exists(stale):
                os.replace(stale, stale + ".stale")
        log.warning("installed agent.py changed since the last upgrade: running it")
        return None
    # Bounded: a watched copy may itself have switched to a newer one meanwhile.
    for _ in range(3):
        if (state.data.get("upgrade") or {}).get("state") != "trying":
            break
        code = _supervise(config, state, paths, argv, once)
        if code is not None or not os.path.isfile(paths.current):
            return code
        state = StateFile(config.state_dir)
    _exec_copy(paths, argv)


def _copy_command(argv):
    # `-m agent` from its folder, as the unit runs the base: the bytecode compiled at the
    # switch is used, not a fresh compile.
    return [sys.executable, "-m", "agent", *_checked_args(argv, None),
            *[arg for arg in argv if arg in _MODE_FLAGS]]


def _exec_copy(paths, argv):
    os.environ[LAUNCHED_ENV] = base_path()
    os.chdir(paths.folder)
    os.execv(sys.executable, _copy_command(argv))


def restart_as_base(argv):
    """After a switch: start the base in this process (same pid, so systemd, the Windows
    service's host or a test's handle keep it), which hands over to the new copy."""
    base = base_path()
    os.environ.pop(LAUNCHED_ENV, None)
    os.execv(sys.executable, [sys.executable, base, *argv])


def _supervise(config, state, paths, argv, once):
    """Run the new copy as a child until it has reported once. -> its exit code when a cron
    run is over; None when the caller should exec the copy (confirmed) or run as the base
    (rolled back)."""
    record = state.data["upgrade"]
    env = dict(os.environ, **{LAUNCHED_ENV: base_path()})
    child = subprocess.Popen(_copy_command(argv), cwd=paths.folder, env=env,
                             stdin=subprocess.DEVNULL)
    stopping = []

    def forward(signum, frame):
        stopping.append(signum)
        child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    # From now, not from the switch: an agent stopped for a night gets its full window.
    deadline = time.monotonic() + upgrade_window(config)
    log.warning("watching the new agent until it reports version=%s pid=%s", record.get("to"),
                child.pid)
    while True:
        try:
            code = child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            code = None
        now = StateFile(config.state_dir)
        confirmed = (now.data.get("upgrade") or {}).get("state") == "confirmed"
        if stopping and code is not None:
            return code
        if confirmed and (code is not None or once):
            return child.wait()
        if confirmed:
            child.terminate()  # its own start again, unwatched: exec'd in this process
            child.wait()
            return None
        if code is not None:
            if once:
                record["runs"] = int(record.get("runs") or 0) + 1
                if record["runs"] < UPGRADE_FAILED_RUNS:
                    now.data["upgrade"] = record
                    now.save()
                    return code
            _restore(now, paths, f"the new agent exited with {code} before the panel stored "
                                 f"a sample of it")
            return None if not once else code
        if time.monotonic() > deadline:
            child.kill()
            child.wait()
            _restore(now, paths, f"the new agent did not report within "
                                 f"{upgrade_window(config)} s")
            return None

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
                self.agent.stop()  # SvcStop runs on a thread of its own: see Agent.stop

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

def _signal_noted(signum, frame):
    """The Python-level handler: nothing (see stop_on_signals). Installed so that SIGTERM and
    SIGINT neither kill the process nor raise KeyboardInterrupt."""


def stop_on_signals(stop):
    """SIGTERM and SIGINT call stop() on a thread of its own — never in the signal handler.
    Python runs a handler in the main thread between two bytecodes, wherever it is: an
    exception raised there can leave a lock held (it landed inside urllib3's pool queue, with
    its mutex taken: urllib3's finalizer then waited on it forever at exit, until systemd's
    SIGKILL), and a lock taken there deadlocks when the interrupted code holds it
    (Event.set() inside an Event.set(), with two signals close together). So the handler does
    nothing; the C-level handler writes the signal's number to a socket
    (signal.set_wakeup_fd), and the thread that reads it logs and calls stop()."""
    reader, writer = socket.socketpair()
    writer.setblocking(False)  # set_wakeup_fd requires it: the C handler must never block
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _signal_noted)

    def watch(reader, writer):  # holds the writer: closed with it, the wakeup fd would go
        while True:
            numbers = reader.recv(64)
            for number in numbers:
                log.info("signal received signal=%s", number)
            stop()

    threading.Thread(target=watch, args=(reader, writer), name="stop-on-signal",
                     daemon=True).start()


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
    argv = list(sys.argv[1:] if argv is None else argv)
    if config.auto_update:  # off: the installed file runs, whatever the state folder holds
        code = launch_upgraded(config, argv, once=args.once)  # returns: run as the base
        if code is not None:
            return code

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
        stop_on_signals(reporter.halt)
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
    stop_on_signals(agent.stop)
    agent.argv = argv
    code = agent.once() if args.once else agent.run_forever()
    if agent.restart_into_upgrade and not args.once:
        logging.shutdown()
        restart_as_base(argv)
    if agent.stop_event.is_set():
        # Stopped: the state is saved and the buffer closed, so nothing is left to lose. The
        # interpreter's teardown would still run library finalizers (urllib3 2 closes its
        # pools, waiting on their lock) with the default signal actions back in place: one
        # more SIGTERM then killed the agent mid-exit (-15, 2 of 80 burst-stopped starts).
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
