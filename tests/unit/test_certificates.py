"""The certificates collector's pure parts: the X.509 reader on captured PEM files, RFC 6125
name matching, nginx and Apache configs as Debian ships them (tests/fixtures/certificates,
README there), and the section built from what was found."""
import os
import shutil
import ssl
from pathlib import Path

import pytest

import agent
from panel import protocol
from panel.validation import validate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "certificates"
SCHEMA = protocol.SERVICES["properties"]["certificates"]
NOW = 1796173593 + 86400  # a day after the fixture's leaf was issued (notBefore)


def der(name):
    return agent.pem_certificate((FIXTURES / name).read_text())


def test_a_full_chain_reads_as_its_leaf_certificate():
    certificate = agent.parse_certificate(der("fullchain.pem"))
    assert certificate == {
        "subject": "example.test", "issuer": "mPanel Test Root",
        "dnsNames": ["example.test", "www.example.test", "*.shop.example.test"],
        "ipAddresses": ["127.0.0.1", "::1"],
        "notBefore": 1796173593, "notAfter": 1803949593}


@pytest.mark.parametrize("name", ["fullchain.pem", "selfsigned_2054.pem"])
def test_the_reader_agrees_with_the_stdlibs_own_decoding(name):
    """UTCTime (till 2049) and GeneralizedTime (2054) alike; Python's private test helper is
    the reference here, never in the agent."""
    reference = ssl._ssl._test_decode_cert(str(FIXTURES / name))
    certificate = agent.parse_certificate(der(name))
    assert certificate["notAfter"] == ssl.cert_time_to_seconds(reference["notAfter"])
    assert certificate["subject"] == dict(r[0] for r in reference["subject"])["commonName"]
    sans = [value for kind, value in reference.get("subjectAltName", ()) if kind == "DNS"]
    assert certificate["dnsNames"] == sans


@pytest.mark.parametrize("data", [b"", b"\x30", b"\x30\x82\xff\xff", b"\x30\x03\x02\x01\x00",
                                  b"not DER at all"])
def test_what_is_not_a_certificate_is_a_value_error(data):
    with pytest.raises(ValueError):
        agent.parse_certificate(data)


def test_a_pem_file_without_a_certificate_says_so():
    with pytest.raises(ValueError, match="no PEM certificate"):
        agent.pem_certificate("-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n")


@pytest.mark.parametrize("name,covered", [
    ("example.test", True), ("WWW.Example.Test.", True),
    ("a.shop.example.test", True),      # the wildcard's one label
    ("shop.example.test", False),       # a wildcard does not cover its parent
    ("a.b.shop.example.test", False),   # nor two labels
    ("*.shop.example.test", True),      # a served wildcard: the same wildcard
    ("127.0.0.1", True), ("::1", True), ("10.0.0.1", False),
    ("other.test", False),
    ("legacy.example.test", False),     # the CN is not looked at: the certificate has SANs
])
def test_names_are_matched_as_rfc_6125_says(name, covered):
    assert agent.certificate_covers(agent.parse_certificate(der("fullchain.pem")), name) is covered


def test_the_common_name_counts_only_without_subject_alt_names():
    legacy = agent.parse_certificate(der("selfsigned_2054.pem"))
    assert legacy["dnsNames"] == [] and agent.certificate_covers(legacy, "legacy.example.test")
    assert not agent.certificate_covers(legacy, "x.legacy.example.test")


@pytest.mark.parametrize("pattern,name", [("*.com", "example.com"), ("w*.example.test",
                                                                     "www.example.test"),
                                          ("*.*.test", "a.b.test")])
def test_wildcards_are_whole_left_most_labels_below_a_second_level(pattern, name):
    certificate = {"subject": "", "dnsNames": [pattern], "ipAddresses": []}
    assert not agent.certificate_covers(certificate, name)


def test_names_a_certificate_cannot_be_checked_against_are_left_out():
    assert agent.checkable_names(["_", "", "~^www\\d+\\.example\\.test$", "$host",
                                  "www.example.*", ".example.test", "Shop.Test",
                                  "shop.test"]) == ["example.test", "*.example.test",
                                                    "shop.test"]


def copy_config(tree, target, **paths):
    """The fixture tree under `target`, its absolute paths (/etc/nginx, ...) moved there too."""
    shutil.copytree(FIXTURES / tree, target)
    for path in target.rglob("*"):
        if path.is_file():
            text = path.read_text()
            for old, new in paths.items():
                text = text.replace(old, str(new))
            path.write_text(text)
    return target


