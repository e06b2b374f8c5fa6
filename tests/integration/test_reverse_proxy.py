"""The production set-up of docs/reverse-proxy.md, run for real: the example nginx config and
Caddyfile in docs/examples/ in front of a real panel (MPANEL_TRUSTED_PROXIES=127.0.0.1; SQLite
and PostgreSQL) with a self-signed certificate made by openssl; the panel's systemd unit checked
by `systemd-analyze verify` and `security`, and the panel run under the kernel's form of the
unit's MemoryDenyWriteExecute.

The example files run as they are except for what cannot be the same here. Each replacement is
an exact string that must occur exactly once (so an edit of the example that moves it fails
here, rather than silently testing something else):
  nginx   the two certificate paths; `listen 443 ssl;` and `listen 80;` -> loopback ports;
          the upstream's `server 127.0.0.1:8080` -> the test panel's port.
  Caddy   the site address `panel.example.com {` -> `https://127.0.0.1:PORT {` plus a `tls`
          line with the test certificate (no ACME here); the upstream's port; and in the
          global options `admin off` (no admin endpoint on :2019) and `http_port PORT` (the
          redirecting listener on a free port instead of 80).

Clients connect from 127.0.0.2 while the proxy reaches the panel from 127.0.0.1, so an address
the panel records can only be 127.0.0.2 if it read X-Forwarded-For.
"""
import gzip
import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from panel import compression, models, settings
from tests.conftest import (ROOT, bearer, free_port, http_request, new_server, require,
                            self_signed_certificate, start_nginx, start_panel, stop_panel,
                            stop_process, wait_for_port, write_agent_config)
from tests.integration.test_api import sample
from tests.integration.test_transport import run_agent

EXAMPLES = ROOT / "docs" / "examples"
UNIT = ROOT / "install" / "mpanel-panel.service"
CLIENT_ADDRESS = "127.0.0.2"
PANEL_LIMIT = settings.Settings().max_body_bytes  # MPANEL_MAX_BODY_BYTES' default


def substitute(text, replacements):
    """`text` with each (old, new) replaced; each `old` must occur exactly once."""
    for old, new in replacements:
        assert text.count(old) == 1, f"expected {old!r} exactly once in the example"
        text = text.replace(old, new)
    return text


def nginx_test_config(cert, key, https_port, http_port, panel_port):
    return substitute((EXAMPLES / "nginx-mpanel.conf").read_text(), [
        ("/etc/letsencrypt/live/panel.example.com/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/panel.example.com/privkey.pem", str(key)),
        ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("server 127.0.0.1:8080 ", f"server 127.0.0.1:{panel_port} "),
    ])


def caddy_test_config(cert, key, https_port, http_port, panel_port):
    return substitute((EXAMPLES / "Caddyfile").read_text(), [
        ("{\n\tservers {", f"{{\n\tadmin off\n\thttp_port {http_port}\n\tservers {{"),
        ("panel.example.com {", f"https://127.0.0.1:{https_port} {{\n\ttls {cert} {key}"),
        ("reverse_proxy 127.0.0.1:8080 {", f"reverse_proxy 127.0.0.1:{panel_port} {{"),
    ])


def caddy_binary():
    binary = shutil.which("caddy")
    require("caddy", binary, "install Debian's caddy package (apt-get install caddy)")
    return binary


def caddy_version():
    """(major, minor) of the installed caddy, from `caddy version` ("v2.6.2 h1:..." or
    "2.6.2")."""
    output = subprocess.run([caddy_binary(), "version"], capture_output=True, text=True,
                            timeout=30).stdout
    found = re.search(r"(\d+)\.(\d+)", output)
    assert found, output
    return int(found.group(1)), int(found.group(2))


def caddy_env(tmp_path):
    """Caddy keeps certificates and autosaves under HOME/XDG folders: keep them in tmp_path."""
    return dict(os.environ, HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "data"),
                XDG_CONFIG_HOME=str(tmp_path / "config"))


# ===== The stack: panel <- proxy <- client ======================================================

