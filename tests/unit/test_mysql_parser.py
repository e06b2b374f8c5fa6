"""The MySQL / MariaDB collector's pure parts on captured output (tests/fixtures/README.md): the
rows of SHOW GLOBAL STATUS, SHOW GLOBAL VARIABLES and SHOW SLAVE STATUS, the protocol's
length-encoded integers and the two password scrambles."""
import hashlib
from pathlib import Path

import agent
from panel import protocol
from panel.validation import validate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SCHEMA = protocol.SERVICES["properties"]["mysql"]


def rows(name):
    """A `mariadb -B -N` capture -> rows as the agent's client returns them (NULL is None)."""
    return [[None if value == "NULL" else value for value in line.split("\t")]
            for line in (FIXTURES / name).read_text().splitlines()]


def replica_status():
    header, values = rows("mysql_slave_status.tsv")
    return dict(zip(header, values))


def raw(**extra):
    return dict({"status": rows("mysql_global_status.tsv"),
                 "variables": rows("mysql_global_variables.tsv"),
                 "replica": None, "sizes": None, "schemas": None}, **extra)


def test_parse_mysql_status_and_variables_of_the_machines_mariadb():
    figures, counters = agent.parse_mysql(raw())
    assert figures == {"up": True, "version": "10.11.19-MariaDB-0+deb12u1", "uptime": 1094,
                       "connections": 1, "maxConnections": 151, "connectionsPercent": 0.66,
                       "threadsRunning": 1, "bufferPoolBytes": 8112 * 16384,
                       "bufferPoolUsedPercent": round(100 * 305 / 8112, 2)}
    assert set(counters) == {"Questions", "Slow_queries", "Aborted_connects", "Aborted_clients",
                             "Innodb_buffer_pool_reads", "Innodb_buffer_pool_read_requests"}
    assert all(isinstance(value, int) for value in counters.values())
    validate(SCHEMA, figures, "mysql")


def test_a_primary_has_no_replica_figures_and_a_replica_has_them():
    assert not any(key.startswith("replica") for key in agent.parse_mysql(raw())[0])
    figures, _ = agent.parse_mysql(raw(replica=replica_status()))
    assert (figures["replicaIoRunning"], figures["replicaSqlRunning"], figures["replicaLag"]) \
        == (True, True, 0)
    assert "replicaIoErrno" not in figures and "replicaSqlErrno" not in figures
    validate(SCHEMA, figures, "mysql")


def test_a_broken_replica_on_mysql_8_names_is_not_running_and_has_no_lag():
    """MySQL >= 8.0.22 says Replica_/Source where MariaDB says Slave_/Master."""
    replica = {"Replica_IO_Running": "Connecting", "Replica_SQL_Running": "No",
               "Seconds_Behind_Source": None, "Last_IO_Errno": "2003", "Last_SQL_Errno": "0"}
    figures, _ = agent.parse_mysql(raw(replica=replica))
    assert figures["replicaIoRunning"] is False and figures["replicaSqlRunning"] is False
    assert "replicaLag" not in figures
    assert figures["replicaIoErrno"] == 2003 and "replicaSqlErrno" not in figures


def test_database_sizes_keep_the_fifty_largest_by_name_and_count_the_rest():
    sizes = [[f"db{index:02}", str(index * 1000)] for index in range(52)]
    sizes.append(["x" * 300, None])  # a schema without tables sums to NULL on some servers
    figures, _ = agent.parse_mysql(raw(sizes=sizes))
    names = [d["name"] for d in figures["databases"]]
    assert len(names) == 50 and names == sorted(names)
    assert "db00" not in names and "db51" in names  # the smallest ones are left out
    assert figures["omitted"] == 3
    validate(SCHEMA, figures, "mysql")


def test_a_schema_without_tables_is_sized_zero():
    figures, _ = agent.parse_mysql(raw(sizes=[["shop", "49152"]], schemas=[["shop"], ["new"]]))
    assert figures["databases"] == [{"name": "new", "size": 0}, {"name": "shop", "size": 49152}]


def test_a_server_without_innodb_has_no_buffer_pool_figures():
    status = [row for row in rows("mysql_global_status.tsv") if not row[0].startswith("Innodb")]
    figures, counters = agent.parse_mysql(raw(status=status))
    assert not any(key.startswith("bufferPool") for key in figures)
    assert "Innodb_buffer_pool_reads" not in counters


def test_length_encoded_integers():
    assert agent._lenenc_int(b"\xfa", 0) == (250, 1)
    assert agent._lenenc_int(b"\xfb", 0) == (None, 1)
    assert agent._lenenc_int(b"\xfc\x01\x02", 0) == (0x0201, 3)
    assert agent._lenenc_int(b"\xfd\x01\x02\x03", 0) == (0x030201, 4)
    assert agent._lenenc_int(b"\xfe" + (2**40).to_bytes(8, "little"), 0) == (2**40, 9)
    assert agent._lenenc_text(b"\x03abcde", 0) == ("abc", 4)


def test_native_password_scramble_is_what_the_server_checks():
    """The server keeps SHA1(SHA1(password)) (MariaDB's PASSWORD('secret') below) and recovers
    SHA1(password) from the answer with it: that must hash back to what it keeps."""
    stored = bytes.fromhex("14E65567ABDB5135D0CFD9A70B3032C179A49EE7")
    nonce = bytes(range(1, 21))
    answer = agent.mysql_native_scramble("secret", nonce)
    mask = hashlib.sha1(nonce + stored).digest()
    assert hashlib.sha1(bytes(a ^ b for a, b in zip(answer, mask))).digest() == stored
    assert agent.mysql_native_scramble("", nonce) == b""


def test_caching_sha2_scramble_is_what_the_server_checks():
    """MySQL's fast path keeps SHA256(SHA256(password)) and recovers SHA256(password) with
    SHA256(kept + nonce), and checks it hashes to what it keeps (sql/auth/sha2_password.cc)."""
    kept = hashlib.sha256(hashlib.sha256(b"secret").digest()).digest()
    nonce = bytes(range(1, 21))
    answer = agent.caching_sha2_scramble("secret", nonce)
    mask = hashlib.sha256(kept + nonce).digest()
    stage1 = bytes(a ^ b for a, b in zip(answer, mask))
    assert hashlib.sha256(stage1).digest() == kept
