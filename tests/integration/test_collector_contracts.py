"""A contract for every registered collector, services included: what it emits on this machine
(system collectors) or against a real server (nginx serving both status pages, Redis, PostgreSQL,
MariaDB, the Docker Engine API stand-in on a unix socket, php-fpm) validates against its wire
schema in panel/protocol.py, carries no key that schema does not know, and every key it emits is
one the panel stores (a column or the sample's detail) or one listed in KNOWINGLY_IGNORED below.

"Stored" is measured, not listed: with a key taken out of the section, ingest.sample_row must
build a different row. So the check holds whatever ingest maps a key onto.
"""
import copy
import json
import sys
import time
from pathlib import Path

import pytest

import agent
from panel import ingest, protocol
from panel.validation import validate
from tests.conftest import (free_port, start_nginx, start_php_fpm, stop_php_fpm, stop_process,
                            wait_for_port)
from tests.integration.test_mysql import mysql_settings  # noqa: F401
from tests.integration.test_certificates import tls_sites  # noqa: F401
from tests.integration.test_services import (docker_socket, postgres_settings,  # noqa: F401
                                             redis_port)
from tests.integration.test_services_mail import (daemon_folder,  # noqa: F401
                                                  postfix_deferred)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# Keys the agent sends that the panel knowingly does not keep, with the reason: the one place
# this is declared (an emitted key neither stored nor here fails its collector's contract).
KNOWINGLY_IGNORED = {
    "cpu.count": "the number of CPUs says how to read the load averages; the servers table and "
                 "charts show load as sent, so the panel keeps no column or detail for it",
}


@pytest.fixture
def web_status_urls(tmp_path):
    """Real nginx: its own stub_status, and Apache's captured mod_status `?auto` page as a file
    (no Apache here; the collector only reads the page)."""
    port = free_port()
    page = FIXTURES / "apache_server_status_auto.txt"
    process = start_nginx(tmp_path, f"""
  server {{
    listen 127.0.0.1:{port};
    location = /nginx_status {{ stub_status; }}
    location = /server-status {{ default_type text/plain; alias {page}; }}
  }}""")
    try:
        wait_for_port(port, process)
        yield {"nginx": {"url": f"http://127.0.0.1:{port}/nginx_status"},
               "apache": {"url": f"http://127.0.0.1:{port}/server-status?auto"}}
    finally:
        stop_process(process)


@pytest.fixture
def php_fpm_pools(tmp_path):
    """Real php-fpm: a pool read from its status page and one counted from its processes."""
    fpm = start_php_fpm(tmp_path, {"www": {}, "plain": {"status": False}})
    try:
        yield {}  # found from the running master: nothing to configure
    finally:
        stop_php_fpm(fpm)


@pytest.fixture
def service_settings(web_status_urls, redis_port, postgres_settings,  # noqa: F811
                     docker_socket, mysql_settings, tls_sites, postfix_deferred,  # noqa: F811
                     php_fpm_pools):
    return {**web_status_urls, "redis": {"port": redis_port},
            "postgresql": postgres_settings, "docker": {"socket": docker_socket},
            "mysql": mysql_settings, "certificates": tls_sites["settings"],
            "mailqueue": {"postfixQueue": str(postfix_deferred.queue)},
            "phpfpm": php_fpm_pools,
            # Processes every machine here runs: the test's own interpreter, and one missing.
            "watched": {"names": [Path(sys.executable).name, "mpanel-not-running"]}}


def _sections(names, settings):
    """Each collector's output of a second sample (rates exist from the second on)."""
    ctx = agent.CollectorContext(services=settings)
    agent.run_collectors(names, ctx)
    time.sleep(0.3)
    metrics, unavailable = agent.run_collectors(names, ctx)
    assert unavailable == {}
    return metrics


def _schema_of(name):
    spec = agent.COLLECTORS[name]
    sections = protocol.METRICS["properties"]
    if spec.group == agent.SERVICES:
        return sections["services"]["properties"].get(name)
    return sections.get(name)


