"""Waitress, set up for a panel that may face the network on its own: `serve(app, settings)`.

Waitress's defaults suit an app behind a proxy: 100 connections, and a connection closed only
after 120 s *without any byte* (`channel_timeout`, checked every 30 s). A hundred sockets that
send nothing — or that trickle a header one byte a second, which counts as activity — took the
panel offline for as long as they were held (issue 10). Here:

  - MPANEL_CONNECTION_LIMIT connections (4000), and the process's open-file limit raised to fit
    them (each connection is a file descriptor, two while a large body spills to a temporary
    file); poll() instead of select(), whose FD_SETSIZE stops at 1024 descriptors.
  - Every connection must deliver a request's headers within MPANEL_HEADER_TIMEOUT (10 s) and
    the whole request, body included, within MPANEL_BODY_TIMEOUT (60 s), counted from when the
    panel began waiting for it: the connection's opening for its first request, the request's
    first byte for the next ones on a kept-alive connection. Waitress counts only silence, so
    this is the small subclass below (`GuardedChannel` stamps the start, `GuardedServer` checks
    the deadlines in Waitress's once-a-second maintenance, on the event loop's own thread).
  - A kept-alive connection may idle between requests for MPANEL_IDLE_TIMEOUT (180 s): longer
    than the proxies' upstream keep-alive (nginx 60 s, Caddy 2 min), so the proxy always closes
    an idle connection first and never sends a request on one the panel is closing.

What a proxy in front adds is in docs/security.md ("Connections: the panel alone and behind the
proxy").

Waitress's own "Task queue depth is N" WARNING, which it writes for every request that arrives
while all its threads are busy, is held to one a minute (QueueWarnings): under a steady load
of agents waiting for their commits it was a line per report, written by the event loop.
"""
import json
import logging
import socket
import time

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask

from . import SECURITY_HEADERS, compression

log = logging.getLogger("mpanel.serving")

# Seconds between checks of the deadlines; Waitress's default of 30 would let a silent socket
# live up to 30 s past its timeout.
CLEANUP_INTERVAL = 1
# Seconds without a late connection before closing them is logged as over.
QUIET_AFTER = 60
# Descriptors beyond the connections: the database pool, log files, the listening socket and
# Waitress's trigger pipe.
SPARE_FILES = 256


class GuardedChannel(HTTPChannel):
    """A connection that remembers since when the panel has been waiting for its current
    request: `waiting_since` is a time.time() stamp, or None while the connection idles between
    requests (or one of its requests is being served)."""

    def __init__(self, server, sock, addr, adj, map=None):
        super().__init__(server, sock, addr, adj, map=map)
        # The first request's clock starts at the connection, so waiting before the first byte
        # buys no time.
        self.waiting_since = self.creation_time

    def received(self, data):
        if self.waiting_since is None and self.request is None:
            self.waiting_since = time.time()  # the first byte of the next request
        accepted = super().received(data)
        if self.request is None:  # no partial request left over
            self.waiting_since = None
        return accepted


class PanelErrorTask(ErrorTask):
    """Waitress's own answers: to a request it cannot parse or will not take (a bad header, a
    Content-Length that is no number, an unknown transfer coding), and the 500 it writes when
    an exception escapes the app. The panel never sees these requests, so they are answered
    here as the panel answers its own refusals (errors.py): JSON naming the problem, and the
    pages' security headers, where Waitress writes plain text and none."""

    def execute(self):
        error = self.request.error
        body = json.dumps({"error": f"{error.reason}: {error.body}"}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"),
                                      ("Cache-Control", "no-store"),
                                      *SECURITY_HEADERS.items()])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


GuardedChannel.error_task_class = PanelErrorTask


