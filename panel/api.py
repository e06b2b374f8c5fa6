"""The agent API, `/api/agent/*`, and its OpenAPI document.

Every route reads its body through `read_json()`, which answers each kind of bad input with its
own 4xx before anything touches the database: 413 too large (before and after gzip), 415 wrong
content type or encoding, 400 not JSON, 422 schema violation (naming the field). Writes happen in
one transaction, so a request either stores everything it carries or nothing.
"""
import datetime
import json
import zlib

import bottle

from . import auth, ingest, jobs, models, protocol, writer
from .db import database_proxy, utcnow
from .errors import ApiError, JsonErrorPlugin, json_response
from .validation import ValidationError, validate


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
        validate(schema, document)
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


def _sample_rows(document, now, late_after, oldest):
    """Rows for every sample of a single or batch body; any bad sample refuses them all.
    A sample taken more than `late_after` before it arrived is marked late (back-filled)."""
    batch = "samples" in document
    rows = []
    for index, sample in enumerate(document["samples"] if batch else [document]):
        prefix = f"samples[{index}]." if batch else ""
        timestamp = _parse_timestamp(sample, now, prefix)
        if timestamp < oldest:
            raise ApiError(422, f"{prefix}timestamp is older than the panel keeps samples "
                                f"({(now - oldest).days} days)", prefix + "timestamp")
        try:
            row = ingest.sample_row(sample["metrics"], sample.get("unavailable"))
        except ValidationError as err:
            err.field = prefix + err.field
            raise _unprocessable(err) from None
        rows.append(dict(row, timestamp=timestamp, created_at=now,
                         late=now - timestamp > late_after))
    return rows


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
            models.Agent.update(
                hostname=document["hostname"], os=document["os"], arch=document["arch"],
                agent_version=document["version"],
                boot_time=_boot_time(document.get("bootTime")),
                ip_address=auth.client_address(settings) or None,
                status="active", last_seen=now, updated_at=now,
            ).where(models.Agent.id == agent.id).execute()
        jobs.note_alive(agent, now)
        return {"serverId": agent.server_id, "registered": True}

    @api.post("/api/agent/metrics", auth="agent")
    def metrics(agent):
        document = read_json(_metrics_schema, limit)
        _own_server(agent, document)
        now = utcnow()
        rows = _sample_rows(document, now, late_after,
                            now - datetime.timedelta(days=settings.retention_raw_days))
        try:
            stored = committer.submit(agent.id, rows, now)
        except writer.SampleUnstorable as err:
            # Nothing field-specific to name: on a batch the agent halves it until it finds
            # the one sample, and drops that.
            raise ApiError(422, f"{err}; sending it again cannot help") from None
        except writer.StoreUnavailable as err:
            # Not stored, and the agent still has them: it retries after the pause.
            raise ApiError(503, f"{err}; keep the samples and retry",
                           headers={"Retry-After": "30"}) from None
        jobs.note_alive(agent, now)
        return {"received": True, "stored": stored, "duplicates": len(rows) - stored,
                "nextReportIn": settings.report_interval}

    @api.post("/api/agent/heartbeat", auth="agent")
    def heartbeat(agent):
        document = read_json(protocol.HEARTBEAT, limit)
        _own_server(agent, document)
        now = utcnow()
        _parse_timestamp(document, now)
        models.Agent.update(last_seen=now).where(models.Agent.id == agent.id).execute()
        jobs.note_alive(agent, now)
        return {"status": "ok"}

    @api.get("/api/agent/config", auth="agent")
    def config(agent):
        return {"reportInterval": settings.report_interval,
                "metricsEnabled": list(settings.metrics_enabled)}

    @api.get("/healthz")
    def healthz():
        """For load balancers: 200 when the database answers."""
        try:
            database_proxy.execute_sql("SELECT 1")
        except Exception as err:  # any database failure means "not healthy"
            raise ApiError(503, f"database unreachable: {type(err).__name__}") from None
        return {"status": "ok", "database": "ok"}

    @api.get("/api/openapi.json")
    def openapi():
        return json_response(200, protocol.openapi_document())

    return api


def _boot_time(seconds):
    if seconds is None:
        return None
    return datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=int(seconds))
