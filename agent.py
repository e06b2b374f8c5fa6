#!/usr/bin/env python3
"""mPanel agent: collects this server's metrics and pushes them to an mPanel panel.

One file; needs Python 3.8+, psutil and urllib3. It only makes outbound HTTPS requests
(`Authorization: Bearer <key>`), so it works behind NAT and opens no port.

Run it:
    agent.py --config /etc/mpanel-agent/config.json     run forever (systemd, Windows service)
    agent.py --once                                     collect, deliver, exit (cron)
    agent.py --print                                    print one payload, send nothing
    agent.py --check                                    check the config and that the key works
    agent.py --version

Configuration, lowest to highest precedence: built-in defaults, config.json, environment,
command-line flags. config.json has the seed design's shape:

    {"controlPanel": {"url": "https://panel.example.com", "apiKey": "agent_..."},
     "agent": {"reportInterval": 60, "hostname": "auto-detect",
               "enabledCollectors": ["cpu", "memory", "disk", "network"],
               "stateDir": "/var/lib/mpanel-agent", "allowInsecureHttp": false},
     "logging": {"level": "info", "file": "/var/log/mpanel-agent.log"}}

Environment: MPANEL_AGENT_URL, MPANEL_AGENT_API_KEY, MPANEL_AGENT_INTERVAL,
MPANEL_AGENT_HOSTNAME, MPANEL_AGENT_STATE_DIR, MPANEL_AGENT_LOG_LEVEL, MPANEL_AGENT_LOG_FILE.
Flags: --url, --api-key, --state-dir, --interval, --log-level (see --help).

The panel may change the report interval and the enabled collectors (GET /api/agent/config and
`nextReportIn`); those take effect without a restart. The API key is never logged.
"""
import argparse
import dataclasses
import datetime
import gzip
import ipaddress
import json
import logging
import logging.handlers
import os
import platform
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.parse

import psutil
import urllib3

__version__ = "0.1.0"

log = logging.getLogger("mpanel-agent")

LINUX = sys.platform.startswith("linux")
WINDOWS = sys.platform == "win32"


# ===== Configuration ============================================================================

DEFAULT_COLLECTORS = ("cpu", "memory", "disk", "network")


def default_state_dir():
    """Where the state file lives: a system folder as root/SYSTEM, a per-user one otherwise."""
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
    report_interval: int = 60
    hostname: str = "auto-detect"
    enabled_collectors: tuple = DEFAULT_COLLECTORS
    state_dir: str = ""
    allow_insecure_http: bool = False
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
        if not 5 <= self.report_interval <= 3600:
            found.append("reportInterval must be between 5 and 3600 seconds")
        unknown = set(self.enabled_collectors) - set(COLLECTORS)
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


def load_config(path=None, env=None, flags=None):
    """defaults <- config.json <- environment <- flags."""
    env = os.environ if env is None else env
    flags = flags or {}
    values = {}

    explicit = path is not None
    path = path or default_config_path()
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
        panel = document.get("controlPanel", {})
        agent = document.get("agent", {})
        logging_section = document.get("logging", {})
        mapping = {
            "url": panel.get("url"),
            "api_key": panel.get("apiKey"),
            "report_interval": agent.get("reportInterval"),
            "hostname": agent.get("hostname"),
            "enabled_collectors": agent.get("enabledCollectors"),
            "state_dir": agent.get("stateDir"),
            "allow_insecure_http": agent.get("allowInsecureHttp"),
            "log_level": logging_section.get("level"),
            "log_file": logging_section.get("file"),
        }
        values.update({k: v for k, v in mapping.items() if v is not None})
    elif explicit:
        raise FileNotFoundError(f"config file {path} does not exist")

    from_env = {
        "url": env.get("MPANEL_AGENT_URL"),
        "api_key": env.get("MPANEL_AGENT_API_KEY"),
        "report_interval": env.get("MPANEL_AGENT_INTERVAL"),
        "hostname": env.get("MPANEL_AGENT_HOSTNAME"),
        "state_dir": env.get("MPANEL_AGENT_STATE_DIR"),
        "log_level": env.get("MPANEL_AGENT_LOG_LEVEL"),
        "log_file": env.get("MPANEL_AGENT_LOG_FILE"),
    }
    values.update({k: v for k, v in from_env.items() if v})
    values.update({k: v for k, v in flags.items() if v is not None})

    if "report_interval" in values:
        values["report_interval"] = int(values["report_interval"])
    if "enabled_collectors" in values:
        values["enabled_collectors"] = tuple(values["enabled_collectors"])
    if "allow_insecure_http" in values:
        values["allow_insecure_http"] = bool(values["allow_insecure_http"])
    values["url"] = values.get("url", "").rstrip("/")
    values["state_dir"] = values.get("state_dir") or default_state_dir()
    return Config(**values)


