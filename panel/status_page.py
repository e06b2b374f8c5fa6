"""The public status pages' figures (the staff's /status and each customer's /status/<slug>):
up or down now, and uptime over 24 h, 7 d and 30 d.

Uptime comes from the server's recorded transitions (server_events, written once each by
jobs.detect_offline and jobs.note_alive), not from counting samples: a sample gap of a few
minutes is not an outage, an offline transition is. Pure arithmetic, tested alone.
"""
import datetime

from . import models
from .db import utcnow

WINDOWS = (("24 h", datetime.timedelta(hours=24)), ("7 d", datetime.timedelta(days=7)),
           ("30 d", datetime.timedelta(days=30)))


def uptime_percent(events, state, window_start, now, monitored_since):
    """Share of [window_start, now] the server was up, in percent, or None when it was never
    monitored in that window.

    events: [(time, "offline"|"online")] in time order, those after window_start.
    state: the server's state now ("online", "offline" or "unknown" = never reported).
    monitored_since: when monitoring began (the server's creation); time before it is not
    counted either way.
    """
    start = max(window_start, monitored_since)
    if state == "unknown" or start >= now:
        return None
    # The state at `start` is the opposite of the first transition after it, or, with none,
    # the state now.
    inside = [(t, kind) for t, kind in events if start < t <= now]
    down = (inside[0][1] == "online") if inside else (state == "offline")
    down_seconds, since = 0.0, start
    for moment, kind in inside:
        if down and kind == "online":
            down_seconds += (moment - since).total_seconds()
            down = False
        elif not down and kind == "offline":
            since, down = moment, True
    if down:
        down_seconds += (now - since).total_seconds()
    total = (now - start).total_seconds()
    return max(0.0, min(100.0, 100.0 * (1 - down_seconds / total)))


def public_servers(now=None, customer_id=None):
    """Rows for /status (the staff's published servers) or, given a customer, for its
    /status/<slug>: name, up/down, uptime per window. No metric, no hostname, no address."""
    now = now or utcnow()
    servers = models.public_status_servers(customer_id)
    events = models.server_events_since([s.id for s in servers], now - WINDOWS[-1][1])
    rows = []
    for server in servers:
        transitions = [(e.at, e.kind) for e in events[server.id]]
        rows.append({
            "name": server.name,
            "state": {"online": "up", "offline": "down"}.get(server.state, "not reporting yet"),
            "since": server.state_since,
            "uptime": [(label, uptime_percent(transitions, server.state, now - span, now,
                                              server.created_at))
                       for label, span in WINDOWS],
        })
    return rows
