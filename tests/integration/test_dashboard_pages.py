"""The dashboard's pages over real HTTP against the real panel: the server detail page and its
charts, adding and managing servers, the one-time key and the agent bundle, alerts, the security
log, the public status page, roles, CSRF, and agent-supplied text shown as text."""
import datetime
import html
import io
import json
import re
import tarfile

import pytest

from panel import alerts, models, operations, rollups
from tests import synthetic
from tests.conftest import TEST_BCRYPT_ROUNDS, bearer, http_request, new_server, stamp
from tests.integration.test_api import sample
from tests.integration.test_dashboard import PASSWORD, XSS, Browser

HTML = {"Accept": "text/html"}


@pytest.fixture
def admin(panel):
    operations.set_admin("admin", PASSWORD, TEST_BCRYPT_ROUNDS)
    browser = Browser(panel)
    assert browser.login().status == 303
    return browser


@pytest.fixture
def viewer(panel):
    operations.set_admin("watcher", PASSWORD, TEST_BCRYPT_ROUNDS, role="viewer")
    browser = Browser(panel)
    assert browser.login("watcher").status == 303
    return browser


def csrf(browser, path="/servers"):
    page = browser.request("GET", path).text
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def post(browser, path, form, with_token=True, headers=None):
    form = dict(form)
    if with_token:
        form["csrf_token"] = csrf(browser)
    return browser.request("POST", path, form=form, headers={**HTML, **(headers or {})})


def register(panel, key, **fields):
    document = {"hostname": "web-1.example.com", "os": "Linux 6.1", "arch": "x86_64",
                "version": "0.2.0", **fields}
    response = http_request(panel, "POST", "/api/agent/register", headers=bearer(key),
                            json_body=document)
    assert response.status == 200, response.text


def backfill(panel, server, key, samples):
    for start in range(0, len(samples), 100):
        response = http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                                json_body={"serverId": server.id,
                                           "samples": samples[start:start + 100]})
        assert response.status == 200, response.text


# ===== Server detail =============================================================================

def test_detail_page_shows_the_server_and_every_chart(admin, panel):
    server, key = new_server("web-1")
    register(panel, key, bootTime=int(datetime.datetime.now().timestamp()) - 3 * 86400 - 60)
    now = datetime.datetime.utcnow()
    backfill(panel, server, key, synthetic.history(now, 120, skip=range(80, 95)))
    page = admin.request("GET", f"/servers/{server.id}")
    assert page.status == 200
    text = page.text
    for fact in ("web-1.example.com", "Linux 6.1", "x86_64", "0.2.0", "3 d"):
        assert fact in text, fact
    charts = re.findall(r'<figure class="chart"[^>]*data-points="(\d+)"', text)
    assert len(charts) == 7  # CPU, load, memory, swap, disk per mount, disk I/O, network
    assert all(int(points) > 30 for points in charts)
    for title in ("CPU", "Load (1 min)", "Memory used", "Swap used", "Disk usage per mount",
                  "Disk I/O", "Network"):
        assert f'<span class="title">{title}</span>' in text
    # The 15 silent minutes split each line in two: a gap, not a bridge.
    cpu = text.split('<span class="title">CPU</span>')[1].split("</figure>")[0]
    assert cpu.count('class="line s1"') == 2
    # Top processes and services of the newest sample.
    assert "postgres" in text and "redis" in text and "connectedClients" in text


@pytest.mark.parametrize("range_name, tier_rows", [("1h", 60), ("6h", 120), ("24h", 120),
                                                    ("7d", 24), ("30d", 2)])
def test_each_range_draws_from_its_tier(admin, panel, range_name, tier_rows):
    server, key = new_server("web-1")
    backfill(panel, server, key, synthetic.history(datetime.datetime.utcnow(), 120))
    rollups.run_rollups(late_window=datetime.timedelta(hours=3))
    response = admin.request("GET", f"/servers/{server.id}/charts?range={range_name}",
                             headers={"HX-Request": "true"})
    assert response.status == 200
    assert "<html" not in response.text and 'id="charts"' in response.text
    assert f'aria-current="true">{range_name}</a>' in response.text
    points = [int(p) for p in re.findall(r'data-points="(\d+)"', response.text)]
    assert points and max(points) >= 1
    # Long ranges draw the mean with the peak as a band.
    if range_name in ("7d", "30d", "24h"):
        assert 'class="band s1"' in response.text


