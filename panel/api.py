"""The agent API, `/api/agent/*`, and its OpenAPI document.

Every route reads its body through `read_json()`, which answers each kind of bad input with its
own 4xx before anything touches the database: 413 too large (before and after gzip), 415 wrong
content type or encoding, 400 not JSON, 422 schema violation (naming the field). Writes happen in
one transaction, so a request either stores everything it carries or nothing.
"""
import datetime
import json
import logging
import zlib

import bottle

from . import auth, ingest, jobs, migrations, models, protocol, upgrades, writer
from .db import database_proxy, product_name, utcnow
from .errors import DATABASE_RETRY_AFTER, ApiError, JsonErrorPlugin, json_response
from .errors import trouble as database_trouble
from .validation import ValidationError, validate

log = logging.getLogger("mpanel.api")


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def read_body(limit):
    """The request body, un-gzipped, at most `limit` bytes either way."""
    request = bottle.request
    length = request.content_length
    if length > limit:
        raise ApiError(413, f"body of {length} bytes exceeds the limit of {limit} bytes")
    stream = request.environ["wsgi.input"]
    raw = stream.read(length) if length >= 0 else stream.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(413, f"body exceeds the limit of {limit} bytes")

    encoding = (request.get_header("Content-Encoding") or "identity").strip().lower()
    if encoding == "identity":
        return raw
    if encoding != "gzip":
        raise ApiError(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none",
                       "Content-Encoding")
    # Decompress with a ceiling: a few KB of gzip can expand to gigabytes.
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(raw, limit + 1)
    except zlib.error:
        raise ApiError(400, "body is not valid gzip", "Content-Encoding") from None
    if len(body) > limit or inflater.unconsumed_tail:
        raise ApiError(413, f"decompressed body exceeds the limit of {limit} bytes")
    if not inflater.eof:
        raise ApiError(400, "gzip body is truncated", "Content-Encoding")
    return body


def read_json(schema, limit):
    """Parse the JSON request body and validate it against `schema` (or `schema(document)`)."""
    content_type = (bottle.request.content_type or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, "Content-Type must be application/json", "Content-Type")
    body = read_body(limit)
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=_reject_constant,
                              parse_float=_finite_float)
    except UnicodeDecodeError:
        raise ApiError(400, "body is not UTF-8") from None
    except RecursionError:
        raise ApiError(400, "body is nested too deeply") from None
    except ValueError as err:
        raise ApiError(400, f"body is not valid JSON: {err}") from None
    if not isinstance(document, dict):
        raise ApiError(422, "body must be a JSON object")
    if callable(schema):
        schema = schema(document)
    try:
        # Without a \u escape, strict UTF-8 and JSON leave no way to write a NUL or a lone
        # surrogate: every string meets the text rule, and the validator need not ask each.
        validate(schema, document, text_checked=b"\\u" not in body)
    except ValidationError as err:
        raise _unprocessable(err) from None
    return document


def _unprocessable(err):
    return ApiError(422, f"{err.field} {err.message}" if err.field else err.message, err.field)


def _metrics_schema(document):
    """The batch form carries `samples`; the single form `timestamp` and `metrics`."""
    return protocol.BATCH_BODY if "samples" in document else protocol.METRICS_BODY


def _own_server(agent, document):
    if int(document["serverId"]) != agent.server_id:
        raise ApiError(403, f"serverId {document['serverId']} does not belong to this API key",
                       "serverId")


def _parse_timestamp(document, now, prefix=""):
    try:
        return ingest.parse_timestamp(document["timestamp"], now, prefix + "timestamp")
    except ValidationError as err:
        raise _unprocessable(err) from None


def _sample_timestamps(document, now):
    """The parsed timestamp of every sample of a single or batch body, in order."""
    batch = "samples" in document
    return [_parse_timestamp(sample, now, f"samples[{index}]." if batch else "")
            for index, sample in enumerate(document["samples"] if batch else [document])]


def _sample_rows(document, timestamps, now, late_after, oldest, offset):
    """Rows for every sample of a single or batch body; any bad sample refuses them all.
    A sample taken more than `late_after` before it was sent — by the agent's own clock,
    `offset` seconds ahead of the panel's — is marked late (replayed from the agent's buffer);
    a clock set back an hour does not make its fresh samples late."""
    batch = "samples" in document
    agent_now = now + datetime.timedelta(seconds=offset or 0)
    rows = []
    for index, sample in enumerate(document["samples"] if batch else [document]):
        prefix = f"samples[{index}]." if batch else ""
        timestamp = timestamps[index]
        if timestamp < oldest:
            raise ApiError(422, f"{prefix}timestamp is older than the panel keeps samples "
                                f"({(now - oldest).days} days)", prefix + "timestamp")
        row = ingest.sample_row(sample["metrics"], sample.get("unavailable"))
        rows.append(dict(row, timestamp=timestamp, created_at=now,
                         late=agent_now - timestamp > late_after))
    return rows


def _measured_offset(now, agent_time=None, newest=None):
    """The agent's clock offset this request shows (ingest.clock_offset): from its Date header
    or `agent_time`; failing those, a newest sample stamped ahead of the panel by more than
    the warning threshold (only a clock ahead can stamp one) gives at least that lead."""
    offset = ingest.clock_offset(now, bottle.request.get_header("Date"), agent_time)
    if offset is None and newest is not None:
        lead = round((newest - now).total_seconds())
        if lead > models.CLOCK_SKEW_WARNING:
            offset = lead
    return offset


