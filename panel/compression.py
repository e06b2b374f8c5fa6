"""gzip for the panel's answers when the client accepts it (issue 15): `Compressor(app)` wraps
the WSGI app where Waitress is handed it (serving.serve), so pages, htmx partials, JSON, CSV,
`/metrics`, the downloads and the static files are compressed in one place, error pages
included.

`choose(environ, status, headers)` is the pure decision, walked by tests/unit/test_compression.py:
  - Only the media types of COMPRESSIBLE_TYPES (text, JSON, JavaScript, SVG); images, gzip
    bundles and other binaries pass as they are.
  - Only when Accept-Encoding allows gzip (`accepts_gzip`: present, q > 0).
  - Never on HEAD, 1xx, 204, 304, or a partial answer (206, any Content-Range: Bottle's
    static_file serves Range requests, and a range of the plain bytes cannot be gzipped).
  - Never an answer that already has a Content-Encoding.
  - Never below MIN_BYTES.
  - Never for a request that carries cookies and was not made from the panel's own pages
    (Sec-Fetch-Site other than same-origin or none): BREACH, see docs/security.md
    ("Compression").
  - Every answer of a compressible type says `Vary: Accept-Encoding`, compressed or not, so a
    cache never hands a gzip copy to a client that did not ask for one (or the reverse).

A compressed answer's ETag gets ETAG_SUFFIX ("abc" -> "abc-gzip", as Apache does): gzip bytes
are another representation, and even a weak tag would compare equal to the plain one under
If-None-Match's weak comparison. A request's If-None-Match is given back its plain tag before
the app sees it (Bottle's static_file compares the header with its own tag), and the 304 then
carries the suffixed tag again.

Answers with a strong ETag (the static files and downloads: Bottle's tag hashes the file's
path, inode, mtime and size) are compressed once, at CACHED_LEVEL, and kept in a small bounded
cache keyed by path and tag. Other answers are compressed at LEVEL for each request. Bodies the
app hands over as a file or an iterable are read and compressed whole when their length is at
most BUFFERED_BYTES, and streamed (no Content-Length: chunked) when longer or unknown.
"""
import collections
import itertools
import threading
import zlib

# Measured on the /servers page of a 1,000-server fleet (680 KB of HTML, docs/benchmarks.md
# "Compression"): level 1 gives 18.0 KB in 0.94 ms, level 4 15.8 KB in 1.9 ms, level 6 14.1 KB
# in 2.2 ms. Per request, the cheapest level: 97 % of the bytes off, for half level 4's CPU.
LEVEL = 1
# Compressed once per file and process (htmx 19.6 KB at level 1, 16.6 KB at 9, 1.8 ms once).
CACHED_LEVEL = 9
# Below 1 KiB gzip saves a few hundred bytes at most (a 1,139-byte login page: 519), the answer
# fits in one or two packets either way, and the 18 bytes of gzip framing weigh most; JSON
# errors (about 100 bytes) stay plain.
MIN_BYTES = 1024
# A file or iterable up to this length is compressed in memory and sent with its
# Content-Length; a longer one is streamed.
BUFFERED_BYTES = 8 * 1024 * 1024
# The cache of compressed static files: the panel ships five (htmx 51 KB the largest).
CACHE_ENTRIES = 32
CACHE_BYTES = 4 * 1024 * 1024
ETAG_SUFFIX = "-gzip"

# Media types worth compressing; "type/*" covers every subtype.
COMPRESSIBLE_TYPES = frozenset({
    "text/*",  # pages, partials, CSS, /metrics, CSV, the agent and install scripts
    "application/json",
    "application/javascript",
    "application/xml",
    "image/svg+xml",
})
# Statuses whose answers carry no body of their own, or only part of one.
UNCOMPRESSED_STATUSES = frozenset({204, 206, 304})
# Sec-Fetch-Site values of requests made by the panel's own pages or typed by the user.
OWN_FETCHES = frozenset({"same-origin", "none"})

Choice = collections.namedtuple("Choice", "vary gzip reason")


# ===== The decision =============================================================================

def accepts_gzip(header):
    """Whether an Accept-Encoding header allows gzip (present, and not with q=0)."""
    for part in (header or "").lower().split(","):
        coding, _, params = part.partition(";")
        if coding.strip() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=").strip() if params else "1"
            try:
                return float(quality) > 0
            except ValueError:
                return False
    return False