def test_processes_for_a_past_minute(admin, panel):
    server, key = new_server("web-1")
    first = sample(server.id, stamp(10))
    first["metrics"]["processes"]["topCpu"][0]["name"] = "backup-job"
    later = sample(server.id, stamp(20))
    later["metrics"]["processes"]["topCpu"][0]["name"] = "nginx"
    for document in (first, later):
        assert http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                            json_body=document).status == 200
    minute = stamp(10)[:16]  # 2026-...T03:12
    past = admin.request("GET", f"/servers/{server.id}/processes?at={minute}",
                         headers={"HX-Request": "true"})
    assert past.status == 200 and "backup-job" in past.text and "nginx" not in past.text
    now = admin.request("GET", f"/servers/{server.id}/processes")
    assert "nginx" in now.text
    empty = admin.request("GET", f"/servers/{server.id}/processes?at=2001-01-01T00:00")
    assert "No sample within 5 minutes" in empty.text


def test_a_nonsense_minute_is_a_named_400(admin, panel):
    server, _ = new_server("web-1")
    response = admin.request("GET", f"/servers/{server.id}/processes?at=yesterday-ish")
    assert response.status == 400
    assert "2026-11-30T03:12" in response.json()["error"]


def test_unknown_server_is_404_not_500(admin):
    assert admin.request("GET", "/servers/999999").status == 404
    assert admin.request("GET", "/servers/999999/charts?range=7d").status == 404
    assert post(admin, "/servers/999999/rotate", {}).status == 404


def test_agent_text_on_the_detail_page_is_escaped(admin, panel):
    server, key = new_server("web-1")
    register(panel, key, hostname=XSS, os=XSS)
    document = sample(server.id)
    document["metrics"]["processes"]["topCpu"][0]["name"] = XSS
    document["metrics"]["disk"]["mounts"][0]["mountpoint"] = "/mnt/<script>alert(1)</script>"
    assert http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                        json_body=document).status == 200
    text = admin.request("GET", f"/servers/{server.id}").text
    assert XSS not in text and "<script>alert(1)" not in text
    assert html.escape(XSS) in text
    assert "/mnt/&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_services_show_their_lists_and_what_was_not_collected(admin, panel):
    """A service's lists (watched processes, units, certificates) are tables on the page, and
    their agent-supplied names are escaped like any other text."""
    server, key = new_server("web-1")
    document = sample(server.id)
    document["metrics"]["services"] = {
        "watched": {"processes": [{"name": "named", "count": 0},
                                  {"name": XSS, "count": 2, "rss": 3 << 20}]},
        "systemd": {"failed": 1, "units": [{"name": "backup.service", "activeState": "failed",
                                            "subState": "failed"}]}}
    document["unavailable"] = {"mysql": "gone: nothing listens at /run/mysqld/mysqld.sock"}
    assert http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                        json_body=document).status == 200
    text = admin.request("GET", f"/servers/{server.id}").text
    assert "<caption>watched · processes</caption>" in text
    assert re.search(r"<td>named</td>\s*<td>0</td>", text)
    assert XSS not in text
    assert re.search(re.escape(html.escape(XSS)) + r"</td>\s*<td>2</td>\s*<td>3.00 MiB</td>", text)
    assert "<caption>watched</caption>" not in text  # no figures of its own: no empty table
    assert "<caption>systemd · units</caption>" in text and "backup.service" in text
    assert "Not collected" in text and "nothing listens at /run/mysqld/mysqld.sock" in text


# ===== Adding and managing servers ===============================================================

def test_add_server_shows_the_key_once_with_install_commands(admin, panel):
    response = post(admin, "/servers", {"name": "db-7", "critical": "1"})
    assert response.status == 200
    assert "no-store" in response.headers["cache-control"]
    key = re.search(r'id="api-key" class="secret">([^<]+)<', response.text).group(1)
    server = models.Server.get(models.Server.name == "db-7")
    assert server.critical
    text = html.unescape(response.text)
    assert f"{panel.url}/downloads/install.sh | sudo bash -s -- --url {panel.url} " \
           f"--api-key {key}" in text
    assert "install.ps1" in text and "-ApiKey" in text
    assert "* * * * *" in text and f"MPANEL_AGENT_API_KEY={key}" in text
    # The key works for the agent API, and is not shown again anywhere.
    assert http_request(panel, "GET", "/api/agent/config", headers=bearer(key)).status == 200
    assert key not in admin.request("GET", f"/servers/{server.id}").text
    assert key not in admin.request("GET", "/servers").text