class GuardedServer(TcpWSGIServer):
    channel_class = GuardedChannel

    def __init__(self, app, sock, adj, header_timeout, body_timeout):
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.cut = 0  # connections closed for a late request, since the last warning
        self.last_cut = 0.0
        super().__init__(app, _sock=sock, adj=adj, bind_socket=False,
                         sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))

    def maintenance(self, now):
        super().maintenance(now)  # idle connections, after channel_timeout without a byte
        late = []
        for channel in self.active_channels.values():
            if channel.requests:
                # Being served: that time is the panel's, not the client's. A request read
                # behind it (pipelined) starts its clock once the panel is done.
                if channel.request is not None:
                    channel.waiting_since = now
                continue
            since = getattr(channel, "waiting_since", None)
            if since is None or channel.will_close:
                continue
            in_body = channel.request is not None and channel.request.headers_finished
            if now - since > (self.body_timeout if in_body else self.header_timeout):
                channel.will_close = True  # closed by the loop's next pass, as Waitress does
                late.append(channel)
        # WARNING when closing starts, INFO once a minute has passed without any, DEBUG between:
        # an attack is two lines in the log, not one a second.
        if late:
            if not self.cut:
                log.warning("closing connections that sent no complete request in time "
                            "count=%d addr=%s header_timeout=%s body_timeout=%s", len(late),
                            late[0].addr[0] if late[0].addr else "?", self.header_timeout,
                            self.body_timeout)
            else:
                log.debug("closing late connections count=%d", len(late))
            self.cut += len(late)
            self.last_cut = now
        elif self.cut and now - self.last_cut > QUIET_AFTER:
            log.info("no late connections for %ds closed=%d", QUIET_AFTER, self.cut)
            self.cut = 0


class QueueWarnings(logging.Filter):
    """Waitress warns "Task queue depth is N" whenever a request arrives while all its threads
    are busy: under steady load — reports waiting for their commit — that is one WARNING per
    request, formatted and written by the event loop's thread. As for late connections: the
    first warning of a backlog, then at most one per QUIET_AFTER seconds, saying how many it
    stands for."""

    def __init__(self, every=QUIET_AFTER, clock=time.monotonic):
        super().__init__()
        self.every, self.clock = every, clock
        self.last = None
        self.held = 0

    def filter(self, record):
        now = self.clock()
        if self.last is not None and now - self.last < self.every:
            self.held += 1
            return False
        if self.held:
            record.msg = f"{record.msg} (and %d more since the last such warning)"
            record.args = (*record.args, self.held)
        self.last, self.held = now, 0
        return True


QUEUE_WARNINGS = QueueWarnings()


def listen_socket(host, port, reuse_port=False, backlog=1024):
    """The listening socket; with reuse_port several processes bind it together and the
    kernel spreads the connections between them (Linux SO_REUSEPORT)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(backlog)
    return sock


def fit_file_limit(connection_limit):
    """Raise this process's soft open-file limit so connection_limit connections fit; where the
    hard limit is lower, return the connection limit that does fit (and say so)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return connection_limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connection_limit + SPARE_FILES
    if hard != resource.RLIM_INFINITY and hard < wanted:
        fitting = max(hard - SPARE_FILES, 16)
        log.warning("open-file limit too low for the connection limit hard_limit=%d "
                    "connection_limit=%d using=%d (raise LimitNOFILE)", hard, connection_limit,
                    fitting)
        connection_limit, wanted = fitting, hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return connection_limit


def adjustments(settings, sock):
    """Waitress's settings for this panel."""
    return Adjustments(
        sockets=[sock], threads=settings.threads,
        connection_limit=fit_file_limit(settings.connection_limit),
        channel_timeout=settings.idle_timeout, cleanup_interval=CLEANUP_INTERVAL,
        asyncore_use_poll=True,
        # Waitress's own cap is a backstop well above ours, so normal oversize requests get our
        # JSON 413 rather than Waitress's plain-text one.
        max_request_body_size=settings.max_body_bytes * 4,
        # No Server header: it tells a scanner what answers, and it was 16 of the 2,048 bytes
        # a minute an agent may use on the wire.
        ident="",
        # X-Forwarded-* headers are passed through untouched: auth.client_address() and
        # require_https() trust them only from MPANEL_TRUSTED_PROXIES (a list of networks,
        # where Waitress takes a single address).
        clear_untrusted_proxy_headers=False)


def serve(app, settings, reuse_port=False):
    """Serve app, its answers gzipped for clients that accept it (compression.py), until the
    process is stopped."""
    sock = listen_socket(settings.host, settings.port, reuse_port)
    queue_log = logging.getLogger("waitress.queue")
    if QUEUE_WARNINGS not in queue_log.filters:
        queue_log.addFilter(QUEUE_WARNINGS)
    server = GuardedServer(compression.Compressor(app), sock, adjustments(settings, sock),
                           settings.header_timeout, settings.body_timeout)
    server.run()