def _paths(value, path=""):
    """Every key path in a JSON value: `disk.mounts[].percent` for a key of list entries."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield f"{path}{key}"
            yield from _paths(inner, f"{path}{key}.")
    elif isinstance(value, list):
        for item in value:
            yield from _paths(item, path[:-1] + "[]." if path else "[].")


def _schema_paths(schema, path=""):
    for key, inner in schema.get("properties", {}).items():
        yield f"{path}{key}"
        yield from _schema_paths(inner, f"{path}{key}.")
        if "items" in inner:
            yield from _schema_paths(inner["items"], f"{path}{key}[].")


def _without(value, path):
    """A copy of `value` with the key at `path` taken out (of every entry, for a list's)."""
    value = copy.deepcopy(value)
    parts = path.replace("[]", "").split(".")
    holders = [value]
    for part in parts[:-1]:
        nxt = []
        for holder in holders:
            inner = holder.get(part) if isinstance(holder, dict) else None
            nxt.extend(inner if isinstance(inner, list) else [inner])
        holders = [h for h in nxt if isinstance(h, dict)]
    for holder in holders:
        holder.pop(parts[-1], None)
    return value


def _stored(metrics, section_path, path):
    """Whether ingest keeps the key at `path` of the section at `section_path`
    ("cpu", "services.redis"): taking it out changes the row it builds."""
    full = f"{section_path}.{path}"
    try:
        changed = ingest.sample_row(_without(metrics, full))
    except (KeyError, TypeError, ValueError):
        return True  # ingest reads the key (a required one): it is used
    return changed != ingest.sample_row(metrics)


# System collectors of hardware a machine may lack (no virtual machine has temperature
# sensors): where one is absent, its contract is checked on its parser's reading of captured
# output instead (tests/fixtures/README.md).
CAPTURED = {"sensors": lambda: agent.parse_sensors(
    json.loads((FIXTURES / "sensors_temperatures.json").read_text()))}


def _check_contract(name, output):
    schema = _schema_of(name)
    assert schema is not None, f"{name}: no wire schema in panel/protocol.py"
    validate(schema, output, name)
    spec = agent.COLLECTORS[name]
    section_path = f"services.{name}" if spec.group == agent.SERVICES else name
    known = set(_schema_paths(schema))
    emitted = set(_paths(output))
    assert emitted <= known, f"{name} emits keys its schema does not know"
    metrics = {"services": {name: output}} if spec.group == agent.SERVICES else {name: output}
    unstored = {path for path in emitted if not _stored(metrics, section_path, path)}
    assert {f"{section_path}.{p}" for p in unstored} == \
        {key for key in KNOWINGLY_IGNORED if key.startswith(section_path + ".")}, \
        f"{name}: keys neither stored nor in KNOWINGLY_IGNORED"


def test_every_registered_collector_has_a_contract_here():
    covered = set(agent.system_collectors()) | set(SERVICE_COLLECTORS) | set(FROM_CAPTURED)
    assert set(agent.COLLECTORS) == covered, "a collector without a contract test"


@pytest.mark.parametrize("name", agent.system_collectors())
def test_system_collector_keeps_its_contract(name):
    sections = _sections((name,), {})
    if name not in sections and name in CAPTURED:
        sections[name] = CAPTURED[name]()
    _check_contract(name, sections[name])


SERVICE_COLLECTORS = ("nginx", "phpfpm", "apache", "certificates", "redis", "mailqueue",
                      "watched", "postgresql", "mysql", "docker")


@pytest.mark.parametrize("name", SERVICE_COLLECTORS)
def test_service_collector_keeps_its_contract(name, service_settings):
    output = _sections((name,), service_settings)["services"][name]
    assert output, f"{name} reported nothing"
    _check_contract(name, output)


# Collectors whose service cannot run here, held to the contract on what their parser makes of
# captured output: systemd cannot be PID 1 on this machine (tests/fixtures/README.md).
FROM_CAPTURED = {
    "systemd": lambda: agent.parse_systemd(
        (FIXTURES / "systemctl_list_units_failed.txt").read_text(),
        (FIXTURES / "systemctl_show.txt").read_text(),
        ["nginx.service", "php8.2-fpm", "mariadb", "pure-ftpd"]),
}


@pytest.mark.parametrize("name", sorted(FROM_CAPTURED))
def test_service_collector_on_captured_output_keeps_its_contract(name):
    _check_contract(name, FROM_CAPTURED[name]())


def test_a_key_the_panel_drops_breaks_the_contract():
    """The check is not vacuous: a key the schema knows but ingest throws away is caught, and
    one the schema does not know is too."""
    output = {"usage": 1.0, "count": 2, "load1": 0.5}
    assert not _stored({"cpu": output}, "cpu", "count")
    assert _stored({"cpu": output}, "cpu", "load1")
    with pytest.raises(AssertionError, match="does not know"):
        _check_contract("cpu", dict(output, brandNew=1))
    assert not _stored({"services": {"docker": {"images": 1, "brandNew": 2}}},
                       "services.docker", "brandNew")
