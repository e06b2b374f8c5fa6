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
    assert s.metrics_enabled == ("cpu", "memory")


@pytest.mark.parametrize("env,message", [
    ({"MPANEL_PORT": "eighty"}, "MPANEL_PORT"),
    ({"MPANEL_BCRYPT_ROUNDS": "3"}, "MPANEL_BCRYPT_ROUNDS"),
    ({"MPANEL_REPORT_INTERVAL": "0"}, "MPANEL_REPORT_INTERVAL"),
])
def test_bad_values_are_named(env, message):
    with pytest.raises(ValueError, match=message):
        settings.from_env(env)
