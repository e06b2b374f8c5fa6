"""HTTPS from the real agent to the real panel behind a real TLS terminator (Debian's nginx
with a self-signed certificate made by openssl): CA bundle, certificate pinning, refusal of
an unknown certificate — each with the urllib3 the project pins (2.x) and with urllib3 1.26,
the version Debian 12, Ubuntu 22.04 and RHEL 9 ship (`make venv` puts it in
.venv/urllib3-1.26), so the installers can use the distribution's packages."""
import hashlib
import os
import ssl
import subprocess
import sys

import pytest

from panel import models
from tests.conftest import (ROOT, free_port, new_server, require, self_signed_certificate,
                            start_nginx, stop_process, wait_for_port, write_agent_config)


@pytest.fixture
def certificate(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    return cert, key, hashlib.sha256(der).hexdigest()


@pytest.fixture
def https_panel(panel, certificate, tmp_path):
    cert, key, fingerprint = certificate
    port = free_port()
    process = start_nginx(tmp_path, f"""
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://127.0.0.1:{panel.port};
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-Proto https;
    }}
  }}""")
    try:
        wait_for_port(port, process)
        yield f"https://127.0.0.1:{port}", cert, fingerprint
    finally:
        stop_process(process)


LEGACY_URLLIB3 = ROOT / ".venv" / "urllib3-1.26"


@pytest.fixture(params=["urllib3-2", "urllib3-1.26"], autouse=True)
def urllib3_version(request, monkeypatch):
    """Run each test's agent with the pinned urllib3 and again with 1.26 in front of it."""
    if request.param == "urllib3-1.26":
        require("urllib3 1.26 in .venv/urllib3-1.26", (LEGACY_URLLIB3 / "urllib3").is_dir(),
                "run `make venv`")
        monkeypatch.setenv("AGENT_PYTHONPATH", str(LEGACY_URLLIB3))
    return request.param


def run_agent(config, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPANEL_")}
    if os.environ.get("AGENT_PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["AGENT_PYTHONPATH"]
        probe = subprocess.run([sys.executable, "-c", "import urllib3; print(urllib3.__version__)"],
                               env=env, capture_output=True, text=True, check=True)
        assert probe.stdout.startswith("1.26."), probe.stdout
    return subprocess.run([sys.executable, str(ROOT / "agent.py"), "--config", str(config),
                           *args], env=env, capture_output=True, text=True, timeout=60)


def test_agent_reports_over_https_with_a_ca_bundle(https_panel, tmp_path):
    url, cert, _ = https_panel
    _, key = new_server("tls")
    config = write_agent_config(tmp_path, url, key)
    document = __import__("json").loads(config.read_text())
    document["controlPanel"]["caBundle"] = str(cert)
    config.write_text(__import__("json").dumps(document))
    assert run_agent(config, "--check").returncode == 0
    result = run_agent(config, "--once")
    assert result.returncode == 0, result.stderr
    assert models.Metric.select().count() == 1


def test_certificate_for_another_name_is_refused(https_panel, tmp_path):
    """The certificate is for 127.0.0.1; reached as "localhost", a trusted CA is not enough."""
    url, cert, _ = https_panel
    _, key = new_server("tls")
    config = write_agent_config(tmp_path, url.replace("127.0.0.1", "localhost"), key)
    document = __import__("json").loads(config.read_text())
    document["controlPanel"]["caBundle"] = str(cert)
    config.write_text(__import__("json").dumps(document))
    result = run_agent(config, "--check")
    assert result.returncode == 1, result.stdout
    assert "hostname" in result.stderr.lower() and "Traceback" not in result.stderr
    assert models.Metric.select().count() == 0


def test_unknown_certificate_is_refused(https_panel, tmp_path):
    url, _, _ = https_panel
    _, key = new_server("tls")
    config = write_agent_config(tmp_path, url, key)
    result = run_agent(config, "--check")
    assert result.returncode == 1
    assert "certificate" in result.stderr.lower() and "Traceback" not in result.stderr


def _pinned_config(tmp_path, url, key, pin):
    config = write_agent_config(tmp_path, url, key)
    document = __import__("json").loads(config.read_text())
    document["controlPanel"]["pinSha256"] = pin
    config.write_text(__import__("json").dumps(document))
    return config


def test_pinned_certificate_is_trusted_without_a_ca(https_panel, tmp_path):
    url, _, fingerprint = https_panel
    _, key = new_server("tls")
    pin = ":".join(fingerprint[i:i + 2] for i in range(0, 64, 2)).upper()
    result = run_agent(_pinned_config(tmp_path, url, key, pin), "--once")
    assert result.returncode == 0, result.stderr
    assert models.Metric.select().count() == 1


def test_wrong_pin_is_refused(https_panel, tmp_path):
    url, _, fingerprint = https_panel
    _, key = new_server("tls")
    wrong = ("0" if fingerprint[0] != "0" else "1") + fingerprint[1:]
    result = run_agent(_pinned_config(tmp_path, url, key, wrong), "--check")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert models.Metric.select().count() == 0
