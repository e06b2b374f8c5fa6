"""The pure parsers of the service collectors, on captured output (tests/fixtures/README.md)."""
import json
from pathlib import Path

import pytest

import agent

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture(name):
    return (FIXTURES / name).read_text()


def test_parse_nginx_stub_status():
    assert agent.parse_nginx(fixture("nginx_stub_status.txt")) == {
        "activeConnections": 1, "accepts": 1, "handled": 1, "requests": 1,
        "reading": 0, "writing": 1, "waiting": 0}


def test_parse_nginx_of_a_large_server():
    text = ("Active connections: 291 \nserver accepts handled requests\n 16630948 16630948 "
            "31070465 \nReading: 6 Writing: 179 Waiting: 106 \n")
    parsed = agent.parse_nginx(text)
    assert parsed["requests"] == 31070465 and parsed["waiting"] == 106


def test_a_page_that_is_not_stub_status_means_nginx_status_is_absent():
    with pytest.raises(agent.ServiceAbsent):
        agent.parse_nginx("<html><body>Welcome to nginx!</body></html>")


def test_parse_apache_status():
    fields = agent.parse_apache(fixture("apache_server_status_auto.txt"))
    assert fields["BusyWorkers"] == "3" and fields["IdleWorkers"] == "72"
    assert fields["Total Accesses"] == "1234"


def test_a_page_that_is_not_mod_status_means_apache_status_is_absent():
    with pytest.raises(agent.ServiceAbsent):
        agent.parse_apache("<html>It works!</html>")


def test_parse_redis_info():
    fields = agent.parse_redis(fixture("redis_info.txt"))
    assert int(fields["used_memory"]) > 0
    assert int(fields["connected_clients"]) >= 1
    assert "total_commands_processed" in fields
    assert "# Server" not in fields


def test_redis_command_is_encoded_as_resp():
    assert agent._resp_command("AUTH", "s3cret") == b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n"


def test_parse_postgresql_query_output():
    parsed = agent.parse_postgresql(fixture("postgresql_query.json"))
    assert parsed["connections"] >= 1
    assert "postgres" in {d["name"] for d in parsed["databases"]}
    assert all(isinstance(d["size"], int) for d in parsed["databases"])


def test_parse_postgresql_skips_databases_without_a_size():
    parsed = agent.parse_postgresql('{"connections": 2, "databases": '
                                    '[{"name": "secret", "size": null}, {"name": "a", "size": 1}]}')
    assert parsed["databases"] == [{"name": "a", "size": 1}]


def test_parse_postgresql_sends_the_fifty_largest_databases_and_counts_the_rest():
    databases = [{"name": f"d{index:02}", "size": 1000 + index} for index in range(52)]
    parsed = agent.parse_postgresql(json.dumps({"connections": 1, "databases": databases}))
    assert [d["name"] for d in parsed["databases"]] == [f"d{index:02}" for index in range(2, 52)]
    assert parsed["omitted"] == 2


def test_parse_postgresql_without_sizes_has_connections_only():
    assert agent.parse_postgresql('{"connections": 4}') == {"connections": 4}


def test_parse_docker_info():
    assert agent.parse_docker(fixture("docker_info.json")) == {
        "containersTotal": 4, "containersRunning": 3, "images": 12}


def test_scram_sha_256_matches_the_rfc_7677_example():
    client = agent.ScramClient("pencil", nonce="rOprNGfwEbeRWgbNEkqO", user="user")
    assert client.client_first() == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = client.client_final("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                                "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert final == ("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client.verify_server("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(agent.PgError):
        client.verify_server("v=forged")


def test_scram_refuses_a_server_nonce_that_does_not_extend_ours():
    client = agent.ScramClient("pencil", nonce="abc")
    with pytest.raises(agent.PgError):
        client.client_final("r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
