"""Panel settings from the environment."""
import pytest

from panel import settings


def test_defaults_put_the_embedded_database_in_the_data_folder(tmp_path):
    s = settings.from_env({"MPANEL_DATA_DIR": str(tmp_path)})
    assert s.database_url == "sqlite:///" + str(tmp_path / "mpanel.db")
    assert (s.host, s.port, s.report_interval, s.offline_after) == ("127.0.0.1", 8080, 60, 300)
    assert s.bcrypt_rounds == 12


def test_environment_and_flags_override():
    s = settings.from_env({"MPANEL_PORT": "9000", "MPANEL_DATABASE_URL": "postgresql://x/y",
                           "MPANEL_METRICS_ENABLED": "cpu, memory"}, port=9100)
    assert s.port == 9100
    assert s.database_url == "postgresql://x/y"
    assert s.enabled_collectors == ("cpu", "memory")


def test_enabled_collectors_are_not_narrowed_unless_an_admin_says_so():
    """Unset: agents run whatever collectors they have, so a new one is on without a second
    list here. MPANEL_ENABLED_COLLECTORS is the name; MPANEL_METRICS_ENABLED still works."""
    assert settings.from_env({}).enabled_collectors == ()
    assert settings.from_env({"MPANEL_ENABLED_COLLECTORS": "cpu,services"}).enabled_collectors \
        == ("cpu", "services")
    both = {"MPANEL_ENABLED_COLLECTORS": "disk", "MPANEL_METRICS_ENABLED": "cpu"}
    assert settings.from_env(both).enabled_collectors == ("disk",)


@pytest.mark.parametrize("env,message", [
    ({"MPANEL_PORT": "eighty"}, "MPANEL_PORT"),
    ({"MPANEL_BCRYPT_ROUNDS": "3"}, "MPANEL_BCRYPT_ROUNDS"),
    ({"MPANEL_REPORT_INTERVAL": "0"}, "MPANEL_REPORT_INTERVAL"),
    ({"MPANEL_WORKERS": "0"}, "MPANEL_WORKERS"),
    ({"MPANEL_CONNECTION_LIMIT": "0"}, "MPANEL_CONNECTION_LIMIT"),
    ({"MPANEL_HEADER_TIMEOUT": "0"}, "MPANEL_HEADER_TIMEOUT"),
    ({"MPANEL_HEADER_TIMEOUT": "30", "MPANEL_BODY_TIMEOUT": "20"}, "MPANEL_BODY_TIMEOUT"),
    ({"MPANEL_IDLE_TIMEOUT": "0"}, "MPANEL_IDLE_TIMEOUT"),
    ({"MPANEL_SMTP_TLS": "ssl"}, "MPANEL_SMTP_TLS"),  # was plain SMTP, the login in clear
])
def test_bad_values_are_named(env, message):
    with pytest.raises(ValueError, match=message):
        settings.from_env(env)


def test_the_readme_table_names_every_setting_the_panel_reads():
    """One reference table (README, "Configuration") for every MPANEL_* variable read anywhere
    in the panel, and nothing in it that the panel does not read."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    read = set()
    for source in (root / "panel").glob("*.py"):
        read |= set(re.findall(r'"(MPANEL_[A-Z0-9_]+)"', source.read_text()))
    read -= {"MPANEL_AGENT_URL", "MPANEL_AGENT_API_KEY",  # the agent's, written by make run
             "MPANEL_WORKER_INDEX", "MPANEL_REUSE_PORT"}  # set by serve for its own workers
    readme = (root / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(MPANEL_[A-Z0-9_]+)`", table))
    assert read - documented == set(), "undocumented"
    assert documented - read == set(), "documented but never read"


def test_settings_file_lines(tmp_path):
    path = tmp_path / "panel.env"
    path.write_text("# comment\n\nMPANEL_PORT=9001\nexport MPANEL_HOST=\"0.0.0.0\"\n"
                    "MPANEL_SECRET_KEY='a b#c'\n")
    assert settings.read_env_file(path) == {"MPANEL_PORT": "9001", "MPANEL_HOST": "0.0.0.0",
                                            "MPANEL_SECRET_KEY": "a b#c"}
    assert settings.from_env({"MPANEL_HOST": "127.0.0.2"}, config_file=path).host == "127.0.0.2"
    assert settings.from_env({}, config_file=path).port == 9001
    path.write_text("not a setting\n")
    with pytest.raises(ValueError, match="panel.env:1"):
        settings.read_env_file(path)
