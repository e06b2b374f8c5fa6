"""The certificates collector against Debian's nginx serving TLS sites on loopback, with
certificates this test makes with Debian's openssl (a CA of its own, fixed validity dates): one
valid for 90 days, one expiring in 3 days, one expired, one for names its site does not serve.
The agent reads them from the files nginx's config names, and from the local handshake (SNI)
of the endpoints listed in its config; and the real agent reports them to a real panel."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

import agent
from panel import models, protocol
from panel.validation import validate
from tests.conftest import (ROOT, agent_env, free_port, new_server, require, start_nginx,
                            stop_process, wait_for_port, write_agent_config)
from tests.integration.test_dashboard_pages import admin  # noqa: F401 (the fixture)

SCHEMA = protocol.SERVICES["properties"]["certificates"]
DAY = 86400


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _asn1_time(moment):
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(moment))


class CertificateAuthority:
    """A CA in `folder` that issues certificates for any dates (`openssl ca`)."""

    def __init__(self, folder):
        require("openssl", shutil.which("openssl"), "install Debian's openssl (.ci/run does)")
        self.folder = folder
        folder.mkdir(exist_ok=True)
        (folder / "index.txt").write_text("")
        (folder / "serial").write_text("1000\n")
        (folder / "ca.cnf").write_text(f"""
