"""The systemd unit shipped in install/: it runs agent.py with the config, restarts it, and
keeps the hardening the threat model relies on. (No systemd runs here; issue 6 adds
`systemd-analyze verify` where available.)"""
import configparser
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "install" / "mpanel-agent.service"


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