def test_add_server_refuses_bad_names_and_keeps_nothing(admin):
    assert post(admin, "/servers", {"name": ""}).status == 400
    assert post(admin, "/servers", {"name": "x" * 101}).status == 400
    assert post(admin, "/servers", {"name": "ok"}).status == 200
    duplicate = post(admin, "/servers", {"name": "ok"})
    assert duplicate.status == 409 and "already exists" in duplicate.text
    assert models.Server.select().count() == 1


def test_bundle_holds_agent_installer_and_config_with_the_key(admin, panel):
    response = post(admin, "/servers", {"name": "bundle-me"})
    key = re.search(r'id="api-key" class="secret">([^<]+)<', response.text).group(1)
    server = models.Server.get(models.Server.name == "bundle-me")
    bundle = post(admin, f"/servers/{server.id}/bundle", {"api_key": key})
    assert bundle.status == 200
    assert bundle.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(bundle.body), mode="r:gz") as archive:
        names = archive.getnames()
        config = json.load(archive.extractfile("mpanel-agent/config.json"))
        assert archive.getmember("mpanel-agent/config.json").mode == 0o600
        assert archive.getmember("mpanel-agent/install.sh").mode == 0o755
    assert {"mpanel-agent/agent.py", "mpanel-agent/install.sh",
            "mpanel-agent/config.json"} <= set(names)
    assert config["controlPanel"] == {"url": panel.url, "apiKey": key}
    # Only this server's current key opens it.
    # (A key ending in "x" would be itself with its last character made "x": one run in 64.)
    wrong_key = key[:-1] + ("y" if key.endswith("x") else "x")
    wrong = post(admin, f"/servers/{server.id}/bundle", {"api_key": wrong_key})
    assert wrong.status == 400 and "not this server's current API key" in html.unescape(wrong.text)


def test_public_downloads_hold_no_secret(panel):
    server, key = new_server("web-1")
    for name in ("agent.py", "install.sh", "install.ps1", "config.example.json"):
        response = http_request(panel, "GET", f"/downloads/{name}")
        assert response.status == 200, name
        assert key not in response.text
        assert not re.search(r"agent_[0-9a-f]{12}_[A-Za-z0-9_-]{40}", response.text), name
    missing = http_request(panel, "GET", "/downloads/secret.key")
    assert missing.status == 404 and "no download named" in missing.json()["error"]


def test_rotate_shows_a_new_key_and_the_old_one_keeps_working(admin, panel):
    server, old_key = new_server("web-1")
    register(panel, old_key)
    response = post(admin, f"/servers/{server.id}/rotate", {})
    assert response.status == 200
    new_key = re.search(r'id="api-key" class="secret">([^<]+)<', response.text).group(1)
    assert new_key != old_key
    # The old key still reports during the grace period and is handed the new one.
    answer = http_request(panel, "POST", "/api/agent/metrics", headers=bearer(old_key),
                          json_body=sample(server.id))
    assert answer.status == 200 and answer.json()["newApiKey"] == new_key
    page = admin.request("GET", f"/servers/{server.id}").text
    assert "waiting for the agent to pick up the new key" in page
    assert http_request(panel, "POST", "/api/agent/metrics", headers=bearer(new_key),
                        json_body=sample(server.id, stamp(1))).status == 200
    page = admin.request("GET", f"/servers/{server.id}").text
    assert "the agent switched to the new key" in page


def test_revoke_cuts_the_agent_off(admin, panel):
    server, key = new_server("web-1")
    assert post(admin, f"/servers/{server.id}/revoke", {}).status == 303
    assert http_request(panel, "GET", "/api/agent/config", headers=bearer(key)).status == 401
    assert "key revoked" in admin.request("GET", f"/servers/{server.id}").text


