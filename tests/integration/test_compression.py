"""gzip of the panel's answers over real HTTP (Waitress, its own process; SQLite and PostgreSQL):
the servers page of a fleet, its htmx partial, the static files, a JSON API answer and an agent
download, each fetched with and without `Accept-Encoding: gzip`. Compressed bytes decompress to
exactly the plain ones; small answers, HEAD, Range requests and cross-site requests with cookies
stay plain; a gzip ETag gives 304. (/metrics: test_prometheus.py.)"""
import gzip
import os
import re

import pytest

from panel import SECURITY_HEADERS, compression, models, operations, tokens
from tests.conftest import ROOT, TEST_BCRYPT_ROUNDS, bearer, http_request, wait_for
from tests.integration.test_customers import logged_in

GZIP = {"Accept-Encoding": "gzip, deflate, br", "Sec-Fetch-Site": "same-origin"}
PLAIN = {"Sec-Fetch-Site": "same-origin"}  # http.client's own Accept-Encoding: identity
FLEET = 300


@pytest.fixture
def fleet(panel):
    for index in range(FLEET):
        operations.add_server(f"srv-{index:04d}", TEST_BCRYPT_ROUNDS)


@pytest.fixture
def admin(panel):
    return logged_in(panel, "admin")


def htmx_path():
    return "/static/" + next((ROOT / "panel" / "static").glob("htmx-*.js")).name


def both(fetch, path, headers=None):
    """(plain, zipped) answers to the same GET, without and with gzip accepted."""
    return (fetch("GET", path, headers={**PLAIN, **(headers or {})}),
            fetch("GET", path, headers={**GZIP, **(headers or {})}))


def clock_free(body):
    """A servers page without what moves with the clock between two fetches of it (the
    panel's time, in whole seconds, and the "12 s ago" texts)."""
    body = re.sub(rb'data-now="\d+"', b'data-now=""', body)
    return re.sub(rb"(<time\b[^>]*>)[^<]*(</time>)", rb"\1\2", body)


def assert_same_bytes(plain, zipped, same=lambda body: body):
    assert plain.status == zipped.status == 200
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert plain.headers["vary"] == zipped.headers["vary"] == "Accept-Encoding"
    assert int(zipped.headers["content-length"]) == len(zipped.body) < len(plain.body)
    assert same(gzip.decompress(zipped.body)) == same(plain.body)


def test_the_servers_page_of_a_fleet_and_its_partial_gzip_to_the_same_bytes(fleet, admin):
    plain, zipped = both(admin.request, "/servers")
    assert b"srv-0" in plain.body and len(plain.body) > 4 * compression.MIN_BYTES
    assert_same_bytes(plain, zipped, clock_free)
    assert len(zipped.body) < len(plain.body) / 5
    for name in SECURITY_HEADERS:
        assert zipped.headers[name.lower()] == plain.headers[name.lower()]
    # The htmx refresh: compressed as the page when it is as large, plain when it is small
    # (what it holds depends on what changed since the page).
    plain, zipped = both(admin.request, "/servers", {"HX-Request": "true"})
    if plain.status == 200 and len(plain.body) >= compression.MIN_BYTES:
        assert_same_bytes(plain, zipped, clock_free)
    else:
        assert "content-encoding" not in zipped.headers
        assert clock_free(zipped.body) == clock_free(plain.body)


@pytest.mark.parametrize("path", [htmx_path(), "/static/style.css", "/downloads/agent.py"])
def test_static_files_and_downloads_gzip_to_the_file_and_keep_a_distinct_etag(panel, path):
    def fetch(method, path, headers):
        return http_request(panel, method, path, headers=headers)

    for _ in range(2):  # the second one from the cache of compressed files
        plain, zipped = both(fetch, path)
        assert_same_bytes(plain, zipped)
    assert zipped.headers["etag"] == compression.gzip_etag(plain.headers["etag"])
    assert zipped.headers.get("cache-control") == plain.headers.get("cache-control")
    if path.startswith("/downloads/"):
        assert plain.body == (ROOT / "agent.py").read_bytes()


