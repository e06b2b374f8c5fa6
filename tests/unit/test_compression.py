"""panel/compression.py: which answers are gzipped (the decision table), their headers and ETags,
and the middleware over small WSGI apps (bodies as bytes, files and iterables)."""
import gzip
import io

import pytest

from panel import compression
from panel.compression import MIN_BYTES, Compressor, choose

LARGE = b"<tr><td>srv-0001</td><td>12 %</td></tr>\n" * 100  # 4 KB of a page's rows
BROWSER = {"REQUEST_METHOD": "GET", "PATH_INFO": "/servers", "HTTP_ACCEPT_ENCODING": "gzip, br",
           "HTTP_COOKIE": "mpanel_session=x", "HTTP_SEC_FETCH_SITE": "same-origin"}


def answer(content_type="text/html; charset=utf-8", length=len(LARGE), **extra):
    headers = [("Content-Type", content_type)] if content_type else []
    if length is not None:
        headers.append(("Content-Length", str(length)))
    return headers + [(name.replace("_", "-"), value) for name, value in extra.items()]


@pytest.mark.parametrize("header, accepted", [
    ("gzip", True), ("gzip, deflate", True), ("deflate, gzip;q=0.5", True), ("*", True),
    ("GZIP", True), ("gzip;q=0", False), ("gzip; q=0.0", False), ("identity", False),
    ("", False), (None, False), ("gzip;q=x", False), ("br", False),
])
def test_gzip_is_used_only_when_accepted(header, accepted):
    assert compression.accepts_gzip(header) is accepted


@pytest.mark.parametrize("content_type, compressible", [
    ("text/html; charset=utf-8", True), ("text/css; charset=UTF-8", True),
    ("text/plain; version=0.0.4; charset=utf-8", True), ("text/csv; charset=utf-8", True),
    ("text/x-python; charset=utf-8", True), ("application/json", True),
    ("application/javascript; charset=UTF-8", True), ("image/svg+xml", True),
    ("Application/JSON", True), ("image/png", False), ("application/gzip", False),
    ("application/octet-stream", False), ("", False), (None, False),
])
def test_only_text_like_types_are_compressed(content_type, compressible):
    assert compression.compressible(content_type) is compressible


@pytest.mark.parametrize("environ, status, headers, expected", [
    ({}, "200 OK", answer(), (True, True, "gzip")),
    ({}, "200 OK", answer("image/png"), (False, False, "type")),
    ({}, "200 OK", answer(None), (False, False, "type")),
    ({"HTTP_ACCEPT_ENCODING": "gzip;q=0"}, "200 OK", answer(), (True, False, "not accepted")),
    ({"HTTP_ACCEPT_ENCODING": None}, "200 OK", answer(), (True, False, "not accepted")),
    ({"REQUEST_METHOD": "HEAD"}, "200 OK", answer(), (True, False, "head")),
    ({}, "206 Partial Content", answer(Content_Range="bytes 0-9/4100"), (True, False, "status")),
    ({}, "200 OK", answer(Content_Range="bytes 0-9/4100"), (True, False, "status")),
    ({}, "204 No Content", answer(length=0), (True, False, "status")),
    ({}, "304 Not Modified", answer(), (True, False, "status")),
    ({}, "101 Switching Protocols", answer(), (True, False, "status")),
    ({}, "200 OK", answer(Content_Encoding="gzip"), (True, False, "encoded")),
    ({}, "200 OK", answer(length=MIN_BYTES - 1), (True, False, "small")),
    ({}, "200 OK", answer(length=MIN_BYTES), (True, True, "gzip")),
    ({}, "200 OK", answer(length=None), (True, True, "gzip")),  # the body decides
    ({}, "404 Not Found", answer("application/json"), (True, True, "gzip")),
    ({}, "503 Service Unavailable", answer("application/json", 90), (True, False, "small")),
    # BREACH: cookies on a request a hostile page made
    ({"HTTP_SEC_FETCH_SITE": "cross-site"}, "200 OK", answer(), (True, False, "cross-site")),
    ({"HTTP_SEC_FETCH_SITE": "same-site"}, "200 OK", answer(), (True, False, "cross-site")),
    ({"HTTP_SEC_FETCH_SITE": None}, "200 OK", answer(), (True, False, "cross-site")),
    ({"HTTP_SEC_FETCH_SITE": "none"}, "200 OK", answer(), (True, True, "gzip")),
    ({"HTTP_COOKIE": None, "HTTP_SEC_FETCH_SITE": None}, "200 OK", answer(),
     (True, True, "gzip")),  # Prometheus, curl, API tokens: no ambient credential
])
def test_the_decision_table(environ, status, headers, expected):
    request = {key: value for key, value in {**BROWSER, **environ}.items() if value is not None}
    assert tuple(choose(request, status, headers)) == expected


@pytest.mark.parametrize("tag, zipped", [
    ('"abc"', '"abc-gzip"'), ('W/"abc"', 'W/"abc-gzip"'), ("3f2a", "3f2a-gzip"),
])
def test_a_gzip_etag_differs_from_the_plain_one_and_maps_back(tag, zipped):
    assert compression.gzip_etag(tag) == zipped
    assert compression.plain_etag(zipped) == tag
    assert compression.plain_etag(tag) is None


