"""Panel settings: defaults, overridden by an optional settings file, overridden by MPANEL_*
environment variables (and the CLI's flags).

The settings file (`python -m panel --config FILE`, or MPANEL_CONFIG=FILE) holds the same
MPANEL_* names as `KEY=value` lines, `#` comments allowed: the format of systemd's
EnvironmentFile, so /etc/mpanel/panel.env serves both the unit and a hand-run CLI. A process
reads it once (apply_env_file) and hands its values on to the processes it starts.

One frozen object is built at start-up and handed to `create_app()`; nothing reads the
environment after that, so tests can build as many differently-configured apps as they like.

Every setting, its default and meaning: README.md, section "Configuration" (one table;
tests/unit/test_settings.py checks that it names every MPANEL_* variable the panel reads).
"""
import dataclasses
import ipaddress
import os
import secrets
from pathlib import Path

# The concept "which collectors agents run" has one name: enabled collectors (the agent's
# agent.enabledCollectors, this module's enabled_collectors, MPANEL_ENABLED_COLLECTORS); on the
# wire it is GET /api/agent/config's `metricsEnabled`, as docs/protocol.md fixes it.
ENABLED_COLLECTORS_ALIASES = ("MPANEL_METRICS_ENABLED",)  # deprecated, still read
SMTP_TLS_MODES = ("starttls", "implicit", "none")  # MPANEL_SMTP_TLS; alerts.send_email
AGENT_FILE = Path(__file__).resolve().parent.parent / "agent.py"  # MPANEL_AGENT_FILE's default


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    threads: int = 8
    workers: int = 1
    connection_limit: int = 4000
    header_timeout: int = 10
    body_timeout: int = 60
    idle_timeout: int = 180
    report_interval: int = 60
    offline_after: int = 300
    # Empty: not narrowed, agents run whatever collectors they have (the agent's registry is
    # the only list of them); a list switches off every collector it does not name.
    enabled_collectors: tuple = ()
    bcrypt_rounds: int = 12
    max_body_bytes: int = 1024 * 1024
    session_hours: int = 12
    key_grace_hours: float = 24
    secret_key: str = dataclasses.field(default="", repr=False)
    auth_failure_limit: int = 10
    trusted_proxies: tuple = ()
    # The networks customers' webhook and Apprise channels may reach besides public addresses
    # (outbound.py); staff channels reach anything.
    allow_channel_networks: tuple = ()
    allow_http: bool = False
    job_interval: float = 15.0
    retention_raw_days: int = 7
    retention_5m_days: int = 90
    retention_1h_days: int = 730
    public_url: str = ""
    login_failure_limit: int = 5
    # Staff (admin, viewer) without two-factor are sent to enrol before any other page
    # (auth.two_factor_required).
    require_staff_two_factor: bool = False
    metrics_token: str = dataclasses.field(default="", repr=False)
    # The agent.py this panel ships: served at /downloads/agent.py and in bundles, and what a
    # rollout offers (panel/upgrades.py derives its version and SHA-256 from the file).
    agent_file: Path = AGENT_FILE
    smtp: dict = dataclasses.field(default_factory=dict, repr=False)  # holds a password

    def __post_init__(self):
        if not self.database_url:
            url = "sqlite:///" + str((Path(self.data_dir) / "mpanel.db").resolve())
            object.__setattr__(self, "database_url", url)
        if not 4 <= self.bcrypt_rounds <= 31:
            raise ValueError("MPANEL_BCRYPT_ROUNDS must be between 4 and 31")
        proxies = tuple(ipaddress.ip_network(p.strip(), strict=False)
                        for p in self.trusted_proxies if str(p).strip())
        object.__setattr__(self, "trusted_proxies", proxies)
        object.__setattr__(self, "allow_channel_networks",
                           networks(self.allow_channel_networks, "MPANEL_ALLOW_CHANNEL_NETWORKS"))
        if min(self.retention_raw_days, self.retention_5m_days, self.retention_1h_days) < 1:
            raise ValueError("retention periods are at least 1 day")
        if self.workers < 1:
            raise ValueError("MPANEL_WORKERS must be 1 or more")
        if self.connection_limit < 1:
            raise ValueError("MPANEL_CONNECTION_LIMIT must be 1 or more")
        if not 1 <= self.header_timeout <= self.body_timeout:
            raise ValueError("MPANEL_HEADER_TIMEOUT must be at least 1 second and at most "
                             "MPANEL_BODY_TIMEOUT")
        if self.idle_timeout < 1:
            raise ValueError("MPANEL_IDLE_TIMEOUT must be at least 1 second")
        if self.smtp.get("tls", "starttls") not in SMTP_TLS_MODES:
            raise ValueError(f"MPANEL_SMTP_TLS must be {', '.join(SMTP_TLS_MODES)}, got "
                             f"{self.smtp['tls']!r}")
        if not 1 <= self.report_interval <= 3600:
            # Below 10 s is for tests and demos; 60 s is the production default.
            raise ValueError("MPANEL_REPORT_INTERVAL must be between 1 and 3600 seconds")