def test_rename_flags_and_delete(admin, panel):
    server, key = new_server("web-1")
    http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                 json_body=sample(server.id))
    assert post(admin, f"/servers/{server.id}/rename", {"name": "web-01"}).status == 303
    assert models.Server.get_by_id(server.id).name == "web-01"
    new_server("taken")
    assert post(admin, f"/servers/{server.id}/rename", {"name": "taken"}).status == 409
    assert post(admin, f"/servers/{server.id}/flags", {"critical": "1"}).status == 303
    assert post(admin, f"/servers/{server.id}/flags", {"public_status": "1"}).status == 303
    assert post(admin, f"/servers/{server.id}/flags", {"critical": "maybe"}).status == 400
    server = models.Server.get_by_id(server.id)
    assert server.critical and server.public_status
    # Deleting needs the name typed out; then the server and its samples are gone.
    refused = post(admin, f"/servers/{server.id}/delete", {"confirm_name": "web-1"})
    assert refused.status == 400 and "type the server" in html.unescape(refused.text)
    assert models.Metric.select().count() == 1
    assert post(admin, f"/servers/{server.id}/delete",
                {"confirm_name": "web-01"}).status == 303
    assert models.Server.get_or_none(models.Server.id == server.id) is None
    assert models.Metric.select().count() == 0
    assert http_request(panel, "GET", "/api/agent/config", headers=bearer(key)).status == 401


# ===== Roles and CSRF ============================================================================

MANAGING = ("/servers/{id}/rotate", "/servers/{id}/revoke", "/servers/{id}/flags",
            "/servers/{id}/rename", "/servers/{id}/delete", "/servers/{id}/bundle",
            "/servers/{id}/maintenance", "/alerts/routes")


def test_viewer_sees_but_cannot_manage(viewer, panel):
    server, key = new_server("web-1")
    assert viewer.request("GET", "/servers").status == 200
    page = viewer.request("GET", f"/servers/{server.id}")
    assert page.status == 200 and "Rotate key" not in page.text and "Add server" not in page.text
    assert viewer.request("GET", "/alerts").status == 200
    assert viewer.request("GET", "/security").status == 403
    assert viewer.request("GET", "/servers/new").status == 403
    for path in MANAGING + ("/servers", "/alerts/rules", "/alerts/channels"):
        response = post(viewer, path.format(id=server.id), {"name": "x", "confirm_name": "web-1",
                                                             "critical": "1"})
        assert response.status == 403, path
        assert "read-only" in response.text
    assert models.Server.get_by_id(server.id).name == "web-1"
    assert http_request(panel, "GET", "/api/agent/config", headers=bearer(key)).status == 200


def test_state_changes_without_the_csrf_token_are_refused(admin, panel):
    server, key = new_server("web-1")
    for path in MANAGING + ("/servers", "/alerts/rules", "/alerts/channels"):
        response = post(admin, path.format(id=server.id), {"name": "x", "confirm_name": "web-1"},
                        with_token=False)
        assert response.status == 403, path
        assert "CSRF" in response.text
    wrong = admin.request("POST", f"/servers/{server.id}/revoke", form={"csrf_token": "nope"})
    assert wrong.status == 403
    # htmx sends the token in a header instead of a form field.
    via_header = admin.request("POST", f"/servers/{server.id}/flags", form={"critical": "1"},
                               headers={"X-CSRF-Token": csrf(admin), "HX-Request": "true"})
    assert via_header.status == 200 and via_header.headers["hx-redirect"] == f"/servers/{server.id}"
    assert models.Server.get_by_id(server.id).critical
    assert models.Agent.get(models.Agent.server == server.id).status != "revoked"


def test_errors_are_json_for_tools(admin):
    response = admin.request("POST", "/servers", form={"name": "x"})
    assert response.status == 403
    assert response.headers["content-type"].startswith("application/json")
    assert "CSRF" in response.json()["error"]


# ===== Login protection ==========================================================================

def test_repeated_failed_logins_are_throttled(panel):
    operations.set_admin("admin", PASSWORD, TEST_BCRYPT_ROUNDS)
    browser = Browser(panel)
    statuses = [browser.login(password=f"wrong {i}").status for i in range(6)]
    assert statuses[:5] == [401] * 5 and statuses[5] == 429
    # Even the right password waits now: guessing stays slow.
    right = browser.login()
    assert right.status == 429 and "Too many failed logins" in right.text
    assert "retry-after" in right.headers
    # Repeated identical failures are one summary row each, counting them.
    counts = {e.kind: e.occurrences for e in models.AuthEvent.select()}
    assert counts["login_failed"] == 5 and counts["login_throttled"] == 2


