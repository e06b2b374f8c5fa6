"""Panel settings: defaults, overridden by MPANEL_* environment variables.

One frozen object is built at start-up and handed to `create_app()`; nothing reads the
environment after that, so tests can build as many differently-configured apps as they like.

| variable                   | default                                   | meaning                                 |
|----------------------------|-------------------------------------------|-----------------------------------------|
| MPANEL_DATA_DIR            | ./data                                    | embedded database and local files       |
| MPANEL_DATABASE_URL        | sqlite:///<data dir>/mpanel.db            | `sqlite:///path` or `postgresql://...`  |
| MPANEL_HOST / MPANEL_PORT  | 127.0.0.1 / 8080                          | where `serve` listens                   |
| MPANEL_THREADS             | 8                                         | Waitress worker threads                 |
| MPANEL_REPORT_INTERVAL     | 60                                        | seconds between agent reports           |
| MPANEL_OFFLINE_AFTER       | 300                                       | seconds of silence before "offline"     |
| MPANEL_METRICS_ENABLED     | cpu,memory,disk,network,processes,services | collectors the agents may run          |
| MPANEL_BCRYPT_ROUNDS       | 12                                        | cost of new key and password hashes     |
| MPANEL_MAX_BODY_BYTES      | 1048576                                   | largest request body, before and after gzip |
| MPANEL_SESSION_HOURS       | 12                                        | admin login lifetime                    |
"""
import dataclasses
import os
from pathlib import Path

DEFAULT_COLLECTORS = ("cpu", "memory", "disk", "network", "processes", "services")


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    threads: int = 8
    report_interval: int = 60
    offline_after: int = 300
    metrics_enabled: tuple = DEFAULT_COLLECTORS
    bcrypt_rounds: int = 12
    max_body_bytes: int = 1024 * 1024
    session_hours: int = 12

    def __post_init__(self):
        if not self.database_url:
            url = "sqlite:///" + str((Path(self.data_dir) / "mpanel.db").resolve())
            object.__setattr__(self, "database_url", url)
        if not 4 <= self.bcrypt_rounds <= 31:
            raise ValueError("MPANEL_BCRYPT_ROUNDS must be between 4 and 31")
        if not 1 <= self.report_interval <= 3600:
            # Below 10 s is for tests and demos; 60 s is the production default.
            raise ValueError("MPANEL_REPORT_INTERVAL must be between 1 and 3600 seconds")


def _int(env, name, default):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


def from_env(env=None, **overrides):
    """Build Settings from the environment; keyword overrides win (the CLI's flags)."""
    env = os.environ if env is None else env
    collectors = env.get("MPANEL_METRICS_ENABLED")
    values = dict(
        data_dir=Path(env.get("MPANEL_DATA_DIR") or "data"),
        database_url=env.get("MPANEL_DATABASE_URL", ""),
        host=env.get("MPANEL_HOST") or "127.0.0.1",
        port=_int(env, "MPANEL_PORT", 8080),
        threads=_int(env, "MPANEL_THREADS", 8),
        report_interval=_int(env, "MPANEL_REPORT_INTERVAL", 60),
        offline_after=_int(env, "MPANEL_OFFLINE_AFTER", 300),
        metrics_enabled=tuple(c.strip() for c in collectors.split(",") if c.strip())
        if collectors else DEFAULT_COLLECTORS,
        bcrypt_rounds=_int(env, "MPANEL_BCRYPT_ROUNDS", 12),
        max_body_bytes=_int(env, "MPANEL_MAX_BODY_BYTES", 1024 * 1024),
        session_hours=_int(env, "MPANEL_SESSION_HOURS", 12),
    )
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)
