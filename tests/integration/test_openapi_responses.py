"""Every refusal the agent API really answers is in /api/openapi.json for that operation, with
the headers the document promises and a body its schema describes. Provoked for real against
a panel of its own (Waitress on loopback, separate process): its failure limiter is driven to
429, which would hold up every other test's fresh keys on a shared panel."""
import json

import jsonschema
import pytest

from panel import db
from tests.conftest import bearer, http_request, new_server, start_panel, stop_panel

BODY_LIMIT = 4096
POSTS = ["/api/agent/register", "/api/agent/metrics", "/api/agent/heartbeat"]
OPERATIONS = [("POST", path) for path in POSTS] + [("GET", "/api/agent/config")]
# Keyless requests count against loopback's budget, wrong secrets against their key id's: the
# keyless 401 of every operation must fit in the first, so the 429s come from the second.
FAILURE_LIMIT = len(OPERATIONS) + 1


@pytest.fixture
def own_panel(tmp_path_factory):
    """A panel for this test alone: after a 429 its limiter holds loopback up for a minute."""
    directory = tmp_path_factory.mktemp("refusals")
    url = f"sqlite:///{directory / 'mpanel.db'}"
    database = db.open_database(url)
    db.init_schema(database)
    database.close()
    panel = start_panel(url, directory / "panel.log",
                        extra_env={"MPANEL_AUTH_FAILURE_LIMIT": str(FAILURE_LIMIT),
                                   "MPANEL_MAX_BODY_BYTES": str(BODY_LIMIT)})
    yield panel
    stop_panel(panel)


@pytest.fixture
def agent_key(own_panel):
    bound = db.bind(own_panel.database_url)
    server, key = new_server("refused")
    bound.close()
    return server, key


def _document(panel):
    response = http_request(panel, "GET", "/api/openapi.json")
    assert response.status == 200
    return response.json()


def assert_documented(document, method, path, response):
    """The answer's status, headers and body are what the document says of this operation."""
    responses = document["paths"][path][method.lower()]["responses"]
    status = str(response.status)
    assert status in responses, f"{method} {path} answered {status}, not in {sorted(responses)}"
    declared = responses[status]
    for name, header in declared.get("headers", {}).items():
        value = response.headers.get(name.lower())
        if value is None:
            assert not header.get("required"), f"{status} without its {name} header"
            continue
        typed = int(value) if header["schema"].get("type") == "integer" else value
        jsonschema.validate(typed, header["schema"])
    schema = declared["content"]["application/json"]["schema"]
    resolver = {"$defs": document["components"]["schemas"], **schema}
    text = json.dumps(resolver).replace("#/components/schemas/", "#/$defs/")
    jsonschema.validate(response.json(), json.loads(text))
    assert response.headers["content-type"].startswith("application/json")


def _send(panel, method, path, key=None, body=b"{}", content_type="application/json"):
    headers = {"Content-Type": content_type, **(bearer(key) if key else {})}
    return http_request(panel, method, path, body=body if method == "POST" else None,
                        headers=headers)


def test_every_refusal_the_agent_api_answers_is_in_its_document(own_panel, agent_key):
    server, key = agent_key
    document = _document(own_panel)
    seen = set()

    def check(method, path, expected, **kwargs):
        response = _send(own_panel, method, path, **kwargs)
        assert response.status == expected, (method, path, response.status, response.text)
        assert_documented(document, method, path, response)
        seen.add(expected)

    for method, path in OPERATIONS:
        check(method, path, 200 if method == "GET" else 422, key=key)
    for path in POSTS:
        check("POST", path, 400, key=key, body=b"{not json")
        check("POST", path, 413, key=key, body=b" " * (BODY_LIMIT + 1))
        check("POST", path, 415, key=key, content_type="text/plain")
    for path in ("/api/agent/metrics", "/api/agent/heartbeat"):
        body = json.dumps({"serverId": server.id + 1, "timestamp": "2026-11-30T01:52:00Z",
                           "metrics": {}}).encode()
        check("POST", path, 403, key=key, body=body)
    for method, path in OPERATIONS:
        check(method, path, 401)
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    for _ in range(FAILURE_LIMIT):
        _send(own_panel, "GET", "/api/agent/config", key=wrong)
    for method, path in OPERATIONS:
        check(method, path, 429, key=wrong)
    assert seen == {200, 400, 401, 403, 413, 415, 422, 429}


def test_a_503_comes_as_the_document_says(own_panel):
    """The database refuses the write (the agent row vanished while its key was still cached
    by the panel: a foreign-key failure), so the answer is 503 with Retry-After."""
    from panel import models
    from tests.conftest import stamp

    document = _document(own_panel)
    bound = db.bind(own_panel.database_url)
    try:
        server, key = new_server("vanishing")
        body = {"serverId": server.id, "timestamp": stamp(1), "metrics": {"cpu": {"usage": 1}}}
        assert _send(own_panel, "POST", "/api/agent/metrics", key=key,
                     body=json.dumps(body).encode()).status == 200  # the key is cached now
        models.Agent.delete().where(models.Agent.server == server.id).execute()
        body["timestamp"] = stamp(2)
        response = _send(own_panel, "POST", "/api/agent/metrics", key=key,
                         body=json.dumps(body).encode())
    finally:
        bound.close()
    assert response.status == 503, response.text
    assert_documented(document, "POST", "/api/agent/metrics", response)