def compressible(content_type):
    """Whether a Content-Type value names a type of COMPRESSIBLE_TYPES."""
    media = (content_type or "").partition(";")[0].strip().lower()
    return media in COMPRESSIBLE_TYPES or f"{media.partition('/')[0]}/*" in COMPRESSIBLE_TYPES


def cross_site_with_cookies(environ):
    """A request that carries cookies but was not made by the panel's own pages: one a hostile
    page can make the browser send, many times, with guesses in its URL (BREACH). Browsers say
    so in Sec-Fetch-Site; a browser that does not send it gets no compression while it has a
    cookie. Scripts and Prometheus send no cookies."""
    return bool(environ.get("HTTP_COOKIE")) and \
        environ.get("HTTP_SEC_FETCH_SITE") not in OWN_FETCHES


def header(headers, name):
    """The value of header `name` in a WSGI header list, or None."""
    name = name.lower()
    return next((value for key, value in headers if key.lower() == name), None)


def choose(environ, status, headers):
    """Whether the answer (WSGI status line and header list) says Vary and is gzipped, and why
    not. A missing Content-Length is left to the body (Compressor reads up to MIN_BYTES)."""
    if not compressible(header(headers, "Content-Type")):
        return Choice(False, False, "type")
    code = int(status.split(" ", 1)[0])
    if header(headers, "Content-Encoding") is not None:
        return Choice(True, False, "encoded")
    if code < 200 or code in UNCOMPRESSED_STATUSES or header(headers, "Content-Range"):
        return Choice(True, False, "status")
    if environ.get("REQUEST_METHOD") == "HEAD":
        return Choice(True, False, "head")
    if not accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING")):
        return Choice(True, False, "not accepted")
    if cross_site_with_cookies(environ):
        return Choice(True, False, "cross-site")
    length = header(headers, "Content-Length")
    if length is not None and length.strip().isdigit() and int(length) < MIN_BYTES:
        return Choice(True, False, "small")
    return Choice(True, True, "gzip")


# ===== ETags ====================================================================================

def gzip_etag(tag):
    """The tag of the gzip representation: the suffix inside the quotes (W/"x" -> W/"x-gzip";
    Bottle's unquoted tags get it at the end)."""
    if tag.endswith('"'):
        return f'{tag[:-1]}{ETAG_SUFFIX}"'
    return tag + ETAG_SUFFIX


def plain_etag(tag):
    """The plain tag a gzip_etag() was made from, or None if `tag` is not one."""
    tag = tag.strip()
    quoted = tag.endswith('"')
    core = tag[:-1] if quoted else tag
    if not core.endswith(ETAG_SUFFIX):
        return None
    return core[:-len(ETAG_SUFFIX)] + ('"' if quoted else "")


def strong(tag):
    return tag is not None and not tag.startswith("W/")


def with_header(headers, name, value):
    """`headers` with `name` set to `value` (or removed when value is None)."""
    kept = [(key, old) for key, old in headers if key.lower() != name.lower()]
    return kept if value is None else [*kept, (name, value)]


def with_vary(headers):
    vary = header(headers, "Vary")
    if vary is None:
        return [*headers, ("Vary", "Accept-Encoding")]
    listed = {part.strip().lower() for part in vary.split(",")}
    if "accept-encoding" in listed or "*" in listed:
        return headers
    return with_header(headers, "Vary", f"{vary}, Accept-Encoding")


# ===== The middleware ===========================================================================

class CompressedCache:
    """Compressed bodies by (path, strong ETag, length), the least recently used dropped beyond
    CACHE_ENTRIES entries or CACHE_BYTES bytes."""

    def __init__(self, entries=CACHE_ENTRIES, size=CACHE_BYTES):
        self.entries, self.size = entries, size
        self.bodies = collections.OrderedDict()
        self.lock = threading.Lock()  # Waitress's threads share it

    def get(self, key):
        with self.lock:
            body = self.bodies.get(key)
            if body is not None:
                self.bodies.move_to_end(key)
            return body

    def put(self, key, body):
        if len(body) > self.size:
            return
        with self.lock:
            self.bodies[key] = body
            while len(self.bodies) > self.entries or \
                    sum(map(len, self.bodies.values())) > self.size:
                self.bodies.popitem(last=False)


