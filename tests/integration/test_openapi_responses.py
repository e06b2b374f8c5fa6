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


def test_every_refusal_the_token_api_answers_is_in_its_document(own_panel):
    """/api/v1 (api_v1.py): each answer and refusal of each operation, provoked for real, is
    in the document with its headers and a body its schema describes."""
    from panel import models, operations, tokens
    from tests.conftest import TEST_BCRYPT_ROUNDS

    bound = db.bind(own_panel.database_url)
    try:
        acme = operations.add_customer("Acme", "acme")
        operations.set_admin("staff", "staff password 1", TEST_BCRYPT_ROUNDS)
        operations.set_admin("acme", "acme password 1", TEST_BCRYPT_ROUNDS,
                             role="customer-admin", customer_id=acme.id)
        staff = models.admin_by_username("staff")
        write = tokens.create(staff, "write", "write")[1]
        read = tokens.create(staff, "read", "read")[1]
        customer = tokens.create(models.admin_by_username("acme"), "acme", "write")[1]
        server, _key = new_server("documented")
        doomed, _key = new_server("doomed")
    finally:
        bound.close()
    document = _document(own_panel)
    operations_of = [(method.upper(), path) for path, ops in document["paths"].items()
                     if path.startswith("/api/v1/") for method in ops]
    seen = set()

    def check(method, template, expected, token=None, body=None, content_type=None,
              query="", server_id=server.id):
        path = template.replace("{serverId}", str(server_id))
        headers = dict(bearer(token) if token else {})
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        response = http_request(own_panel, method, path + query, body=body, headers=headers)
        assert response.status == expected, (method, path, response.status, response.text)
        assert_documented(document, method, template, response)
        seen.add(expected)

    new = "/api/v1/servers"
    for method, path in operations_of:
        if method == "GET":
            check(method, path, 200, write)
            if "{serverId}" in path:
                check(method, path, 404, write, server_id=999999)
    check("DELETE", "/api/v1/servers/{serverId}", 200, write, server_id=doomed.id)
    check("DELETE", "/api/v1/servers/{serverId}", 404, write, server_id=doomed.id)
    check("DELETE", "/api/v1/servers/{serverId}", 403, read)
    check("GET", "/api/v1/customers", 403, customer)
    check("GET", "/api/v1/servers/{serverId}/series", 400, read, query="?range=2h")
    check("POST", new, 201, write, json.dumps({"name": "made"}).encode())
    check("POST", new, 409, write, json.dumps({"name": "made"}).encode())
    check("POST", new, 422, write, json.dumps({"name": ""}).encode())
    check("POST", new, 400, write, b"{not json")
    check("POST", new, 413, write, b" " * (BODY_LIMIT + 1))
    check("POST", new, 415, write, b"{}", "text/plain")
    check("POST", new, 403, read, json.dumps({"name": "read-only"}).encode())
    # Keyless requests count against loopback's budget: as many as it holds.
    for method, path in operations_of[:FAILURE_LIMIT - 1]:
        check(method, path, 401)
    wrong = read[:-4] + ("aaaa" if not read.endswith("aaaa") else "bbbb")
    for _ in range(FAILURE_LIMIT):
        http_request(own_panel, "GET", "/api/v1/servers", headers=bearer(wrong))
    for method, path in operations_of:
        check(method, path, 429, wrong)
    assert seen == {200, 201, 400, 401, 403, 404, 409, 413, 415, 422, 429}


def test_a_token_api_503_comes_as_the_document_says(own_panel):
    """The token's table is gone (a failed restore, a revoked grant): 503 with Retry-After,
    as the document says, never a 500 nor a 401 that would tell the script its token is bad."""
    from panel import models, operations, tokens
    from tests.conftest import TEST_BCRYPT_ROUNDS

    document = _document(own_panel)
    bound = db.bind(own_panel.database_url)
    try:
        operations.set_admin("staff", "staff password 1", TEST_BCRYPT_ROUNDS)
        token = tokens.create(models.admin_by_username("staff"), "gone", "read")[1]
        assert http_request(own_panel, "GET", "/api/v1/servers",
                            headers=bearer(token)).status == 200
        bound.execute_sql("DROP TABLE api_tokens")
    finally:
        bound.close()
    response = http_request(own_panel, "GET", "/api/v1/servers", headers=bearer(token))
    assert response.status == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert_documented(document, "GET", "/api/v1/servers", response)