class Stack:
    def __init__(self, kind, panel, https_port, http_port, cert):
        self.kind, self.panel, self.cert = kind, panel, cert
        self.https_port, self.http_port = https_port, http_port

    @property
    def url(self):
        return f"https://127.0.0.1:{self.https_port}"

    def request(self, method, path, body=None, headers=None, json_body=None, tls=True):
        """One request to the proxy from CLIENT_ADDRESS. A body the proxy refuses early may
        break the upload half-way: the answer it sent is read all the same."""
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        if tls:
            context = ssl.create_default_context(cafile=str(self.cert))
            connection = http.client.HTTPSConnection("127.0.0.1", self.https_port, timeout=30,
                                                     context=context,
                                                     source_address=(CLIENT_ADDRESS, 0))
        else:
            connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30,
                                                    source_address=(CLIENT_ADDRESS, 0))
        try:
            connection.putrequest(method, path, skip_accept_encoding="accept-encoding" in
                                  {name.lower() for name in headers})
            if body is not None:
                headers["Content-Length"] = str(len(body))
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.endheaders()
            if body:
                try:
                    connection.send(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, \
                response.read()
        finally:
            connection.close()


def start_caddy(tmp_path, config_text):
    binary = caddy_binary()
    config = tmp_path / "Caddyfile"
    config.write_text(config_text)
    return subprocess.Popen([binary, "run", "--adapter", "caddyfile", "--config", str(config)],
                            env=caddy_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


@pytest.fixture(scope="module", params=("nginx", "caddy"))
def proxy_stack(request, backend_url, tmp_path_factory):
    """A panel that trusts 127.0.0.1 as its proxy, and the example proxy config in front."""
    tmp_path = tmp_path_factory.mktemp(f"proxy-{request.param}")
    if request.param == "caddy":
        caddy_binary()  # skip (or fail under CI) before starting anything
    cert, key = self_signed_certificate(tmp_path)
    panel = start_panel(backend_url, tmp_path / "panel.log",
                        {"MPANEL_TRUSTED_PROXIES": "127.0.0.1"})
    https_port, http_port = free_port(), free_port()
    make_config = nginx_test_config if request.param == "nginx" else caddy_test_config
    config = make_config(cert, key, https_port, http_port, panel.port)
    # nginx started as root runs its workers as `nobody`, which must reach the folder where
    # they spool request bodies over 16 KB; pytest's tmp_path (under a 0700 folder) is closed.
    prefix = Path(tempfile.mkdtemp(prefix="mpanel-nginx-"))
    prefix.chmod(0o755)
    try:
        proxy = start_nginx(prefix, config) if request.param == "nginx" else \
            start_caddy(tmp_path, config)
        try:
            wait_for_port(https_port, proxy)
            wait_for_port(http_port, proxy)
            yield Stack(request.param, panel, https_port, http_port, cert)
        finally:
            stop_process(proxy)
    finally:
        stop_panel(panel)
        shutil.rmtree(prefix, ignore_errors=True)


@pytest.fixture
def stack(proxy_stack, database):
    """The running stack on a clean database (the models are bound to it too)."""
    return proxy_stack


# ===== Through the proxy ========================================================================

def test_the_real_agent_reports_through_the_proxy_over_https(stack, tmp_path):
    _, key = new_server("behind-proxy")
    config = write_agent_config(tmp_path, stack.url, key)
    document = json.loads(config.read_text())
    document["controlPanel"]["caBundle"] = str(stack.cert)
    config.write_text(json.dumps(document))
    checked = run_agent(config, "--check")
    assert checked.returncode == 0, checked.stderr
    result = run_agent(config, "--once")
    assert result.returncode == 0, result.stderr
    assert models.Metric.select().count() == 1


def test_agent_api_answers_over_https_and_records_the_client_address(stack):
    server, key = new_server("web-1")
    status, headers, body = stack.request(
        "POST", "/api/agent/register", headers=bearer(key),
        json_body={"hostname": "web-1", "os": "Linux 6.1", "arch": "x86_64", "version": "0.2.0"})
    assert status == 200, body
    assert models.Agent.get().ip_address == CLIENT_ADDRESS
    status, headers, body = stack.request("POST", "/api/agent/metrics", headers=bearer(key),
                                          json_body=sample(server.id))
    assert status == 200, body
    assert json.loads(body)["received"] is True
    assert models.Metric.select().count() == 1
    assert headers["strict-transport-security"].startswith("max-age=31536000")


def test_a_forged_x_forwarded_for_is_not_believed(stack):
    wrong = "agent_0123456789ab_" + "w" * 40
    status, _, body = stack.request("POST", "/api/agent/metrics",
                                    headers={**bearer(wrong), "X-Forwarded-For": "203.0.113.9"},
                                    json_body=sample(1))
    assert status == 401, body
    event = models.AuthEvent.get(models.AuthEvent.kind == "unknown_key")
    assert event.client_addr == CLIENT_ADDRESS


def test_healthz_answers_through_the_proxy(stack):
    status, headers, body = stack.request("GET", "/healthz")
    assert status == 200
    assert json.loads(body) == {"status": "ok", "database": "ok"}


def test_the_panel_answers_bodies_over_its_own_limit_and_the_proxy_larger_ones(stack):
    """The proxy's limit is above MPANEL_MAX_BODY_BYTES: a body between the two reaches the
    panel, which answers with its JSON 413; a body over the proxy's limit never reaches it."""
    server, key = new_server("web-1")
    headers = {**bearer(key), "Content-Type": "application/json"}
    between = b"{" + b" " * (PANEL_LIMIT + 1000) + b"}"
    status, _, body = stack.request("POST", "/api/agent/metrics", body=between, headers=headers)
    assert status == 413
    assert f"limit of {PANEL_LIMIT} bytes" in json.loads(body)["error"]

    too_large = b"{" + b" " * (2 * 1024 * 1024 + 1000) + b"}"
    status, _, body = stack.request("POST", "/api/agent/metrics", body=too_large,
                                    headers=headers)
    if stack.kind == "nginx":  # the example answers in JSON, like the panel
        assert status == 413
        assert "client_max_body_size" in json.loads(body)["error"]
    elif caddy_version() < (2, 7):
        # Caddy before 2.7 reports request_body's limit as 502 (caddyserver/caddy#5652);
        # Debian 12 ships 2.6.2. docs/reverse-proxy.md says so.
        assert status in (413, 502)
    else:
        assert status == 413
    assert models.Metric.select().count() == 0


def test_plain_http_is_redirected_and_never_proxied(stack):
    server, key = new_server("web-1")
    status, headers, _ = stack.request("POST", "/api/agent/metrics", headers=bearer(key),
                                       json_body=sample(server.id), tls=False)
    assert status in (301, 302, 307, 308)
    assert headers["location"].startswith("https://")
    assert models.Metric.select().count() == 0


def test_the_panels_gzip_passes_through_and_cross_site_cookies_stay_plain(stack):
    """The proxy hands on the panel's compressed answer as it is (the panel's strong ETag with
    its gzip suffix: nginx compressing would have made it weak), and compresses no answer the
    panel left plain for BREACH."""
    whole = (ROOT / "panel" / "static" / "style.css").read_bytes()
    status, headers, body = stack.request("GET", "/static/style.css",
                                          headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == whole
    assert headers["etag"].endswith(compression.ETAG_SUFFIX)
    assert not headers["etag"].startswith("W/")
    status, headers, body = stack.request("GET", "/static/style.css", headers={
        "Accept-Encoding": "gzip", "Cookie": "mpanel_session=x", "Sec-Fetch-Site": "cross-site"})
    assert status == 200 and "content-encoding" not in headers and body == whole


# ===== The panel's own rule, without the example's redirect =====================================

@pytest.fixture
def loopback_proxied_panel(backend_url, database, tmp_path):
    panel = start_panel(backend_url, tmp_path / "panel.log",
                        {"MPANEL_TRUSTED_PROXIES": "127.0.0.1"})
    yield panel
    stop_panel(panel)


def test_a_trusted_proxy_on_loopback_saying_http_is_refused(loopback_proxied_panel):
    """A proxy on the panel's own host is a loopback peer; what it says about the client's
    scheme must count all the same, or a proxy that forwards port 80 passes keys sent in
    clear text."""
    server, key = new_server("web-1")
    answer = http_request(loopback_proxied_panel, "POST", "/api/agent/metrics",
                          headers={**bearer(key), "X-Forwarded-Proto": "http",
                                   "X-Forwarded-For": "198.51.100.7"},
                          json_body=sample(server.id))
    assert answer.status == 403 and answer.json()["field"] == "scheme"


# ===== Caddy and systemd: the tools' own checks =================================================

def test_caddyfile_passes_caddy_validate(tmp_path):
    binary = caddy_binary()
    result = subprocess.run([binary, "validate", "--adapter", "caddyfile", "--config",
                             str(EXAMPLES / "Caddyfile")], env=caddy_env(tmp_path),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid configuration" in result.stdout + result.stderr


def _unit_for_verify(tmp_path):
    """The unit as shipped, but for the interpreter path: `verify` insists that ExecStart's
    program exists, and /opt/mpanel is not installed on this machine."""
    text = UNIT.read_text()
    assert text.count("/opt/mpanel/.venv/bin/python ") == 2  # ExecStartPre and ExecStart
    path = tmp_path / "mpanel-panel.service"
    path.write_text(text.replace("/opt/mpanel/.venv/bin/python ", f"{sys.executable} "))
    return path


def _systemd_analyze():
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package has it): the "
                    "panel's unit is not verified here")
    return analyze


def test_panel_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = _systemd_analyze()
    unit = _unit_for_verify(tmp_path)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if "mpanel-panel" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_panel_unit_exposure_stays_low(tmp_path):
    """systemd's own rating of the sandbox (0 locked down .. 10 fully exposed): a hardening
    line dropped from the unit shows here."""
    analyze = _systemd_analyze()
    unit = _unit_for_verify(tmp_path)
    result = subprocess.run([analyze, "security", "--offline=yes", str(unit)],
                            capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for mpanel-panel\.service: ([0-9.]+)",
                      result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.5, result.stdout


# Runs `python -m panel ARGS` with Linux's own form of MemoryDenyWriteExecute (prctl
# PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN; Linux 6.3+), which exec keeps; exit 77 without it.
MDWE_WRAPPER = """
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(77)
os.execv(sys.executable, [sys.executable, "-m", "panel", *sys.argv[1:]])
"""


def test_the_panel_works_where_memory_may_not_be_writable_and_executable(backend_url, database,
                                                                         tmp_path):
    """The unit sets MemoryDenyWriteExecute=yes. No systemd runs here, so the kernel's own
    switch for the same rule stands in: migrate, bcrypt (add-server) and a served report must
    all work under it."""
    port = free_port()
    env = dict(os.environ, MPANEL_DATABASE_URL=backend_url, MPANEL_DATA_DIR=str(tmp_path),
               MPANEL_BCRYPT_ROUNDS="4", MPANEL_HOST="127.0.0.1", MPANEL_PORT=str(port),
               MPANEL_THREADS="4", MPANEL_WORKERS="1")

    def panel_command(*args):
        return subprocess.run([sys.executable, "-c", MDWE_WRAPPER, *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)

    migrated = panel_command("migrate")
    if migrated.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+): MemoryDenyWriteExecute is "
                    "not tried here")
    assert migrated.returncode == 0, migrated.stderr
    added = panel_command("add-server", "sandboxed", "--quiet")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    process = subprocess.Popen([sys.executable, "-c", MDWE_WRAPPER, "serve"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, process)
        panel = type("Panel", (), {"host": "127.0.0.1", "port": port})
        server = models.Server.get(models.Server.name == "sandboxed")
        answer = http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                              json_body=sample(server.id))
        assert answer.status == 200, answer.body
        assert models.Metric.select().count() == 1
    finally:
        stop_process(process)