def test_every_file_the_panel_opens_for_an_answer_is_closed(panel):
    """A cached gzip answer does not read the file Bottle opened, and a compressed one replaces
    it: the middleware closes it either way (Linux: the process's open files in /proc)."""
    def open_shipped_files():
        folder = f"/proc/{panel.process.pid}/fd"
        names = []
        for fd in os.listdir(folder):
            try:
                names.append(os.readlink(f"{folder}/{fd}"))
            except OSError:  # closed meanwhile
                pass
        return [name for name in names if name.startswith(str(ROOT / "panel" / "static"))
                or name == str(ROOT / "agent.py")]

    for _ in range(20):
        for path in (htmx_path(), "/static/style.css", "/downloads/agent.py"):
            for headers in (GZIP, PLAIN, {**GZIP, "Range": "bytes=0-99"}):
                assert http_request(panel, "GET", path, headers=headers).status in (200, 206)
    assert wait_for(lambda: not open_shipped_files(), timeout=10), open_shipped_files()


def test_a_gzip_etag_and_a_plain_etag_each_give_304(panel):
    path = htmx_path()
    zipped = http_request(panel, "GET", path, headers=GZIP)
    again = http_request(panel, "GET", path,
                         headers={**GZIP, "If-None-Match": zipped.headers["etag"]})
    assert again.status == 304 and again.body == b""
    assert again.headers["etag"] == zipped.headers["etag"]
    plain = http_request(panel, "GET", path, headers=PLAIN)
    again = http_request(panel, "GET", path,
                         headers={**PLAIN, "If-None-Match": plain.headers["etag"]})
    assert again.status == 304 and again.headers["etag"] == plain.headers["etag"]
    # A client holding the gzip copy that no longer accepts gzip gets the plain file.
    again = http_request(panel, "GET", path,
                         headers={**PLAIN, "If-None-Match": zipped.headers["etag"]})
    assert again.status == 200 and again.body == plain.body


def test_a_range_request_gets_its_plain_bytes_even_when_gzip_is_accepted(panel):
    whole = (ROOT / "panel" / "static" / "style.css").read_bytes()
    part = http_request(panel, "GET", "/static/style.css",
                        headers={**GZIP, "Range": "bytes=100-1999"})
    assert part.status == 206 and "content-encoding" not in part.headers
    assert part.body == whole[100:2000]
    assert part.headers["content-range"] == f"bytes 100-1999/{len(whole)}"


def test_a_json_api_answer_gzips_to_the_same_bytes(fleet, panel):
    operations.set_admin("reader", "token password 1", TEST_BCRYPT_ROUNDS)
    token = tokens.create(models.admin_by_username("reader"), "reader", "read")[1]

    def fetch(method, path, headers):
        return http_request(panel, method, path, headers={**bearer(token), **headers})

    plain, zipped = both(fetch, "/api/v1/servers")
    assert plain.headers["content-type"].startswith("application/json")
    assert_same_bytes(plain, zipped)


def test_small_answers_errors_and_head_stay_plain(panel):
    for path, status in (("/healthz", 200), ("/static/favicon.svg", 200),
                         ("/api/v1/servers", 401), ("/no/such/page", 404)):
        answer = http_request(panel, "GET", path, headers=GZIP)
        assert answer.status == status, path
        assert len(answer.body) < compression.MIN_BYTES, path
        assert "content-encoding" not in answer.headers, path
        assert answer.headers["vary"] == "Accept-Encoding", path
        if status >= 400:
            assert answer.json()["error"], path
    head = http_request(panel, "HEAD", htmx_path(), headers=GZIP)
    assert head.status == 200 and head.body == b"" and "content-encoding" not in head.headers


def test_a_cross_site_request_with_cookies_is_not_compressed(fleet, admin):
    """BREACH: a hostile page can make the browser send the session cookie with its guesses in
    the URL, but the answer's length then says nothing about the page's secrets."""
    for site in ("cross-site", "same-site", None):
        headers = {"Accept-Encoding": "gzip", **({"Sec-Fetch-Site": site} if site else {})}
        answer = admin.request("GET", "/servers", headers=headers)
        assert answer.status == 200 and "content-encoding" not in answer.headers, site
        assert re.search(rb'name="csrf_token"|srv-0001', answer.body)
