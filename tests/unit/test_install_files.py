"""The systemd units shipped in install/ and the production examples in docs/examples/.

The agent's unit runs agent.py with the config, restarts it, and keeps the hardening the threat
model (docs/security.md) relies on; install.sh carries the same unit. The panel's unit migrates
then serves from its venv with the settings file, hardened but free to listen. (No systemd runs
here: tests/integration/test_install_sh.py and test_reverse_proxy.py run `systemd-analyze
verify` on the units where systemd-analyze exists, and test_reverse_proxy.py runs the nginx
and Caddy examples for real.)"""
import configparser
import ipaddress
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "install"
UNIT = INSTALL / "mpanel-agent.service"
PANEL_UNIT = INSTALL / "mpanel-panel.service"
EXAMPLES = ROOT / "docs" / "examples"


def load_unit(path=UNIT):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return parser


def test_unit_runs_the_agent_with_its_config_and_restarts_it():
    service = load_unit()["Service"]
    assert "-m agent --config /etc/mpanel-agent/config.json" in service["ExecStart"]
    assert service["WorkingDirectory"] == "/opt/mpanel-agent"
    assert service["Restart"] == "always"
    assert service["User"] == "mpanel-agent"


def test_unit_is_hardened():
    service = load_unit()["Service"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "PrivateTmp": "yes", "CapabilityBoundingSet": ""}.items():
        assert service[key] == value, key
    assert "/var/lib/mpanel-agent" in service["ReadWritePaths"]


def test_install_sh_embeds_exactly_the_shipped_unit():
    """install.sh must work piped from the panel with no file beside it, so it carries the unit
    in a heredoc; this keeps that copy and install/mpanel-agent.service one and the same."""
    script = (INSTALL / "install.sh").read_text()
    embedded = re.search(r"<<'UNIT' \|\| true\n(.*?)^UNIT$", script, re.S | re.M)
    assert embedded, "install.sh has no UNIT heredoc"
    assert embedded.group(1) == UNIT.read_text()


# ===== The panel's unit and its settings file ===================================================

PANEL_PYTHON = "/opt/mpanel/.venv/bin/python"


def test_panel_unit_migrates_then_serves_from_its_venv_with_the_settings_file():
    service = load_unit(PANEL_UNIT)["Service"]
    assert service["ExecStartPre"] == f"{PANEL_PYTHON} -m panel migrate"
    assert service["ExecStart"] == f"{PANEL_PYTHON} -m panel serve"
    assert service["WorkingDirectory"] == "/opt/mpanel"
    # No leading "-": a missing settings file stops the start instead of serving on defaults.
    assert service["EnvironmentFile"] == "/etc/mpanel/panel.env"
    assert service["User"] == "mpanel" and service["Group"] == "mpanel"
    assert service["Restart"] == "always"
    assert service["StateDirectory"] == "mpanel"
    assert "MPANEL_DATA_DIR=/var/lib/mpanel" in shlex.split(service["Environment"])


def test_panel_unit_runs_commands_the_cli_has():
    from panel.__main__ import build_parser

    service = load_unit(PANEL_UNIT)["Service"]
    for line in (service["ExecStartPre"], service["ExecStart"]):
        words = line.split(" -m panel ", 1)[1].split()
        try:
            build_parser().parse_args(words)
        except SystemExit:
            pytest.fail(f"`python -m panel {' '.join(words)}` is not a command of the CLI")


def test_panel_unit_is_hardened_but_may_listen_and_connect():
    service = load_unit(PANEL_UNIT)["Service"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "PrivateDevices": "yes",
                       "CapabilityBoundingSet": "", "AmbientCapabilities": ""}.items():
        assert service[key] == value, key
    # Waitress listens on TCP; PostgreSQL is reached over TCP or its unix socket.
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(service["RestrictAddressFamilies"].split())
    for absent in ("PrivateNetwork", "IPAddressDeny", "ReadWritePaths"):
        assert absent not in service, f"{absent}: the state directory is all it may write"


def read_example_env():
    from panel import settings

    return settings.read_env_file(EXAMPLES / "panel.env")


def test_example_settings_file_is_what_the_panel_reads():
    from panel import settings

    config = settings.from_env(env={}, config_file=EXAMPLES / "panel.env")
    assert config.database_url.startswith("postgresql://")
    assert str(config.data_dir) == "/var/lib/mpanel"
    assert (config.host, config.port) == ("127.0.0.1", 8080)
    assert config.trusted_proxies == (ipaddress.ip_network("127.0.0.1/32"),)
    assert config.public_url == "https://panel.example.com"
    assert not config.secret_key, "an example must not ship a secret"
    source = "".join(path.read_text() for path in (ROOT / "panel").glob("*.py"))
    for name in read_example_env():
        assert f'"{name}"' in source, f"{name} is set in panel.env but read nowhere"


def test_proxy_examples_point_at_the_panel_and_let_its_largest_body_through():
    env = read_example_env()
    upstream = f"{env['MPANEL_HOST']}:{env['MPANEL_PORT']}"
    nginx = (EXAMPLES / "nginx-mpanel.conf").read_text()
    caddy = (EXAMPLES / "Caddyfile").read_text()
    assert f"server {upstream} " in nginx
    assert f"reverse_proxy {upstream} " in caddy
    panel_limit = int(env["MPANEL_MAX_BODY_BYTES"])
    nginx_limit = int(re.search(r"client_max_body_size (\d+)m;", nginx).group(1)) * 1024 ** 2
    caddy_limit = int(re.search(r"max_size (\d+)MB\b", caddy).group(1)) * 1000 ** 2  # MB: 10^6
    assert nginx_limit >= panel_limit and caddy_limit >= panel_limit


def test_proxy_examples_compress_as_the_panel_does():
    """Same floor and level as compression.py, and nginx's gzip_types are the panel's
    compressible types (Caddy's encode matches text, JSON, JavaScript, XML and SVG itself)."""
    from panel import compression

    nginx = (EXAMPLES / "nginx-mpanel.conf").read_text()
    caddy = (EXAMPLES / "Caddyfile").read_text()
    assert f"gzip_min_length {compression.MIN_BYTES};" in nginx
    assert f"minimum_length {compression.MIN_BYTES}\n" in caddy
    assert f"gzip_comp_level {compression.LEVEL};" in nginx
    assert f"gzip {compression.LEVEL}\n" in caddy
    types = set(re.search(r"gzip_types ([^;]+);", nginx).group(1).split()) | {"text/html"}
    assert all(compression.compressible(kind) for kind in types)
    assert {kind for kind in compression.COMPRESSIBLE_TYPES if not kind.endswith("/*")} <= types
    # The panel's own text types: its downloads and static files.
    from panel import views

    shipped = {kind.partition(";")[0] for _, kind in views.DOWNLOADS.values()}
    assert {kind for kind in shipped if compression.compressible(kind)} <= types