def test_security_page_lists_failed_logins_and_agent_auth(admin, panel):
    Browser(panel).login(password="wrong")
    http_request(panel, "GET", "/api/agent/config",
                 headers=bearer("agent_000000000000_" + "x" * 40))
    text = admin.request("GET", "/security").text
    assert "login failed" in text and "unknown key" in text and "user admin" in text


# ===== Alerts ====================================================================================

def test_alert_channels_and_rules_from_the_page(admin, panel):
    assert post(admin, "/alerts/channels", {"name": "ops", "kind": "webhook",
                                            "target": "https://hooks.example.com/x",
                                            "is_default": "1"}).status == 303
    bad = post(admin, "/alerts/channels", {"name": "bad", "kind": "webhook", "target": "ftp://x"})
    assert bad.status == 400 and "http(s) URL" in bad.text
    assert post(admin, "/alerts/rules", {"metric": "cpu", "threshold": "75", "minutes": "10"}) \
        .status == 303
    rule = models.AlertRule.get((models.AlertRule.metric == "cpu") &
                                models.AlertRule.server.is_null())
    assert (rule.threshold, rule.minutes) == (75.0, 10)
    server, _ = new_server("web-1")
    assert post(admin, "/alerts/rules", {"metric": "disk", "threshold": "95", "minutes": "5",
                                         "server_id": str(server.id)}).status == 303
    assert post(admin, "/alerts/rules", {"metric": "cpu", "threshold": "lots",
                                         "minutes": "5"}).status == 400
    assert post(admin, "/alerts/rules", {"metric": "temperature", "threshold": "5",
                                         "minutes": "5"}).status == 400
    page = admin.request("GET", "/alerts").text
    assert "hooks.example.com" in page and "web-1" in page and "75" in page


def test_the_page_offers_each_channel_kind_of_the_table_and_refuses_any_other(admin, panel):
    page = admin.request("GET", "/alerts").text
    offered = re.findall(r'<option value="([^"]+)">', page.split('name="kind"', 1)[1]
                         .split("</select>", 1)[0])
    assert offered == list(alerts.CHANNEL_KINDS)
    refused = post(admin, "/alerts/channels", {"name": "pager", "kind": "sms",
                                               "target": "ops@example.com"})
    assert refused.status == 400 and "channel kind must be webhook or email" in refused.text
    assert models.Channel.select().count() == 0


def test_send_test_alert_reports_the_outcome(admin, panel):
    # Nothing listens on this port: the delivery fails and the page says why.
    post(admin, "/alerts/channels", {"name": "dead", "kind": "webhook",
                                     "target": "http://127.0.0.1:9/hook"})
    channel = models.Channel.get(models.Channel.name == "dead")
    response = post(admin, f"/alerts/channels/{channel.id}/test", {})
    assert response.status == 502 and "Test alert to dead failed" in html.unescape(response.text)


# ===== Public status page =======================================================================

def test_status_page_shows_only_chosen_servers_without_metrics(panel):
    shown, shown_key = new_server("Shop API")
    hidden, _ = new_server("internal-db")
    operations.set_flag(shown.id, "public_status", True)
    register(panel, shown_key, hostname="secret-host.internal")
    http_request(panel, "POST", "/api/agent/metrics", headers=bearer(shown_key),
                 json_body=sample(shown.id))
    response = http_request(panel, "GET", "/status", headers=HTML)
    assert response.status == 200
    text = response.text
    assert "Shop API" in text and "internal-db" not in text
    assert "secret-host" not in text and "12.5" not in text  # no hostname, no metric
    assert "up" in text and "100 %" in text
    assert "<title>All systems up · Status</title>" in text


# ===== The servers table: sort and filter ========================================================