def gzipped(chunks, level):
    """The gzip stream of an iterable of bytes (mtime 0: the same bytes give the same answer)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


def close(body):
    """WSGI: the server closes the body it is handed, so a body the middleware replaces is the
    middleware's to close (a static file's open file)."""
    if hasattr(body, "close"):
        body.close()


def closing(chunks, body):
    """Yield chunks, then close the app's body."""
    try:
        yield from chunks
    finally:
        close(body)


def write(data):
    """start_response's write(): Bottle never calls it; an app that did would bypass the
    headers decided here."""
    raise NotImplementedError("the panel's app does not write() its answers")


class Compressor:
    """WSGI middleware: the app's answers gzipped as `choose` decides. Bottle calls
    start_response before it returns the body, which lets the headers be decided here."""

    def __init__(self, app, cache=None):
        self.app = app
        self.cache = cache or CompressedCache()

    def __call__(self, environ, start_response):
        holds_gzip_copy = self.plain_if_none_match(environ)
        answer = []

        def remember(status, headers, exc_info=None):
            answer[:] = [status, headers, exc_info]
            return write

        body = self.app(environ, remember)
        status, headers, exc_info = answer
        tag = header(headers, "ETag")
        if status.startswith("304") and holds_gzip_copy and tag:
            # Bottle strips a 304 of its Content-Type: the gzip tag the client named says
            # which copy is current.
            start_response(status, with_vary(with_header(headers, "ETag", gzip_etag(tag))),
                           exc_info)
            return body
        choice = choose(environ, status, headers)
        if not choice.vary:
            start_response(status, headers, exc_info)
            return body
        headers = with_vary(headers)
        if not choice.gzip:
            start_response(status, headers, exc_info)
            return body
        return self.compress(environ, start_response, status, headers, exc_info, body, tag)

    @staticmethod
    def plain_if_none_match(environ):
        """Give If-None-Match its plain tags back, so the app compares them with its own; true
        when the client named a gzip copy (and still accepts one)."""
        sent = environ.get("HTTP_IF_NONE_MATCH")
        if not sent or not accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING")):
            return False
        tags = [part.strip() for part in sent.split(",")]
        plain = [plain_etag(tag) for tag in tags]
        if not any(plain):
            return False
        environ["HTTP_IF_NONE_MATCH"] = ", ".join(
            original if stripped is None else stripped for original, stripped in zip(tags, plain))
        return True

    def compress(self, environ, start_response, status, headers, exc_info, body, tag):
        length = header(headers, "Content-Length")
        length = int(length) if length and length.strip().isdigit() else None
        key = (environ.get("PATH_INFO"), tag, length) if strong(tag) and length is not None \
            else None
        compressed = self.cache.get(key) if key else None
        if compressed is None:
            chunks = iter(body)
            if length is None:  # read up to the floor: a short body stays plain
                head, size = [], 0
                for chunk in chunks:
                    head.append(chunk)
                    size += len(chunk)
                    if size >= MIN_BYTES:
                        break
                else:
                    start_response(status, headers, exc_info)
                    return closing(head, body)
                return self.stream(start_response, status, headers, exc_info, body,
                                   itertools.chain(head, chunks), tag)
            if length > BUFFERED_BYTES:
                return self.stream(start_response, status, headers, exc_info, body, chunks, tag)
            try:
                plain = b"".join(chunks)
            finally:
                close(body)
            compressed = b"".join(gzipped([plain], CACHED_LEVEL if key else LEVEL))
            if key:
                self.cache.put(key, compressed)
        else:
            close(body)
        headers = with_header(headers, "Content-Length", str(len(compressed)))
        start_response(status, self.gzip_headers(headers, tag), exc_info)
        return [compressed]

    def stream(self, start_response, status, headers, exc_info, body, chunks, tag):
        headers = with_header(headers, "Content-Length", None)
        start_response(status, self.gzip_headers(headers, tag), exc_info)
        return closing(gzipped(chunks, LEVEL), body)

    @staticmethod
    def gzip_headers(headers, tag):
        headers = [*headers, ("Content-Encoding", "gzip")]
        return with_header(headers, "ETag", gzip_etag(tag)) if tag else headers