[ca]
default_ca = test
[test]
dir = {folder}
database = {folder}/index.txt
new_certs_dir = {folder}
serial = {folder}/serial
default_md = sha256
policy = anything
copy_extensions = copy
unique_subject = no
[anything]
commonName = supplied
""")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
                 "-subj", "/O=mPanel Tests/CN=mPanel Test CA", cwd=folder)

    def issue(self, name, dns_names, not_before, not_after):
        """-> (cert.pem, key.pem, notAfter as epoch seconds)"""
        sans = ",".join(f"DNS:{n}" for n in dns_names)
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={dns_names[0]}",
                 "-addext", f"subjectAltName={sans}", cwd=self.folder)
        _openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
                 "-in", f"{name}.csr", "-out", f"{name}.pem", "-notext",
                 "-startdate", _asn1_time(not_before), "-enddate", _asn1_time(not_after),
                 cwd=self.folder)
        return self.folder / f"{name}.pem", self.folder / f"{name}.key", int(not_after)


@pytest.fixture
def tls_sites(tmp_path):
    """nginx on one loopback port with four TLS sites, picked by SNI -> settings and facts.
    All of it under tmp_path/tls, so another nginx of the same test keeps tmp_path/nginx."""
    folder = tmp_path / "tls"
    folder.mkdir()
    ca, now = CertificateAuthority(folder / "ca"), int(time.time())
    sites = {
        "valid": ("valid.example.test", ["valid.example.test", "www.valid.example.test"],
                  now - DAY, now + 90 * DAY),
        "soon": ("soon.example.test", ["soon.example.test"], now - 87 * DAY, now + 3 * DAY),
        "expired": ("old.example.test", ["old.example.test"], now - 90 * DAY, now - 2 * DAY),
        "other": ("wrong.example.test", ["other.example.test"], now - DAY, now + 30 * DAY),
    }
    port, blocks, facts = free_port(), [], {}
    for key, (server_name, dns_names, not_before, not_after) in sites.items():
        cert, private, expires = ca.issue(key, dns_names, not_before, not_after)
        facts[key] = {"file": str(cert), "notAfter": expires, "serverName": server_name}
        default = " default_server" if key == "valid" else ""
        blocks.append(f"""
  server {{
    listen 127.0.0.1:{port} ssl{default};
    server_name {server_name} www.{server_name};
    ssl_certificate {cert};
    ssl_certificate_key {private};
    return 200 "{key}";
  }}""")
    blocks.append("""
  server { listen 127.0.0.1:%d; server_name plain.example.test; return 200; }""" % free_port())
    process = start_nginx(folder, "".join(blocks))
    try:
        wait_for_port(port, process)
        settings = {"nginxConfig": str(folder / "nginx" / "nginx.conf"), "apacheConfig": [],
                    "endpoints": [{"address": f"127.0.0.1:{port}",
                                   "serverName": "soon.example.test"},
                                  f"localhost:{port}"]}
        yield {"settings": settings, "facts": facts, "port": port, "process": process}
    finally:
        stop_process(process)


def by_name(section):
    return {(entry["source"], entry["name"]): entry for entry in section["certificates"]}


def test_days_issuer_and_match_of_every_site_nginx_serves(tls_sites):
    facts = tls_sites["facts"]
    ctx = agent.CollectorContext(services={"certificates": tls_sites["settings"]})
    section = agent.collect_certificates(ctx)
    validate(SCHEMA, section, "services.certificates")
    entries = by_name(section)

    valid = entries[("nginx", "valid.example.test")]
    assert valid["file"] == facts["valid"]["file"]
    assert valid["issuer"] == "mPanel Test CA" and valid["subject"] == "valid.example.test"
    assert valid["names"] == ["valid.example.test", "www.valid.example.test"]
    assert valid["notAfter"] == facts["valid"]["notAfter"]
    assert 89.9 <= valid["daysLeft"] <= 90.0 and valid["matches"] is True

    soon = entries[("nginx", "soon.example.test")]
    assert 2.9 <= soon["daysLeft"] <= 3.0
    # the site also serves www.soon.example.test, which the certificate does not name
    assert soon["matches"] is False and soon["unmatched"] == ["www.soon.example.test"]

    expired = entries[("nginx", "old.example.test")]
    assert -2.1 <= expired["daysLeft"] <= -1.9

    other = entries[("nginx", "wrong.example.test")]
    assert other["names"] == ["other.example.test"] and other["matches"] is False
    assert other["unmatched"] == ["wrong.example.test", "www.wrong.example.test"]

    # the handshake with SNI sees the file nginx serves for that name
    served = entries[("endpoint", "soon.example.test")]
    assert served["endpoint"] == f"127.0.0.1:{tls_sites['port']}"
    assert served["notAfter"] == facts["soon"]["notAfter"] and served["matches"] is True
    # a name resolved to loopback is also the SNI name, and nginx's default server answers it
    default = entries[("endpoint", "localhost")]
    assert default["endpoint"] == f"localhost:{tls_sites['port']}"
    assert default["notAfter"] == facts["valid"]["notAfter"]
    assert default["matches"] is False and default["unmatched"] == ["localhost"]

    assert section["total"] == 6 and section["omitted"] == 0
    assert section["expired"] == 1 and section["unreadable"] == 0
    assert section["mismatched"] == 4  # soon (www.), wrong (and www.), localhost
    assert section["minDaysLeft"] == expired["daysLeft"]
    assert section["certificates"][0] == expired  # the most urgent first


def test_the_handshake_is_not_redone_within_its_interval(tls_sites):
    ctx = agent.CollectorContext(services={"certificates": tls_sites["settings"]})
    first = agent.collect_certificates(ctx)
    stop_process(tls_sites["process"])  # nothing listens now
    second = agent.collect_certificates(ctx)
    assert by_name(second)[("endpoint", "soon.example.test")] == \
        by_name(first)[("endpoint", "soon.example.test")]
    fresh = agent.collect_certificates(agent.CollectorContext(
        services={"certificates": tls_sites["settings"]}))
    assert by_name(fresh)[("endpoint", "soon.example.test")]["error"].startswith(
        "handshake failed")


def test_a_non_local_endpoint_is_refused_and_reported(tls_sites):
    settings = dict(tls_sites["settings"], endpoints=["192.0.2.10:443"])  # TEST-NET-1
    section = agent.collect_certificates(agent.CollectorContext(
        services={"certificates": settings}))
    refused = by_name(section)[("endpoint", "192.0.2.10:443")]
    assert "not an address of this server" in refused["error"]


def _print(config, unprivileged=False):
    """agent.py --print; `unprivileged`: root without the capabilities that read any file
    (setpriv, util-linux), as the agent's own user would be."""
    command = [sys.executable, str(ROOT / "agent.py"), "--config", str(config), "--print"]
    if unprivileged and os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    result = subprocess.run(command, env=agent_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_certificate_only_root_may_read_is_reported_unreadable_with_what_to_do(
        tls_sites, tmp_path):
    require("setpriv", shutil.which("setpriv") or os.geteuid() != 0,
            "util-linux's setpriv drops root's file capabilities")
    os.chmod(tls_sites["facts"]["valid"]["file"], 0)  # as a key file: root's alone
    config = tmp_path / "print.json"
    config.write_text(json.dumps({"agent": {
        "stateDir": str(tmp_path / "state"), "enabledCollectors": ["certificates"],
        "services": {"certificates": tls_sites["settings"]}}}))
    section = _print(config, unprivileged=True)["metrics"]["services"]["certificates"]
    locked = by_name(section)[("nginx", "valid.example.test")]
    assert locked["error"].startswith("permission denied") and "never the key" in locked["error"]
    assert section["unreadable"] == 1 and section["certificates"][0] == locked
    # the handshake needs no file access: the same certificate is seen served
    assert by_name(section)[("endpoint", "localhost")]["daysLeft"] > 89


def test_the_agent_reports_the_certificates_to_the_panel(tls_sites, panel, admin,  # noqa: F811
                                                        tmp_path):
    server, key = new_server("tls-box")
    config = write_agent_config(tmp_path, panel.url, key, enabledCollectors=["certificates"],
                                services={"certificates": tls_sites["settings"]})
    result = subprocess.run([sys.executable, str(ROOT / "agent.py"), "--config", str(config),
                             "--once"], env=agent_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    stored = models.Metric.select().get()
    section = stored.services["certificates"]
    assert section["expired"] == 1 and section["total"] == 6
    assert by_name(section)[("nginx", "valid.example.test")]["issuer"] == "mPanel Test CA"
    assert by_name(section)[("nginx", "soon.example.test")]["notAfter"] > time.time()
    # the server page shows the section's figures (the panel's services section is to come)
    page = admin.request("GET", f"/servers/{server.id}/processes")
    assert page.status == 200 and "minDaysLeft" in page.text
