"""The systemd unit shipped in install/: it runs agent.py with the config, restarts it, and
keeps the hardening the threat model relies on; install.sh carries the same unit. (No systemd
runs here: tests/integration/test_install_sh.py runs `systemd-analyze verify` on the installed
unit where systemd-analyze exists.)"""
import configparser
import re
from pathlib import Path

INSTALL = Path(__file__).resolve().parents[2] / "install"
UNIT = INSTALL / "mpanel-agent.service"


def load_unit():
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(UNIT.read_text())
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
