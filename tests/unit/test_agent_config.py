"""agent.py configuration: defaults <- config.json <- environment <- flags, and its checks."""
import json
import socket
from pathlib import Path

import pytest

import agent

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path, document):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    return str(path)


SEED_SHAPE = {
    "controlPanel": {"url": "https://panel.example.com/", "apiKey": "agent_from_file"},
    "agent": {"reportInterval": 120, "hostname": "auto-detect",
              "enabledCollectors": ["cpu", "memory"], "stateDir": "/tmp/state-from-file"},
    "logging": {"level": "debug", "file": "/tmp/agent.log"},
}


def test_seed_config_shape_is_read(tmp_path):
    config = agent.load_config(write_config(tmp_path, SEED_SHAPE), env={})
    assert config.url == "https://panel.example.com"
    assert config.api_key == "agent_from_file"
    assert config.report_interval == 120
    assert config.enabled_collectors == ("cpu", "memory")
    assert config.state_dir == "/tmp/state-from-file"
    assert (config.log_level, config.log_file) == ("debug", "/tmp/agent.log")


def test_environment_beats_file_and_flags_beat_both(tmp_path):
    path = write_config(tmp_path, SEED_SHAPE)
    env = {"MPANEL_AGENT_URL": "https://env.example.com", "MPANEL_AGENT_API_KEY": "agent_env",
           "MPANEL_AGENT_INTERVAL": "30"}
    config = agent.load_config(path, env=env, flags={"api_key": "agent_flag", "url": None})
    assert config.url == "https://env.example.com"
    assert config.api_key == "agent_flag"
    assert config.report_interval == 30


def test_missing_explicit_config_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        agent.load_config(str(tmp_path / "nope.json"), env={})


def test_auto_detect_hostname_is_this_machine():
    config = agent.Config(url="https://x", api_key="agent_x", hostname="auto-detect")
    assert config.resolved_hostname == socket.gethostname()
    assert agent.Config(hostname="db-7").resolved_hostname == "db-7"


def test_api_key_never_appears_in_repr():
    config = agent.Config(url="https://x", api_key="agent_0123456789ab_secretsecret")
    assert "secretsecret" not in repr(config)


@pytest.mark.parametrize("url,allowed", [
    ("https://panel.example.com", True),
    ("http://127.0.0.1:8080", True),
    ("http://localhost:8080", True),
    ("http://[::1]:8080", True),
    ("http://panel.example.com", False),
    ("http://10.0.0.5", False),
    ("ftp://panel.example.com", False),
])
def test_plain_http_only_to_loopback(url, allowed):
    problems = agent.Config(url=url, api_key="agent_x").problems()
    assert (problems == []) == allowed, problems


def test_plain_http_can_be_allowed_explicitly():
    config = agent.Config(url="http://panel.lan", api_key="agent_x", allow_insecure_http=True)
    assert config.problems() == []


def test_problems_name_what_is_missing():
    problems = " ".join(agent.Config().problems())
    assert "panel URL" in problems and "API key" in problems


def test_unknown_collector_is_a_problem():
    config = agent.Config(url="https://x", api_key="agent_x", enabled_collectors=("cpu", "gpu"))
    assert any("gpu" in p for p in config.problems())


def test_config_example_is_a_valid_seed_shaped_config():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "config.example.json"
    config = agent.load_config(str(path), env={})
    assert config.url == "https://panel.example.com"
    assert config.enabled_collectors == agent.default_collectors()
    assert config.problems() == []


@pytest.mark.parametrize("document, named", [
    ([], "must hold a JSON object"),
    (None, "must hold a JSON object"),
    ({"agent": []}, "agent must be an object"),
    ({"controlPanel": {"url": 5}}, "controlPanel.url must be a string"),
    ({"controlPanel": {"apiKey": ["agent_0123456789ab_SECRET"]}},
     "controlPanel.apiKey must be a string"),
    ({"agent": {"reportInterval": "soon"}}, "agent.reportInterval must be a whole number"),
    ({"agent": {"reportInterval": True}}, "agent.reportInterval must be a whole number"),
    ({"agent": {"enabledCollectors": "cpu"}}, "agent.enabledCollectors must be a list of names"),
    ({"agent": {"allowInsecureHttp": "false"}}, "agent.allowInsecureHttp must be true or false"),
    ({"agent": {"services": []}}, "agent.services must be an object"),
])
def test_config_of_the_wrong_shape_is_refused_naming_the_key(tmp_path, document, named):
    """Before: a traceback (AttributeError, or "false" read as true). The message names the
    key and never repeats its value (it may be the API key)."""
    with pytest.raises(ValueError) as refused:
        agent.load_config(write_config(tmp_path, document), env={})
    assert named in str(refused.value)
    assert "SECRET" not in str(refused.value)


def test_a_bad_environment_value_is_refused_naming_the_variable(tmp_path):
    with pytest.raises(ValueError, match="MPANEL_AGENT_INTERVAL must be a whole number"):
        agent.load_config(write_config(tmp_path, SEED_SHAPE),
                          env={"MPANEL_AGENT_INTERVAL": "sixty"})


def test_the_panel_narrows_collectors_and_an_answer_without_a_list_restores_them(tmp_path):
    """GET /api/agent/config without `metricsEnabled` means "not narrowed": an agent the panel
    narrowed before goes back to its own list; a metrics answer's nextReportIn changes only the
    interval."""
    config = agent.Config(url="https://panel.example.com", api_key="agent_x",
                          state_dir=str(tmp_path), enabled_collectors=("cpu", "memory", "disk"))
    runner = agent.Agent(config)
    try:
        runner.apply_settings({"reportInterval": 30, "metricsEnabled": ["cpu", "network"]})
        assert (runner.interval, runner.collectors) == (30, ("cpu",))
        runner.apply_interval(20)
        assert (runner.interval, runner.collectors) == (20, ("cpu",))
        runner.apply_settings({"reportInterval": 60})
        assert (runner.interval, runner.collectors) == (60, ("cpu", "memory", "disk"))
    finally:
        runner.buffer.close()


def test_the_example_config_and_the_agent_bundle_leave_a_new_collector_on(monkeypatch, tmp_path):
    """config.example.json (the bundle's config.json is made from it) names no collectors: a
    copied list would switch off, on every server installed from it, each collector added
    later."""
    from panel import manage

    monkeypatch.setitem(agent.COLLECTORS, "gpu", agent.CollectorSpec("gpu", None, True,
                                                                     "system"))
    example = agent.load_config(str(ROOT / "config.example.json"), env={})
    bundled = tmp_path / "config.json"
    bundled.write_text(manage.agent_config("https://panel.example.com", "agent_x", 60))
    for config in (example, agent.load_config(str(bundled), env={})):
        assert "gpu" in config.enabled_collectors
