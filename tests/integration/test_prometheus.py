"""GET /metrics over real HTTP from a real panel (Waitress, its own process), on SQLite and on
PostgreSQL: off by default, behind a Bearer token when on, and what it answers parses as
Prometheus parses it, hostile hostnames included."""
import datetime
import gzip
import secrets

import pytest
from prometheus_client.parser import text_string_to_metric_families

from panel import models
from panel.db import utcnow
from tests.conftest import http_request, new_server, start_panel, stop_panel
from tests.integration.test_api import assert_error, post, sample

TOKEN = secrets.token_urlsafe(32)
HOSTILE_HOSTNAME = '"><script>alert(1)</script>\\ "} 1\nmpanel_up{server="evil"} 1'
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@pytest.fixture(scope="module")
def metrics_panel(backend_url, tmp_path_factory):
    """A panel of its own with MPANEL_METRICS_TOKEN set, on the run's database of this backend
    (another replica, as in production); tests wipe the rows through `database`."""
    log_path = tmp_path_factory.mktemp("metrics-panel") / "panel.log"
    panel = start_panel(backend_url, log_path, extra_env={"MPANEL_METRICS_TOKEN": TOKEN,
                                                          "MPANEL_JOB_INTERVAL": "0"})
    yield panel
    stop_panel(panel)


@pytest.fixture
def scraper(metrics_panel, database):
    """GET /metrics with the right token (or `token`), on a clean database."""
    def scrape(token=TOKEN, headers=None):
        auth = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return http_request(metrics_panel, "GET", "/metrics", headers={**auth, **(headers or {})})
    return scrape


def parse(response):
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for item in family.samples:
            samples.setdefault(item.name, []).append((item.labels, item.value))
    return samples


def value(samples, name, **label_filter):
    matches = [v for labels, v in samples.get(name, [])
               if all(labels.get(k) == want for k, want in label_filter.items())]
    assert len(matches) == 1, (name, label_filter, samples.get(name))
    return matches[0]


def reporting_server(panel, name, hostname):
    """A server whose agent registered with `hostname` and sent the API tests' sample."""
    server, key = new_server(name)
    answer = post(panel, "/api/agent/register", key, {"hostname": hostname, "os": "Linux 6.1",
                                                      "arch": "x86_64", "version": "0.2.0"})
    assert answer.status == 200, answer.text
    answer = post(panel, "/api/agent/metrics", key, sample(server.id))
    assert answer.status == 200, answer.text
    return server


# ===== Off, and the token =======================================================================

def test_metrics_are_off_without_a_token_and_say_how_to_turn_them_on(panel):
    response = http_request(panel, "GET", "/metrics", headers={"Authorization": "Bearer x"})
    assert_error(response, 404, words="MPANEL_METRICS_TOKEN")


def test_scrape_without_a_token_is_401_with_a_bearer_challenge(scraper):
    response = scraper(token=None)
    assert_error(response, 401, words="Authorization: Bearer")
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert "mpanel_up" not in response.text