def networks(values, name):
    """CIDR networks (or single addresses) -> a tuple of ip_network; a bad one names `name`."""
    try:
        return tuple(ipaddress.ip_network(str(value).strip(), strict=False)
                     for value in values if str(value).strip())
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def secret_bytes(settings):
    """The panel's secret: MPANEL_SECRET_KEY, else a random one kept in the data folder (mode
    0600). Replicas must share it, so set MPANEL_SECRET_KEY when running more than one."""
    if settings.secret_key:
        return settings.secret_key.encode()
    path = Path(settings.data_dir) / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip().encode()


def _int(env, name, default):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


def _flag(env, name):
    return (env.get(name) or "").lower() in ("1", "true", "yes")


def read_env_file(path):
    """KEY=value lines -> dict. Blank lines and # comments are skipped; a value may be quoted
    with ' or "; `export KEY=value` is accepted. Anything else is an error naming the line."""
    values = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.replace("_", "").isalnum():
            raise ValueError(f"{path}:{number}: expected KEY=value, got {line[:40]!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def apply_env_file(path, env=None):
    """Fill in from the settings file what the environment (`env`, os.environ) does not set;
    the environment wins. The one read of the file in a process: MPANEL_CONFIG is taken out of
    the environment, so from_env() and the processes this one starts (serve's workers,
    run-local's panel) inherit the file's values instead of reading it again."""
    env = os.environ if env is None else env
    for key, value in read_env_file(path).items():
        env.setdefault(key, value)
    env.pop("MPANEL_CONFIG", None)


def from_env(env=None, config_file=None, **overrides):
    """Build Settings from the settings file (if any) under the environment; keyword
    overrides win (the CLI's flags)."""
    env = os.environ if env is None else env
    config_file = config_file or env.get("MPANEL_CONFIG")
    if config_file:
        env = {**read_env_file(config_file), **env}
    collectors = next((env[name] for name in ("MPANEL_ENABLED_COLLECTORS",
                                              *ENABLED_COLLECTORS_ALIASES) if env.get(name)), "")
    values = dict(
        data_dir=Path(env.get("MPANEL_DATA_DIR") or "data"),
        database_url=env.get("MPANEL_DATABASE_URL", ""),
        host=env.get("MPANEL_HOST") or "127.0.0.1",
        port=_int(env, "MPANEL_PORT", 8080),
        threads=_int(env, "MPANEL_THREADS", 8),
        workers=_int(env, "MPANEL_WORKERS", 1),
        connection_limit=_int(env, "MPANEL_CONNECTION_LIMIT", 4000),
        header_timeout=_int(env, "MPANEL_HEADER_TIMEOUT", 10),
        body_timeout=_int(env, "MPANEL_BODY_TIMEOUT", 60),
        idle_timeout=_int(env, "MPANEL_IDLE_TIMEOUT", 180),
        report_interval=_int(env, "MPANEL_REPORT_INTERVAL", 60),
        offline_after=_int(env, "MPANEL_OFFLINE_AFTER", 300),
        enabled_collectors=tuple(c.strip() for c in collectors.split(",") if c.strip()),
        bcrypt_rounds=_int(env, "MPANEL_BCRYPT_ROUNDS", 12),
        max_body_bytes=_int(env, "MPANEL_MAX_BODY_BYTES", 1024 * 1024),
        session_hours=_int(env, "MPANEL_SESSION_HOURS", 12),
        key_grace_hours=float(env.get("MPANEL_KEY_GRACE_HOURS") or 24),
        secret_key=env.get("MPANEL_SECRET_KEY", ""),
        auth_failure_limit=_int(env, "MPANEL_AUTH_FAILURE_LIMIT", 10),
        trusted_proxies=tuple((env.get("MPANEL_TRUSTED_PROXIES") or "").split(",")),
        allow_channel_networks=tuple((env.get("MPANEL_ALLOW_CHANNEL_NETWORKS") or "").split(",")),
        allow_http=_flag(env, "MPANEL_ALLOW_HTTP"),
        job_interval=float(env.get("MPANEL_JOB_INTERVAL") or 15),
        retention_raw_days=_int(env, "MPANEL_RETENTION_RAW_DAYS", 7),
        retention_5m_days=_int(env, "MPANEL_RETENTION_5M_DAYS", 90),
        retention_1h_days=_int(env, "MPANEL_RETENTION_1H_DAYS", 730),
        public_url=(env.get("MPANEL_PUBLIC_URL") or "").rstrip("/"),
        login_failure_limit=_int(env, "MPANEL_LOGIN_FAILURE_LIMIT", 5),
        require_staff_two_factor=_flag(env, "MPANEL_REQUIRE_STAFF_TWO_FACTOR"),
        metrics_token=env.get("MPANEL_METRICS_TOKEN", ""),
        agent_file=Path(env.get("MPANEL_AGENT_FILE") or AGENT_FILE),
        smtp={
            "host": env.get("MPANEL_SMTP_HOST", ""),
            "port": _int(env, "MPANEL_SMTP_PORT", 587),
            "user": env.get("MPANEL_SMTP_USER", ""),
            "password": env.get("MPANEL_SMTP_PASSWORD", ""),
            "sender": env.get("MPANEL_SMTP_FROM", "mpanel@localhost"),
            "tls": (env.get("MPANEL_SMTP_TLS") or "starttls").lower(),
            "cafile": env.get("MPANEL_SMTP_CAFILE", ""),
        },
    )
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)