def _note_clock(agent, offset):
    """Record the agent's clock offset when it moved by more than a Date header's resolution;
    WARNING when the clock goes off (or comes back), as the servers table then shows."""
    known = agent.clock_offset
    if offset is None or (known is not None and abs(offset - known) < ingest.CLOCK_RESOLUTION):
        return
    models.update_agent(agent.id, clock_offset=offset)
    agent.clock_offset = offset  # the cached row too, so the next requests do not write again
    was, now_skewed = models.clock_skew(known), models.clock_skew(offset)
    if now_skewed and now_skewed != was:
        log.warning("agent clock is off server_id=%s offset_s=%s", agent.server_id, offset)
    elif was and not now_skewed:
        log.warning("agent clock is right again server_id=%s offset_s=%s", agent.server_id,
                    offset)


def build_api(settings, committer):
    api = bottle.Bottle()
    api.install(JsonErrorPlugin())
    limit = settings.max_body_bytes
    # Two missed reports and some slack: later than that, the sample was buffered by the agent.
    late_after = datetime.timedelta(seconds=2 * settings.report_interval + 30)

    @api.post("/api/agent/register", auth="agent")
    def register(agent):
        document = read_json(protocol.REGISTER, limit)
        now = utcnow()
        with database_proxy.atomic():
            models.update_agent(
                agent.id, hostname=document["hostname"], os=document["os"],
                arch=document["arch"], agent_version=document["version"],
                boot_time=_boot_time(document.get("bootTime")),
                ip_address=auth.client_address(settings) or None,
                auto_update=document.get("autoUpdate") is True,
                status="active", last_seen=now, updated_at=now)
        _note_clock(agent, _measured_offset(now))
        jobs.note_alive(agent, now)
        upgrades.note_registration(agent, document, now)
        return {"serverId": agent.server_id, "registered": True}

    @api.post("/api/agent/metrics", auth="agent")
    def metrics(agent):
        document = read_json(_metrics_schema, limit)
        _own_server(agent, document)
        now = utcnow()
        try:
            timestamps = _sample_timestamps(document, now)
        except ApiError:
            # Samples refused for their times (a clock more than a day ahead): the clock is
            # still recorded, so the servers table says why nothing arrives.
            _note_clock(agent, _measured_offset(now))
            raise
        measured = _measured_offset(now, newest=max(timestamps))
        rows = _sample_rows(document, timestamps, now, late_after,
                            now - datetime.timedelta(days=settings.retention_raw_days),
                            agent.clock_offset if measured is None else measured)
        try:
            stored = committer.submit(agent.id, rows, now)
        except writer.SampleUnstorable as err:
            # Nothing field-specific to name: on a batch the agent halves it until it finds
            # the one sample, and drops that.
            raise ApiError(422, f"{err}; sending it again cannot help") from None
        except writer.StoreUnavailable as err:
            # Not stored, and the agent still has them: it retries after the pause.
            raise ApiError(503, f"{err}; keep the samples and retry",
                           headers={"Retry-After": str(DATABASE_RETRY_AFTER)}) from None
        _note_clock(agent, measured)
        jobs.note_alive(agent, now)
        return with_offer(agent, {"received": True, "stored": stored,
                                  "duplicates": len(rows) - stored,
                                  "nextReportIn": settings.report_interval})

    @api.post("/api/agent/heartbeat", auth="agent")
    def heartbeat(agent):
        document = read_json(protocol.HEARTBEAT, limit)
        _own_server(agent, document)
        now = utcnow()
        try:
            sent_at = _parse_timestamp(document, now)
        except ApiError:
            _note_clock(agent, _measured_offset(now))  # as for metrics: say why
            raise
        models.update_agent(agent.id, last_seen=now)
        _note_clock(agent, _measured_offset(now, agent_time=sent_at))
        jobs.note_alive(agent, now)
        return {"status": "ok"}

    @api.get("/api/agent/config", auth="agent")
    def config(agent):
        answer = {"reportInterval": settings.report_interval}
        if settings.enabled_collectors:  # else not narrowed: whatever collectors the agent has
            answer["metricsEnabled"] = list(settings.enabled_collectors)
        return with_offer(agent, answer)

    def with_offer(agent, answer):
        """The answer, with the `upgrade` a running rollout offers this agent (upgrades.py)."""
        offer = upgrades.offer_for(agent, settings)
        if offer is not None:
            answer["upgrade"] = offer
        return answer

    @api.get(upgrades.DOWNLOAD_PATH, auth="agent")
    def upgrade_file(agent):
        """The shipped agent.py, to an agent over its own authenticated connection; the same
        bytes whose SHA-256 an offer announces."""
        shipped = upgrades.shipped_agent(settings.agent_file)
        if shipped is None:
            raise ApiError(404, "this panel ships no agent.py")
        bottle.response.content_type = "text/x-python; charset=utf-8"
        bottle.response.set_header("Cache-Control", "no-store")
        bottle.response.set_header("X-Agent-Version", shipped.version)
        return shipped.data

    @api.get("/healthz")
    def healthz():
        """For load balancers: 200 when the database answers with the schema this panel uses
        (one query). An unreachable database is a 503 from the boundary plugin (errors.py)."""
        problems = migrations.schema_problems()
        if problems:
            database_trouble.failed("schema_mismatch", "; ".join(problems), "/healthz")
            raise ApiError(503, f"the {product_name()} database's schema does not match "
                                f"this panel: "
                                f"{'; '.join(problems[:5])}", "database",
                           headers={"Retry-After": str(DATABASE_RETRY_AFTER)})
        database_trouble.answered("/healthz")
        return {"status": "ok", "database": "ok"}

    @api.get("/api/openapi.json")
    def openapi():
        return json_response(200, protocol.openapi_document())

    return api


def _boot_time(seconds):
    if seconds is None:
        return None
    return datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=int(seconds))
