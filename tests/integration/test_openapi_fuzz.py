"""Schemathesis against a real panel (Waitress on loopback, separate process) with a real key,
reading the panel's own /api/openapi.json: generated requests must never get a 5xx, an answer
the document does not describe (status, headers, body), or — for a request the document calls
valid — anything but a 2xx. Bounded: a fixed seed and a few dozen cases per operation and mode.

What a JSON Schema cannot say is relative to the request: a sample's time must lie within the
panel's window around *now*, and `serverId` must be the key's own server. Those two, and only
those, are moved where the rules put them before a case is sent, and only when the generated
value is one the schema allows (so a negative case keeps its mutation).
"""
import datetime
import re

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis import checks as core_checks
from schemathesis.specs.openapi import checks as openapi_checks

from panel import protocol
from panel.validation import ValidationError, validate
from tests.conftest import bearer, new_server

CASES_PER_OPERATION = 30
SEED = 20261201
RESPONSE_CHECKS = [
    core_checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
]
MODES = {
    "positive": (schemathesis.GenerationMode.POSITIVE, []),
    "negative": (schemathesis.GenerationMode.NEGATIVE, [openapi_checks.negative_data_rejection]),
}
_ZONE = re.compile(r"(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$")


def _allowed(schema, value):
    try:
        validate(schema, value)
    except ValidationError:
        return False
    return True


def _recent(value, age):
    """`value` moved to `age` ago, in the same form (string with its fraction and zone, or a
    number of the same type), when the schema allows it; otherwise unchanged."""
    if not _allowed(protocol.TIMESTAMP, value):
        return value
    moment = datetime.datetime.now(datetime.timezone.utc) - age
    if isinstance(value, str):
        try:
            offset = datetime.datetime.fromisoformat(value).utcoffset()
        except ValueError:
            return value
        match = _ZONE.search(value)
        if offset is None or match is None:
            return value
        fraction, zone = match.groups()
        return (moment + offset).strftime("%Y-%m-%dT%H:%M:%S") + (fraction or "") + zone
    return type(value)(moment.timestamp())


def _within_the_rules(body, server_id):
    """Set in the body what the schema cannot express, as the rules require."""
    if "serverId" in body and _allowed(protocol.SERVER_ID, body["serverId"]):
        body["serverId"] = server_id
    samples = body.get("samples") if isinstance(body.get("samples"), list) else [body]
    for index, sample in enumerate(samples):
        if isinstance(sample, dict) and "timestamp" in sample:
            # Distinct, oldest first, as an agent replays its buffer.
            sample["timestamp"] = _recent(sample["timestamp"],
                                          datetime.timedelta(minutes=len(samples) - index))


@pytest.fixture(scope="module")
def api_schema(panel_process):
    return schemathesis.openapi.from_url(f"{panel_process.url}/api/openapi.json", timeout=30)


OPERATIONS = [("POST", "/api/agent/register"), ("POST", "/api/agent/metrics"),
              ("POST", "/api/agent/heartbeat"), ("GET", "/api/agent/config")]
# The token API's operations, from the document itself (a new one is fuzzed without an edit
# here), called with a staff-wide read-write token.
V1_OPERATIONS = [(method.upper(), path) for path, operations in
                 protocol.openapi_document()["paths"].items() if path.startswith("/api/v1/")
                 for method in operations]


def _v1_within_the_rules(case, counter):
    """What the schema cannot say of /api/v1: a server id names a server that exists (a fresh
    one for DELETE), a customer id a customer, and a new server's name is one no server has and
    holds no character the names' rule refuses (operations.py). Only values the schema allows
    are moved, so a negative case keeps its mutation."""
    from panel import models, operations
    from panel.errors import unshowable

    parameters = case.path_parameters or {}
    if "serverId" in parameters and _allowed(protocol.SERVER_ID, parameters["serverId"]):
        server, _ = new_server(f"fuzz-target-{next(counter)}")
        parameters["serverId"] = server.id
    if isinstance(case.body, dict):
        name = case.body.get("name")
        if _allowed(protocol.API_V1_NEW_SERVER["properties"]["name"], name):
            kept = "".join(ch for ch in name if not unshowable(ch)).strip()[:80]
            case.body["name"] = f"fuzz-{next(counter)}-{kept}".strip()
        if "customerId" in case.body and case.body["customerId"] is not None and _allowed(
                protocol.API_V1_NEW_SERVER["properties"]["customerId"],
                case.body["customerId"]):
            case.body["customerId"] = (models.customers() or [
                operations.add_customer("Fuzzed", "fuzzed")])[0].id


def fuzz(panel, operation, mode, credential, fit):
    """Send CASES_PER_OPERATION generated requests of `mode` to one operation with the Bearer
    `credential`, each moved by `fit(case)` where the rules put it first; every answer must be
    one the document describes, and (positive mode) a 2xx."""
    generation_mode, extra_checks = MODES[mode]
    headers = bearer(credential)
    answered = {}

    @hypothesis.seed(SEED)
    @hypothesis.settings(max_examples=CASES_PER_OPERATION, deadline=None, database=None,
                         derandomize=False, phases=[hypothesis.Phase.generate],
                         suppress_health_check=list(HealthCheck), print_blob=True)
    @hypothesis.given(case=operation.as_strategy(generation_mode=generation_mode))
    def check(case):
        fit(case)
        response = case.call(base_url=panel.url, headers=headers, timeout=30)
        answered[response.status_code] = answered.get(response.status_code, 0) + 1
        case.validate_response(response, checks=RESPONSE_CHECKS + extra_checks, headers=headers)
        if mode == "positive":
            assert 200 <= response.status_code < 300, (
                f"schema-valid request refused: {response.status_code} {response.text[:300]}\n"
                f"{case.as_curl_command(headers=headers)}")

    check()
    assert sum(answered.values()) >= CASES_PER_OPERATION // 2, answered


# PostgreSQL only: the backend whose columns refuse what SQLite would take (the document is
# the same on both, and the run is the slowest part of the suite's contract checks).
@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("method,path", OPERATIONS,
                         ids=[path.rsplit("/", 1)[1] for _, path in OPERATIONS])
def test_generated_requests_get_documented_answers(panel, api_schema, method, path, mode):
    server, key = new_server("fuzzed")

    def fit(case):
        if isinstance(case.body, dict):
            _within_the_rules(case.body, server.id)

    fuzz(panel, api_schema[path][method], mode, key, fit)


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("method,path", V1_OPERATIONS,
                         ids=[f"{method}-{path[len('/api/v1/'):]}" for method, path in
                              V1_OPERATIONS])
def test_generated_token_api_requests_get_documented_answers(panel, api_schema, method, path,
                                                             mode):
    import itertools

    from panel import models, operations, tokens
    from tests.conftest import TEST_BCRYPT_ROUNDS

    operations.set_admin("fuzzer", "fuzz password 1", TEST_BCRYPT_ROUNDS)
    _row, token = tokens.create(models.admin_by_username("fuzzer"), "fuzz", "write")
    new_server("fuzzed")
    counter = itertools.count()
    fuzz(panel, api_schema[path][method], mode, token,
         lambda case: _v1_within_the_rules(case, counter))