def test_debians_nginx_config_with_its_tls_lines_enabled_and_a_certbot_site(tmp_path):
    root = copy_config("nginx", tmp_path / "nginx", **{"/etc/nginx": tmp_path / "nginx"})
    statements = agent._ConfigReader({}).nginx(str(root / "nginx.conf"), str(root))
    assert agent.nginx_sites(statements) == [
        # default: `include snippets/snakeoil.conf;` inside the server block, relative to nginx's
        {"serverNames": ["_"], "certificate": "/etc/ssl/certs/ssl-cert-snakeoil.pem"},
        {"serverNames": ["shop.example.test", "www.shop.example.test"],
         "certificate": "/etc/letsencrypt/live/shop.example.test/fullchain.pem"},
    ]  # the plain-HTTP redirect block is no TLS site


def test_nginx_servers_inherit_the_http_certificate_and_serve_both_of_their_own():
    text = """
    http {
      ssl_certificate "/etc/ssl/http level.pem";  # quoted, with a space
      server { listen 443 ssl http2; server_name a.test; }
      server { listen 8443 ssl; server_name b.test 'c.test';
               ssl_certificate /etc/ssl/b-rsa.pem; ssl_certificate /etc/ssl/b-ecdsa.pem; }
      server { listen 80; server_name plain.test; ssl_certificate /etc/ssl/unused.pem; }
      server { listen 443 quic reuseport; server_name h3.test; }
    }
    stream { server { listen 993 ssl; ssl_certificate /etc/ssl/imap.pem; } }
    """
    sites = agent.nginx_sites(agent.nginx_statements(agent.nginx_tokens(text)))
    assert sites == [
        {"serverNames": ["a.test"], "certificate": "/etc/ssl/http level.pem"},
        {"serverNames": ["b.test", "c.test"], "certificate": "/etc/ssl/b-rsa.pem"},
        {"serverNames": ["b.test", "c.test"], "certificate": "/etc/ssl/b-ecdsa.pem"},
        {"serverNames": ["h3.test"], "certificate": "/etc/ssl/http level.pem"},
        {"serverNames": [], "certificate": "/etc/ssl/imap.pem"},
    ]


def test_an_include_loop_ends(tmp_path):
    (tmp_path / "nginx.conf").write_text(f"include {tmp_path}/nginx.conf;\n"
                                         "server { listen 443 ssl; ssl_certificate /c.pem; }\n")
    reader = agent._ConfigReader({})
    sites = agent.nginx_sites(reader.nginx(str(tmp_path / "nginx.conf"), str(tmp_path)))
    assert len(sites) == agent.CONFIG_INCLUDE_DEPTH + 1 and reader.files <= agent.CONFIG_FILES_MAX


def test_debians_default_ssl_site_and_a_certbot_apache_site(tmp_path):
    lines = agent.apache_lines((FIXTURES / "apache" / "default-ssl.conf").read_text())
    assert agent.apache_sites(lines) == [
        {"serverNames": [], "certificate": "/etc/ssl/certs/ssl-cert-snakeoil.pem"}]
    lines = agent.apache_lines((FIXTURES / "apache" / "shop-le-ssl.conf").read_text())
    assert agent.apache_sites(lines) == [
        {"serverNames": ["shop.example.test", "www.shop.example.test"],
         "certificate": "/etc/letsencrypt/live/shop.example.test/fullchain.pem"}]


def test_apache_vhosts_without_tls_or_switched_off_are_no_sites():
    text = """<VirtualHost *:80>
      ServerName https://plain.test:80
    </VirtualHost>
    <VirtualHost *:443>
      ServerName off.test
      SSLEngine off
      SSLCertificateFile /etc/ssl/off.pem
    </VirtualHost>
    <VirtualHost 127.0.0.1:8443 [::1]:8443>
      ServerName https://on.test:8443
      ServerAlias a.on.test \\
                  b.on.test
      SSLEngine On
      SSLCertificateFile "/etc/ssl/on.pem"
    </VirtualHost>"""
    assert agent.apache_sites(agent.apache_lines(text)) == [
        {"serverNames": ["on.test", "a.on.test", "b.on.test"], "certificate": "/etc/ssl/on.pem"}]


def item(**fields):
    return {"source": "nginx", "file": "/etc/ssl/site.pem", "serverNames": ["example.test"],
            "der": der("fullchain.pem"), **fields}


