"""SpillBuffer on a real SQLite file: order, acks, bounds, and surviving a reopen."""
import sqlite3

import agent


def sample(n):
    return {"timestamp": f"2026-11-30T00:{n:02d}:00.000Z", "metrics": {"cpu": {"usage": n}}}


def test_samples_come_back_oldest_first_until_acked(tmp_path):
    buffer = agent.SpillBuffer(str(tmp_path / "b.sqlite3"))
    ids = [buffer.push(sample(n)) for n in range(5)]
    rows = buffer.peek(3)
    assert [row_id for row_id, _ in rows] == ids[:3]
    assert rows[0][1] == sample(0)
    buffer.ack(ids[:3])
    assert [s["metrics"]["cpu"]["usage"] for _, s in buffer.peek(10)] == [3, 4]
    assert len(buffer) == 2 and ids[4] in buffer and ids[0] not in buffer


def test_peek_respects_a_byte_budget_but_always_returns_one(tmp_path):
    buffer = agent.SpillBuffer(str(tmp_path / "b.sqlite3"))
    for n in range(10):
        buffer.push(sample(n))
    size = len('{"timestamp":"2026-11-30T00:00:00.000Z","metrics":{"cpu":{"usage":0}}}')
    assert len(buffer.peek(10, max_bytes=size * 3)) == 3
    assert len(buffer.peek(10, max_bytes=1)) == 1


def test_samples_older_than_max_age_are_dropped_and_counted(tmp_path):
    buffer = agent.SpillBuffer(str(tmp_path / "b.sqlite3"), max_age=3600)
    buffer.push(sample(1), taken_at=1000.0)
    buffer.push(sample(2), taken_at=5000.0)
    assert buffer.prune(now=5000.0 + 100) == 1
    assert [s["metrics"]["cpu"]["usage"] for _, s in buffer.peek(10)] == [2]


def test_oldest_samples_go_first_when_over_the_size_cap(tmp_path):
    buffer = agent.SpillBuffer(str(tmp_path / "b.sqlite3"), max_bytes=300)
    for n in range(10):
        buffer.push(sample(n))
    dropped = buffer.prune()
    left = [s["metrics"]["cpu"]["usage"] for _, s in buffer.peek(100)]
    assert dropped == 10 - len(left) and dropped > 0
    assert left == list(range(10 - len(left), 10))  # the newest survive


def test_buffer_survives_reopening_and_is_a_wal_database(tmp_path):
    path = str(tmp_path / "b.sqlite3")
    buffer = agent.SpillBuffer(path)
    buffer.push(sample(7))
    del buffer  # no close: as after kill -9
    reopened = agent.SpillBuffer(path)
    assert reopened.peek(1)[0][1] == sample(7)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