@pytest.mark.parametrize("vary, expected", [
    (None, "Accept-Encoding"), ("Cookie", "Cookie, Accept-Encoding"),
    ("accept-encoding", "accept-encoding"), ("*", "*"),
])
def test_vary_names_accept_encoding_once(vary, expected):
    headers = [("Content-Type", "text/html")] + ([("Vary", vary)] if vary else [])
    assert compression.header(compression.with_vary(headers), "Vary") == expected


# ===== The middleware over small apps ===========================================================

class App:
    """A WSGI app answering `body` (bytes, a list, a file or a generator) with `headers`,
    recording the If-None-Match it saw and whether its body was closed."""

    def __init__(self, body, headers, status="200 OK"):
        self.body, self.headers, self.status = body, headers, status
        self.seen_if_none_match = None
        self.calls = 0

    def __call__(self, environ, start_response):
        self.calls += 1
        self.seen_if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        start_response(self.status, list(self.headers))
        return self.body() if callable(self.body) else self.body


def fetch(app, **environ):
    """(status, headers as a dict, body bytes) of one request through Compressor(app)."""
    result = {}

    def start_response(status, headers, exc_info=None):
        result.update(status=status, headers=dict(headers))

    request = {key: value for key, value in {**BROWSER, **environ}.items() if value is not None}
    chunks = app(request, start_response)
    try:
        body = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    return result["status"], result["headers"], body


def test_a_large_page_is_gzipped_with_its_length_and_vary():
    status, headers, body = fetch(Compressor(App([LARGE], answer())))
    assert headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
    assert int(headers["Content-Length"]) == len(body) < len(LARGE) / 5
    assert gzip.decompress(body) == LARGE


def test_a_plain_answer_still_says_vary_and_keeps_its_headers():
    headers_in = answer(X_Frame_Options="DENY")
    status, headers, body = fetch(Compressor(App([LARGE], headers_in)), HTTP_ACCEPT_ENCODING=None)
    assert body == LARGE and "Content-Encoding" not in headers
    assert headers["Vary"] == "Accept-Encoding" and headers["X-Frame-Options"] == "DENY"
    assert headers["Content-Length"] == str(len(LARGE))


def test_a_binary_answer_passes_untouched():
    app = App([LARGE], answer("application/gzip"))
    assert fetch(Compressor(app)) == ("200 OK", dict(answer("application/gzip")), LARGE)


class File(io.BytesIO):
    closed_by_someone = False

    def close(self):
        File.closed_by_someone = True
        super().close()


def test_a_file_body_is_compressed_once_and_closed_each_time():
    """A static file (a strong ETag): compressed once, then served from the cache; the file
    the app opened is closed on every request."""
    app = App(lambda: File(LARGE), answer("application/javascript", ETag="3f2a"))
    compressor = Compressor(app)
    first = fetch(compressor)
    File.closed_by_someone = False
    second = fetch(compressor)
    assert File.closed_by_someone
    assert first == second and gzip.decompress(second[2]) == LARGE
    assert second[1]["ETag"] == "3f2a-gzip"
    assert compressor.cache.get(("/servers", "3f2a", len(LARGE))) == second[2]


def test_an_iterable_of_unknown_length_is_streamed_past_the_floor_and_plain_below_it():
    def chunks(data):
        return lambda: (data[start:start + 100] for start in range(0, len(data), 100))

    status, headers, body = fetch(Compressor(App(chunks(LARGE), answer(length=None))))
    assert headers["Content-Encoding"] == "gzip" and "Content-Length" not in headers
    assert gzip.decompress(body) == LARGE
    small = LARGE[:MIN_BYTES - 1]
    status, headers, body = fetch(Compressor(App(chunks(small), answer(length=None))))
    assert body == small and "Content-Encoding" not in headers


def test_a_body_longer_than_the_buffer_is_streamed(monkeypatch):
    monkeypatch.setattr(compression, "BUFFERED_BYTES", 1000)
    status, headers, body = fetch(Compressor(App([LARGE[:2000], LARGE[2000:]], answer())))
    assert "Content-Length" not in headers and gzip.decompress(body) == LARGE


def test_if_none_match_with_the_gzip_tag_reaches_the_app_as_the_plain_one():
    app = App([], [("ETag", '"3f2a"')], status="304 Not Modified")  # Bottle's 304: no type
    status, headers, body = fetch(Compressor(app), HTTP_IF_NONE_MATCH='"3f2a-gzip"')
    assert app.seen_if_none_match == '"3f2a"'
    assert status.startswith("304") and headers["ETag"] == '"3f2a-gzip"' and body == b""
    # A client that holds the plain copy is told about the plain one.
    status, headers, _ = fetch(Compressor(app), HTTP_IF_NONE_MATCH='"3f2a"')
    assert app.seen_if_none_match == '"3f2a"' and headers["ETag"] == '"3f2a"'
    # One that no longer accepts gzip must not be told its gzip copy is current.
    fetch(Compressor(app), HTTP_IF_NONE_MATCH='"3f2a-gzip"', HTTP_ACCEPT_ENCODING=None)
    assert app.seen_if_none_match == '"3f2a-gzip"'


def test_the_cache_is_bounded_by_entries_and_bytes():
    cache = compression.CompressedCache(entries=2, size=100)
    cache.put("a", b"x" * 40)
    cache.put("b", b"x" * 40)
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", b"x" * 40)  # 120 bytes: the least recently used (b) goes
    assert cache.get("b") is None and cache.get("a") and cache.get("c")
    cache.put("d", b"x" * 101)  # larger than the whole cache: not kept
    assert cache.get("d") is None and len(cache.bodies) == 2