@pytest.mark.parametrize("authorization", [
    f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Bearer {TOKEN.upper()}", "Bearer ",
    f"Basic {TOKEN}", f"Token {TOKEN}", TOKEN,
])
def test_scrape_with_a_wrong_token_is_401(scraper, authorization):
    response = scraper(token=None, headers={"Authorization": authorization})
    assert_error(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer ")


def test_the_token_is_never_logged(metrics_panel, scraper):
    scraper(token=None)
    scraper(token="wrong-" + TOKEN)
    assert scraper().status == 200
    log = metrics_panel.log_text()
    assert TOKEN not in log
    assert "metrics scrape refused" in log


# ===== What a scrape says =======================================================================

def test_scrape_gives_each_servers_latest_figures_in_the_text_format(metrics_panel, scraper):
    server = reporting_server(metrics_panel, "web-1", "web-1.example.com")
    new_server("db-new")  # created, never reported
    models.Alert.create(server=server.id, rule="cpu", open_key="cpu", state="firing",
                        started_at=utcnow(), message="CPU above 90 %")

    response = scraper()
    assert response.status == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    assert response.headers["cache-control"] == "no-store"
    samples = parse(response)
    web = {"server": "web-1", "hostname": "web-1.example.com"}
    assert value(samples, "mpanel_up", **web) == 1
    assert value(samples, "mpanel_up", server="db-new") == 0
    assert value(samples, "mpanel_cpu_usage_ratio", **web) == 0.125
    assert value(samples, "mpanel_load1", **web) == 0.5
    assert value(samples, "mpanel_memory_total_bytes", **web) == 8 << 30
    assert value(samples, "mpanel_memory_used_bytes", **web) == 2 << 30
    assert value(samples, "mpanel_disk_max_used_ratio", **web) == 0.4
    assert value(samples, "mpanel_network_receive_bytes_per_second", **web) == 7.5
    assert value(samples, "mpanel_network_transmit_bytes_per_second", **web) == 5.0
    assert value(samples, "mpanel_network_receive_bytes_total", **web) == 2000
    assert value(samples, "mpanel_disk_written_bytes_per_second", **web) == 20.0
    assert value(samples, "mpanel_processes", **web) == 80
    assert value(samples, "mpanel_filesystem_used_bytes", mountpoint="/", device="/dev/vda",
                 fstype="ext4", **web) == 40 << 30
    assert value(samples, "mpanel_filesystem_used_ratio", mountpoint="/", **web) == 0.4
    assert value(samples, "mpanel_alerts_firing", **web) == 1
    assert value(samples, "mpanel_alerts_firing", server="db-new") == 0
    assert value(samples, "mpanel_agent_info", version="0.2.0", status="active", **web) == 1
    seen = value(samples, "mpanel_last_seen_timestamp_seconds", **web)
    assert abs(seen - datetime.datetime.now(datetime.timezone.utc).timestamp()) < 60
    assert "mpanel_cpu_usage_ratio" in response.text and "NaN" not in response.text
    assert {labels["state"]: v for labels, v in samples["mpanel_servers"]} == \
        {"online": 1, "offline": 0, "never_seen": 1}


def test_hostile_server_names_and_hostnames_are_escaped(metrics_panel, scraper):
    reporting_server(metrics_panel, 'o"brien\\web', HOSTILE_HOSTNAME)
    response = scraper()
    assert response.status == 200
    samples = parse(response)
    assert value(samples, "mpanel_up", server='o"brien\\web', hostname=HOSTILE_HOSTNAME) == 1
    assert [labels["server"] for labels, _ in samples["mpanel_up"]] == ['o"brien\\web']
    assert value(samples, "mpanel_cpu_usage_ratio", hostname=HOSTILE_HOSTNAME) == 0.125
    for line in response.text.splitlines():
        assert line.startswith(("# HELP mpanel_", "# TYPE mpanel_", "mpanel_")), line


def test_a_silent_servers_figures_are_left_out(metrics_panel, scraper):
    server = reporting_server(metrics_panel, "quiet", "quiet.example.com")
    long_ago = utcnow() - datetime.timedelta(hours=1)
    models.Agent.update(last_seen=long_ago).where(models.Agent.server == server.id).execute()
    samples = parse(scraper())
    assert value(samples, "mpanel_up", server="quiet") == 0
    assert "mpanel_cpu_usage_ratio" not in samples
    assert value(samples, "mpanel_last_sample_timestamp_seconds", server="quiet") > 0
    assert {labels["state"]: v for labels, v in samples["mpanel_servers"]}["offline"] == 1


def test_a_large_answer_is_gzipped_when_prometheus_asks(metrics_panel, scraper):
    for index in range(3):
        reporting_server(metrics_panel, f"web-{index}", f"web-{index}.example.com")
    plain = scraper()
    zipped = scraper(headers={"Accept-Encoding": "gzip"})
    assert zipped.status == 200 and zipped.headers.get("content-encoding") == "gzip"
    assert "content-encoding" not in plain.headers
    assert len(zipped.body) < len(plain.body) / 3
    assert gzip.decompress(zipped.body) == plain.body


# ===== Bounds, and Prometheus's own checker =====================================================

def test_a_hostile_agent_cannot_bloat_the_scrape(metrics_panel, scraper):
    """An agent reporting 250 mounts with ~4 KB paths (one scrape of 3.9 MB, issue 10) adds at
    most MOUNTS_PER_SERVER mounts with label values of LABEL_VALUE_MAX characters, and the
    scrape says what it cut."""
    from panel import prometheus

    server, key = new_server("hoarder")
    assert post(metrics_panel, "/api/agent/register", key,
                {"hostname": "h" * 255, "os": "Linux", "arch": "x86_64",
                 "version": "0.2.0"}).status == 200
    mounts = [{"mountpoint": "/" + "m" * 3790 + f"{index:05d}", "device": "/dev/vda",
               "fstype": "ext4", "total": 100 << 30, "used": 40 << 30, "free": 60 << 30,
               "percent": 40.0} for index in range(250)]
    document = sample(server.id)
    document["metrics"]["disk"]["mounts"] = mounts
    answer = post(metrics_panel, "/api/agent/metrics", key, document)
    assert answer.status == 200, answer.text

    response = scraper()
    assert response.status == 200
    assert len(response.body) < 100_000, len(response.body)
    samples = parse(response)
    series = samples["mpanel_filesystem_size_bytes"]
    assert len(series) == len({labels["mountpoint"] for labels, _ in series}) == \
        prometheus.MOUNTS_PER_SERVER
    assert all(len(v) <= prometheus.LABEL_VALUE_MAX
               for labels, _ in sum(samples.values(), []) for v in labels.values())
    assert value(samples, "mpanel_filesystems_omitted", server="hoarder") == \
        250 - prometheus.MOUNTS_PER_SERVER
    assert value(samples, "mpanel_label_values_truncated") == 1 + prometheus.MOUNTS_PER_SERVER


def test_promtool_finds_a_real_scrape_clean(metrics_panel, scraper, tmp_path):
    """Debian's `promtool check metrics` (what Prometheus 2.42 itself would say) on the body of a
    real scrape: servers up, silent and never seen, a firing alert, hostile labels, cut labels.
    No error, no lint warning."""
    import shutil
    import subprocess

    from tests.conftest import require

    promtool = shutil.which("promtool")
    require("promtool", promtool, "install Debian's prometheus package (.ci/run does)")
    server = reporting_server(metrics_panel, "web-1", "web-1.example.com")
    reporting_server(metrics_panel, 'o"brien\\web', HOSTILE_HOSTNAME)
    reporting_server(metrics_panel, "long", "x" * 255)
    new_server("db-new")
    models.Alert.create(server=server.id, rule="cpu", open_key="cpu", state="firing",
                        started_at=utcnow(), message="CPU above 90 %")
    response = scraper()
    assert response.status == 200
    checked = subprocess.run([promtool, "check", "metrics"], input=response.body,
                             capture_output=True, timeout=60)
    assert checked.returncode == 0 and not checked.stdout.strip() and \
        not checked.stderr.strip(), (checked.returncode, checked.stdout, checked.stderr)