def test_the_section_counts_and_orders_the_most_urgent_first():
    section = agent.parse_certificates([
        item(serverNames=["example.test", "www.example.test"]),
        item(file="/etc/ssl/other.pem", serverNames=["other.test", "example.test"]),
        item(file="/etc/ssl/legacy.pem", serverNames=["legacy.example.test"],
             der=der("selfsigned_2054.pem")),
        item(file="/etc/ssl/locked.pem", der=None, error=agent.UNREADABLE_HINT),
        {"source": "endpoint", "endpoint": "127.0.0.1:8443", "serverNames": [], "der": None,
         "error": "handshake failed: Connection refused"},
    ], NOW)
    validate(SCHEMA, section, "services.certificates")
    assert {k: v for k, v in section.items() if k != "certificates"} == {
        "total": 5, "expired": 0, "mismatched": 1, "unreadable": 2, "minDaysLeft": 89.0,
        "omitted": 0}
    first, second, site, other, legacy = section["certificates"]
    assert first == {"name": "127.0.0.1:8443", "source": "endpoint", "endpoint": "127.0.0.1:8443",
                     "error": "handshake failed: Connection refused"}
    assert second["error"].startswith("permission denied") and "key" in second["error"]
    assert site == {"name": "example.test", "source": "nginx", "file": "/etc/ssl/site.pem",
                    "subject": "example.test",
                    "names": ["example.test", "www.example.test", "*.shop.example.test",
                              "127.0.0.1", "::1"],
                    "issuer": "mPanel Test Root", "notAfter": 1803949593, "daysLeft": 89.0,
                    "matches": True}
    assert other["matches"] is False and other["unmatched"] == ["other.test"]
    assert legacy["name"] == "legacy.example.test" and legacy["daysLeft"] > 9000
    assert legacy["issuer"] == "legacy.example.test"  # self-signed: its own CN


def test_an_expired_certificate_counts_and_has_negative_days():
    section = agent.parse_certificates([item()], 1803949593 + 3 * 86400)
    assert section["expired"] == 1 and section["minDaysLeft"] == -3.0


def test_the_list_is_bounded_and_the_rest_counted():
    section = agent.parse_certificates([item(file=f"/etc/ssl/{n}.pem") for n in range(60)], NOW)
    validate(SCHEMA, section, "services.certificates")
    assert len(section["certificates"]) == 50 and section["omitted"] == 10
    assert section["total"] == 60


def test_text_from_a_certificate_or_a_config_is_stored_as_is_by_the_panel():
    """A NUL (the null-prefix attack), undecodable bytes of a path, overlong names."""
    section = agent.parse_certificates([item(file="/etc/ssl/\udcff\x00.pem",
                                             serverNames=["a" * 300 + ".test"])], NOW)
    validate(SCHEMA, section, "services.certificates")
    entry = section["certificates"][0]
    assert "\x00" not in entry["file"] and len(entry["name"]) == 200


def test_a_certificate_file_is_read_again_only_when_it_changes(tmp_path):
    leaf, legacy = ((FIXTURES / name).read_text() for name in ("fullchain.pem",
                                                               "selfsigned_2054.pem"))
    size = max(len(leaf), len(legacy))
    path, cache = tmp_path / "site.pem", {}
    path.write_text(leaf.ljust(size, "\n"))
    stat = path.stat()
    assert agent._certificate_file(str(path), cache) == (der("fullchain.pem"), None)
    path.write_text(legacy.ljust(size, "\n"))  # renewed in place, same size and mtime
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert agent._certificate_file(str(path), cache) == (der("fullchain.pem"), None)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert agent._certificate_file(str(path), cache) == (der("selfsigned_2054.pem"), None)


def test_an_endpoint_that_is_not_this_servers_is_refused_without_connecting():
    with pytest.raises(ValueError, match="not an address of this server"):
        agent.served_certificate("192.0.2.1", 443, "example.test")  # TEST-NET-1


@pytest.mark.parametrize("entry", ["no-port", "host:0", "host:99999", {"serverName": "x"}, 7])
def test_a_malformed_endpoint_is_a_config_error(entry):
    with pytest.raises(ValueError, match="endpoints"):
        agent._endpoints({"endpoints": [entry]})


def test_endpoints_take_a_string_or_an_address_and_a_server_name():
    """A host name is the SNI name and the name checked too; an address is neither."""
    assert agent._endpoints({"endpoints": ["127.0.0.1:443", "Shop.Test:443",
                                           {"address": "[::1]:8443", "serverName": "shop.test"}]}) \
        == [("127.0.0.1", 443, ""), ("shop.test", 443, "shop.test"), ("::1", 8443, "shop.test")]


def test_nothing_to_look_at_is_absent(tmp_path):
    (tmp_path / "nginx.conf").write_text("http { server { listen 80; server_name _; } }")
    with pytest.raises(agent.ServiceAbsent):
        agent.fetch_certificates({"nginxConfig": str(tmp_path / "nginx.conf"),
                                  "apacheConfig": str(tmp_path / "none" / "*")}, {})