def setup_logging(config):
    level = getattr(logging, str(config.log_level).upper(), logging.INFO)
    if config.log_file:
        # Size-based rotation: an agent left alone for years must not fill the disk.
        handler = logging.handlers.RotatingFileHandler(config.log_file, maxBytes=5 * 1024 * 1024,
                                                       backupCount=3, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


# ===== Utilities ================================================================================

def utc_now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds") \
        .replace("+00:00", "Z")


class StateFile:
    """A small JSON document in the state folder: serverId, what was registered, previous
    counters. Written atomically (temp file + rename) so a crash never leaves half a file."""

    def __init__(self, state_dir):
        self.path = os.path.join(state_dir, "state.json")
        self.data = {}
        try:
            with open(self.path, encoding="utf-8") as handle:
                self.data = json.load(handle)
        except FileNotFoundError:
            pass
        except (ValueError, OSError) as err:
            log.warning("state file unreadable, starting afresh path=%s error=%s", self.path, err)

    def save(self):
        folder = os.path.dirname(self.path)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.data, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


class CpuUsage:
    """CPU busy % between two readings of the kernel's cumulative CPU times.

    psutil.cpu_percent() keeps its previous reading inside the process, so the first call
    returns a meaningless 0.0 and a cron run (`--once`) would always report 0. Here the previous
    reading can be saved in the state file and restored by the next run. A reading from before a
    reboot (or any going-backwards counter) is discarded instead of producing a bogus spike.
    """

    def __init__(self, previous=None):
        self.previous = previous  # {"bootTime": float, "busy": float, "total": float}

    @staticmethod
    def read():
        times = psutil.cpu_times()
        total = sum(times)
        if LINUX:
            # guest time is already counted in user/nice on Linux (as psutil does).
            total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
        idle = times.idle + getattr(times, "iowait", 0.0)
        return {"bootTime": psutil.boot_time(), "busy": total - idle, "total": total}

    @staticmethod
    def percent_between(before, after):
        """Pure: busy % from two readings, or None when they cannot be compared."""
        if not before or abs(before.get("bootTime", 0) - after["bootTime"]) > 1:
            return None
        total = after["total"] - before["total"]
        busy = after["busy"] - before["busy"]
        if total <= 0 or busy < 0:
            return None
        return round(min(100.0, max(0.0, 100.0 * busy / total)), 2)

    def sample(self, prime_seconds=0.5):
        """Busy % since the previous reading; the first ever waits `prime_seconds` to measure."""
        now = self.read()
        usage = self.percent_between(self.previous, now)
        if usage is None:
            time.sleep(prime_seconds)
            before, now = now, self.read()
            usage = self.percent_between(before, now) or 0.0
        self.previous = now
        return usage


# ===== Collector registry =======================================================================

COLLECTORS = {}


def collector(name, default=True):
    """Register `collect_<name>()` under `name`; `default` says whether it runs unconfigured."""
    def register(func):
        func.default = default
        COLLECTORS[name] = func
        return func
    return register


# ===== System collectors ========================================================================

# Filesystems that hold no user data: counting them would make "fullest disk" meaningless.
PSEUDO_FILESYSTEMS = {
    "tmpfs", "devtmpfs", "overlay", "squashfs", "proc", "sysfs", "cgroup", "cgroup2", "devpts",
    "mqueue", "tracefs", "debugfs", "securityfs", "pstore", "bpf", "autofs", "fusectl",
    "hugetlbfs", "ramfs", "nsfs", "binfmt_misc", "configfs", "efivarfs", "rpc_pipefs", "erofs",
}


@collector("cpu")
def collect_cpu(state):
    """psutil.cpu_times() (from /proc/stat), psutil.getloadavg() (from /proc/loadavg).

    -> {"usage": percent, "load1", "load5", "load15": load averages, "count": logical CPUs}
    """
    load1, load5, load15 = psutil.getloadavg()
    return {
        "usage": state.cpu.sample(),
        "load1": round(load1, 2),
        "load5": round(load5, 2),
        "load15": round(load15, 2),
        "count": psutil.cpu_count() or 1,
    }


@collector("memory")
def collect_memory(state):
    """psutil.virtual_memory() (from /proc/meminfo).

    -> {"total", "used", "free", "available", "cached"} in bytes; cached is 0 where the OS
    has no such figure (Windows, macOS).
    """
    memory = psutil.virtual_memory()
    return {
        "total": memory.total,
        "used": memory.used,
        "free": memory.free,
        "available": memory.available,
        "cached": getattr(memory, "cached", 0),
    }


@collector("disk")
def collect_disk(state):
    """psutil.disk_partitions() + disk_usage() per mount (from /proc/self/mounts, statvfs).

    -> [{"mountpoint", "device", "fstype", "total", "used", "free" (bytes), "percent"}]
    Pseudo filesystems are left out; a mount we may not stat (permissions, a dead NFS server)
    is skipped rather than failing the whole collector.
    """
    disks = []
    for part in psutil.disk_partitions(all=False):
        if part.fstype in PSEUDO_FILESYSTEMS or "cdrom" in part.opts:
            continue
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        disks.append({
            "mountpoint": part.mountpoint,
            "device": part.device,
            "fstype": part.fstype,
            "total": usage.total,
            "used": usage.used,
            "free": usage.free,
            "percent": usage.percent,
        })
    return disks


@collector("network")
def collect_network(state):
    """psutil.net_io_counters(pernic=True) (from /proc/net/dev).

    -> [{"interface", "bytesSent", "bytesRecv", "packetsSent", "packetsRecv"}], counters since
    boot; loopback left out.
    """
    interfaces = []
    for name, counters in psutil.net_io_counters(pernic=True).items():
        if name == "lo" or name.lower().startswith("loopback"):
            continue
        interfaces.append({
            "interface": name,
            "bytesSent": counters.bytes_sent,
            "bytesRecv": counters.bytes_recv,
            "packetsSent": counters.packets_sent,
            "packetsRecv": counters.packets_recv,
        })
    return interfaces


class CollectorState:
    """What collectors carry from one sample to the next."""

    def __init__(self, saved=None):
        saved = saved or {}
        self.cpu = CpuUsage(saved.get("cpu"))

    def to_json(self):
        return {"cpu": self.cpu.previous}


def run_collectors(names, state):
    """Run each enabled collector; one that raises is reported and logged once, never fatal.

    -> (metrics, status): metrics maps collector name to its result; status maps each name to
    {"ok": bool, "ms": float, "error": str?}.
    """
    metrics, status = {}, {}
    for name in names:
        func = COLLECTORS.get(name)
        if func is None:
            continue
        started = time.perf_counter()
        try:
            metrics[name] = func(state)
            status[name] = {"ok": True}
            _FAILING_COLLECTORS.discard(name)
        except Exception as err:  # the boundary: one collector must never stop the others
            status[name] = {"ok": False, "error": f"{type(err).__name__}: {err}"[:200]}
            if name not in _FAILING_COLLECTORS:
                log.warning("collector failed name=%s error=%s", name, status[name]["error"])
                _FAILING_COLLECTORS.add(name)
        status[name]["ms"] = round((time.perf_counter() - started) * 1000, 2)
    return metrics, status


_FAILING_COLLECTORS = set()


# ===== Reporter =================================================================================

@dataclasses.dataclass
class Outcome:
    """What became of one request. `status` is 0 when no HTTP answer arrived."""

    status: int
    data: dict = dataclasses.field(default_factory=dict)
    error: str = ""

    @property
    def ok(self):
        return 200 <= self.status < 300


class Reporter:
    """Talks to the panel: one urllib3 pool (a kept-alive connection), explicit timeouts, gzip
    bodies. Never raises for network or HTTP trouble: every call returns an Outcome."""

    def __init__(self, config):
        self.base = config.url
        self.headers = {
            "Authorization": f"Bearer {config.api_key}",
            "Content-Type": "application/json",
            "User-Agent": f"mpanel-agent/{__version__}",
        }
        self.pool = urllib3.PoolManager(
            num_pools=1, maxsize=1,
            timeout=urllib3.Timeout(connect=5.0, read=config.timeout),
            retries=False,
        )

    def request(self, method, path, body=None):
        headers = dict(self.headers)
        payload = None
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            if len(payload) > 1024:
                payload = gzip.compress(payload, compresslevel=6)
                headers["Content-Encoding"] = "gzip"
        try:
            response = self.pool.request(method, self.base + path, body=payload, headers=headers)
        except urllib3.exceptions.HTTPError as err:
            return Outcome(0, error=f"{type(err).__name__}: {_reason(err)}")
        try:
            data = json.loads(response.data or b"{}")
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        error = "" if 200 <= response.status < 300 else data.get("error", response.reason or "")
        return Outcome(response.status, data, error)


def _reason(err):
    return str(getattr(err, "reason", None) or err)[:200]


# ===== The agent ================================================================================

class Agent:
    """Registers, collects, delivers. Loop state (interval, collectors) follows the panel."""

    def __init__(self, config, reporter=None):
        self.config = config
        self.reporter = reporter or Reporter(config)
        self.state = StateFile(config.state_dir)
        self.collector_state = CollectorState(self.state.data.get("counters"))
        self.interval = config.report_interval
        self.collectors = tuple(config.enabled_collectors)
        self.stop_event = threading.Event()
        self.last_delivery = 0.0

    # -- registration and settings --

    def identity(self):
        return {
            "hostname": self.config.resolved_hostname[:255],
            "os": f"{platform.system()} {platform.release()}"[:50],
            "arch": (platform.machine() or "unknown")[:50],
            "version": __version__,
        }

    @property
    def server_id(self):
        return self.state.data.get("serverId")

    def ensure_registered(self):
        """Register when never registered, or when what we registered has changed."""
        identity = self.identity()
        if self.server_id and self.state.data.get("registeredAs") == identity:
            return Outcome(200, {"serverId": self.server_id})
        outcome = self.reporter.request("POST", "/api/agent/register", identity)
        if outcome.ok and isinstance(outcome.data.get("serverId"), int):
            self.state.data["serverId"] = outcome.data["serverId"]
            self.state.data["registeredAs"] = identity
            self.state.save()
            log.info("registered server_id=%s hostname=%s", self.server_id, identity["hostname"])
        else:
            self._log_failure("register", outcome)
        return outcome

    def refresh_settings(self):
        outcome = self.reporter.request("GET", "/api/agent/config")
        if outcome.ok:
            self.apply_settings(outcome.data)
        return outcome

    def apply_settings(self, data):
        interval = data.get("reportInterval", data.get("nextReportIn"))
        if isinstance(interval, int) and 5 <= interval <= 3600 and interval != self.interval:
            log.info("report interval changed from=%s to=%s", self.interval, interval)
            self.interval = interval
        enabled = data.get("metricsEnabled")
        if isinstance(enabled, list):
            known = tuple(name for name in enabled if name in COLLECTORS)
            if known != self.collectors:
                log.info("collectors changed to=%s", ",".join(known))
                self.collectors = known

    # -- one cycle --

    def collect(self):
        metrics, status = run_collectors(self.collectors, self.collector_state)
        self.state.data["counters"] = self.collector_state.to_json()
        return {"serverId": self.server_id, "timestamp": utc_now_iso(), "metrics": metrics,
                "collectors": status}

    def deliver(self, sample):
        outcome = self.reporter.request("POST", "/api/agent/metrics", sample)
        if outcome.ok:
            self.last_delivery = time.monotonic()
            next_in = outcome.data.get("nextReportIn")
            if isinstance(next_in, int):
                self.apply_settings({"nextReportIn": next_in})
        else:
            self._log_failure("metrics", outcome)
        return outcome

    def heartbeat(self):
        outcome = self.reporter.request("POST", "/api/agent/heartbeat",
                                        {"serverId": self.server_id, "timestamp": utc_now_iso()})
        if outcome.ok:
            self.last_delivery = time.monotonic()
        return outcome

    def _log_failure(self, what, outcome):
        if outcome.status == 401:
            log.error("API key rejected by the panel (%s): check controlPanel.apiKey", what)
        elif outcome.status == 0:
            log.warning("panel unreachable request=%s error=%s", what, outcome.error)
        else:
            log.warning("panel refused request=%s status=%s error=%s", what, outcome.status,
                        outcome.error)

    # -- modes --

    def once(self):
        """Collect and deliver one sample; return the process exit code."""
        registered = self.ensure_registered()
        if not registered.ok:
            print(f"error: could not register with the panel: {registered.status or ''} "
                  f"{registered.error}".replace("  ", " "), file=sys.stderr)
            return 1
        sample = self.collect()
        outcome = self.deliver(sample)
        self.state.save()
        if not outcome.ok:
            print(f"error: could not deliver the sample: {outcome.status or ''} "
                  f"{outcome.error}".replace("  ", " "), file=sys.stderr)
            return 1
        return 0

    def run_forever(self):
        """Collect every `interval` seconds until stopped. Between reports longer than a minute,
        heartbeats keep the server from looking offline (the panel's threshold is 5 minutes)."""
        log.info("agent starting version=%s url=%s interval=%s", __version__, self.config.url,
                 self.interval)
        self.refresh_settings()
        now = time.monotonic()
        next_sample, next_heartbeat, next_settings = now, now + HEARTBEAT_EVERY, now + SETTINGS_EVERY
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now >= next_sample:
                if self.ensure_registered().ok:
                    self.deliver(self.collect())
                    self.state.save()
                # After delivering: the answer's nextReportIn may have changed the interval.
                next_sample = now + self.interval
                next_heartbeat = time.monotonic() + HEARTBEAT_EVERY
            elif now >= next_heartbeat:
                if self.server_id:
                    self.heartbeat()
                next_heartbeat = now + HEARTBEAT_EVERY
            if now >= next_settings:
                self.refresh_settings()
                next_settings = now + SETTINGS_EVERY
            wake = min(next_sample, next_heartbeat, next_settings)
            self.stop_event.wait(max(0.0, wake - time.monotonic()))
        self.state.save()
        log.info("agent stopped")
        return 0


HEARTBEAT_EVERY = 60
SETTINGS_EVERY = 3600


# ===== Command line =============================================================================

def build_parser():
    parser = argparse.ArgumentParser(description="mPanel agent: push this server's metrics.")
    parser.add_argument("--config", help=f"config.json (default {default_config_path()})")
    parser.add_argument("--url", help="panel URL, e.g. https://panel.example.com")
    parser.add_argument("--api-key", help="the server's API key (prefer config.json: "
                                          "command lines are visible to other users)")
    parser.add_argument("--state-dir", help="folder for the state file")
    parser.add_argument("--interval", type=int, help="seconds between reports")
    parser.add_argument("--log-level", help="debug, info, warning, error")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="collect, deliver, exit (for cron)")
    mode.add_argument("--print", action="store_true", help="print one payload, send nothing")
    mode.add_argument("--check", action="store_true", help="check config and key, then exit")
    mode.add_argument("--version", action="store_true", help="print the version")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.version:
        print(f"mpanel-agent {__version__}")
        return 0
    flags = {"url": args.url, "api_key": args.api_key, "state_dir": args.state_dir,
             "report_interval": args.interval, "log_level": args.log_level}
    try:
        config = load_config(args.config, flags=flags)
    except (OSError, ValueError, TypeError) as err:
        print(f"error: cannot read the configuration: {err}", file=sys.stderr)
        return 2
    setup_logging(config)

    if args.print:
        agent = Agent(config, reporter=object())
        print(json.dumps(agent.collect(), indent=2))
        return 0

    problems = config.problems()
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    agent = Agent(config)

    if args.check:
        outcome = agent.reporter.request("GET", "/api/agent/config")
        if outcome.ok:
            print(f"ok: {config.url} accepted the key; reportInterval="
                  f"{outcome.data.get('reportInterval')}")
            return 0
        reason = "API key rejected" if outcome.status == 401 else \
            (outcome.error or f"HTTP {outcome.status}")
        print(f"error: {config.url}: {reason}", file=sys.stderr)
        return 1

    if args.once:
        return agent.once()

    def stop(signum, frame):
        log.info("signal received signal=%s", signum)
        agent.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return agent.run_forever()


if __name__ == "__main__":
    sys.exit(main())