def test_table_sorts_and_filters_on_the_server(admin, panel):
    for name, cpu in (("web-1", 20.0), ("web-2", 90.0), ("db-1", 55.0)):
        server, key = new_server(name)
        document = sample(server.id)
        document["metrics"]["cpu"]["usage"] = cpu
        assert http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                            json_body=document).status == 200
    new_server("spare")

    def names(query):
        text = admin.request("GET", f"/servers?{query}", headers={"HX-Request": "true"}).text
        return re.findall(r'<td class="name"><a href="/servers/\d+">([^<]+)</a>', text)

    assert names("") == ["db-1", "spare", "web-1", "web-2"]
    assert names("sort=cpu&dir=desc") == ["web-2", "db-1", "web-1", "spare"]
    assert names("sort=cpu&dir=asc") == ["spare", "web-1", "db-1", "web-2"]
    assert names("q=WEB") == ["web-1", "web-2"]
    assert names("status=never+seen") == ["spare"]
    assert names("q=web&sort=cpu&dir=desc") == ["web-2", "web-1"]
    # Nonsense falls back to the defaults instead of failing.
    assert names("sort=__class__&dir=sideways&status=weird") == ["db-1", "spare", "web-1", "web-2"]
    nothing = admin.request("GET", "/servers?q=zzz").text
    assert "No server matches this filter" in nothing


# ===== Findings of the security review ===========================================================

def test_a_new_password_ends_that_accounts_sessions(admin):
    assert admin.request("GET", "/servers").status == 200
    operations.set_admin("admin", "a brand new password", TEST_BCRYPT_ROUNDS)
    assert admin.request("GET", "/servers").status in (302, 303)


def test_viewers_do_not_see_webhook_urls(admin, viewer):
    operations.add_channel("ops", "webhook", "https://hooks.example.com/T000/secret-token")
    assert "secret-token" in admin.request("GET", "/alerts").text
    page = viewer.request("GET", "/alerts").text
    assert "secret-token" not in page and "hooks.example.com" not in page


def test_install_commands_ignore_forwarded_headers_from_untrusted_clients(admin, panel):
    """The session panel trusts no proxy: what a client says in X-Forwarded-* is ignored."""
    response = post(admin, "/servers", {"name": "web-9"},
                    headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"})
    text = html.unescape(response.text)
    assert "evil.example" not in text
    assert f"{panel.url}/downloads/install.sh" in text


def test_a_refused_change_sent_by_htmx_gets_the_page_with_the_reason(admin):
    server, _ = new_server("web-1")
    new_server("taken")
    response = admin.request("POST", f"/servers/{server.id}/rename", form={"name": "taken"},
                             headers={"X-CSRF-Token": csrf(admin), "HX-Request": "true",
                                      **HTML})
    assert response.status == 409 and "already exists" in html.unescape(response.text)


# Hostile input to every page: tests/integration/test_hostile_input.py.


# ===== Maintenance and routes from the pages ===================================================

def test_maintenance_from_the_detail_page_silences_and_ends(admin, panel):
    from panel import alerts
    from panel.db import utcnow

    server, _ = new_server("web-1")
    assert post(admin, f"/servers/{server.id}/maintenance",
                {"minutes": "60", "reason": "kernel <b>upgrade</b>"}).status == 303
    assert models.under_maintenance(server.id, utcnow())
    page = admin.request("GET", f"/servers/{server.id}").text
    assert "maintenance until" in page and "kernel &lt;b&gt;upgrade&lt;/b&gt;" in page
    for bad in ("0", "99999999", "soon"):
        refused = post(admin, f"/servers/{server.id}/maintenance", {"minutes": bad})
        assert refused.status == 400, bad
    assert post(admin, f"/servers/{server.id}/maintenance", {"end": "1"}).status == 303
    assert not models.under_maintenance(server.id, utcnow())


def test_routes_from_the_alerts_page(admin, panel):
    from panel import alerts

    server, _ = new_server("web-1")
    other, _ = new_server("web-2")
    default = operations.add_channel("all", "webhook", "https://hooks.example.com/a")
    own = operations.add_channel("db-team", "email", "db@example.com", is_default=False)
    assert post(admin, "/alerts/routes", {"server_id": str(server.id),
                                          "channel_id": str(own.id)}).status == 303
    assert [c.name for c in alerts.channels_for(server.id)] == ["db-team"]
    assert [c.name for c in alerts.channels_for(other.id)] == ["all"]
    assert "db-team" in admin.request("GET", "/alerts").text
    assert post(admin, "/alerts/routes", {"server_id": "x", "channel_id": "1"}).status == 400
    assert post(admin, "/alerts/routes", {"server_id": str(server.id),
                                          "channel_id": "999999"}).status == 400
    assert post(admin, f"/alerts/routes/{server.id}/{own.id}/delete", {}).status == 303
    assert [c.name for c in alerts.channels_for(server.id)] == [default.name]
