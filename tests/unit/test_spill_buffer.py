"""SpillBuffer on a real SQLite file: order, acks, bounds, surviving a reopen, wall-clock steps
and damaged files."""
import json
import logging
import os
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
    buffer.push(sample(1), moment=agent.Moment(1000.0, "boot-a", 100.0))
    buffer.push(sample(2), moment=agent.Moment(5000.0, "boot-a", 4100.0))
    assert buffer.prune(moment=agent.Moment(5100.0, "boot-a", 4200.0)) == 1
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


def test_a_wall_clock_step_drops_no_buffered_sample(tmp_path):
    """Age is time since boot: the wall clock jumping 2 h ahead (NTP correcting a slow clock)
    makes no sample "older than max_age"; real time passing still does."""
    buffer = agent.SpillBuffer(str(tmp_path / "b.sqlite3"), max_age=3600)
    for n in range(3):
        buffer.push(sample(n), moment=agent.Moment(1000.0 + 60 * n, "boot-a", 100.0 + 60 * n))
    assert buffer.prune(moment=agent.Moment(1200.0 + 7200, "boot-a", 280.0)) == 0
    assert buffer.prune(moment=agent.Moment(1200.0 - 3600, "boot-a", 290.0)) == 0
    assert len(buffer) == 3
    assert buffer.prune(moment=agent.Moment(1200.0, "boot-a", 100.0 + 3600 + 61)) == 2


def test_samples_from_an_earlier_boot_are_aged_by_the_wall_clock_once(tmp_path):
    path = str(tmp_path / "b.sqlite3")
    earlier = agent.SpillBuffer(path, max_age=3600)
    now = agent.now_moment()
    earlier.push(sample(1), moment=agent.Moment(now.wall - 4000, "an-earlier-boot", 50.0))
    earlier.push(sample(2), moment=agent.Moment(now.wall - 600, "an-earlier-boot", 3450.0))
    earlier.close()
    reopened = agent.SpillBuffer(path, max_age=3600)  # rebased onto this boot's clock
    assert reopened.prune() == 1
    assert [s["metrics"]["cpu"]["usage"] for _, s in reopened.peek(10)] == [2]


def test_a_buffer_left_by_the_previous_version_is_read_and_extended(tmp_path):
    path = tmp_path / "b.sqlite3"
    with sqlite3.connect(path) as db:  # agent 0.2.0's table
        db.execute("CREATE TABLE samples (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                   "taken_at REAL NOT NULL, body TEXT NOT NULL)")
        db.execute("INSERT INTO samples (taken_at, body) VALUES (?, ?)",
                   (agent.wall_time() - 60, json.dumps(sample(1))))
    buffer = agent.SpillBuffer(str(path))
    buffer.push(sample(2))
    assert buffer.prune() == 0
    assert [s for _, s in buffer.peek(10)] == [sample(1), sample(2)]


def many_samples(path, count=120):
    """A buffer file of `count` samples spread over many pages; closed."""
    buffer = agent.SpillBuffer(str(path))
    for n in range(count):
        buffer.push(dict(sample(n % 60), filler="x" * 400, n=n))
    buffer.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file


def damage(path, offset, length):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(os.urandom(length))


def set_aside_files(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name)


def test_random_bytes_in_the_header_move_the_file_aside_and_start_afresh(tmp_path, caplog):
    path = tmp_path / "b.sqlite3"
    many_samples(path)
    damage(path, 0, 100)
    with caplog.at_level(logging.WARNING, logger="mpanel-agent"):
        buffer = agent.SpillBuffer(str(path))
        buffer.push(sample(1))
    assert [s["timestamp"] for _, s in buffer.peek(10)] == [sample(1)["timestamp"]]
    kept = set_aside_files(tmp_path)
    assert kept and kept[0].startswith("b.sqlite3.corrupt-")
    assert caplog.text.count("buffer file damaged, moved aside") == 1, caplog.text


def test_a_damaged_later_page_keeps_every_sample_still_readable(tmp_path, caplog):
    path = tmp_path / "b.sqlite3"
    many_samples(path)
    pages = os.path.getsize(path) // 4096
    damage(path, 4096 * (pages // 2) + 8, 2000)  # a leaf page in the middle
    with caplog.at_level(logging.WARNING, logger="mpanel-agent"):
        buffer = agent.SpillBuffer(str(path))
    numbers = [s["n"] for _, s in buffer.peek(1000, max_bytes=10 ** 7)]
    assert set_aside_files(tmp_path)
    assert numbers == sorted(numbers), "oldest first still"
    assert 0 in numbers and 119 in numbers, "rows on both sides of the damage are rescued"
    assert 60 <= len(numbers) < 120
    assert caplog.text.count("buffer file damaged") == 1
    buffer.push(sample(1))  # the fresh file takes the rescued samples and new ones
    buffer.close()
    assert len(agent.SpillBuffer(str(path))) == len(numbers) + 1


def test_a_truncated_file_keeps_the_samples_before_the_cut(tmp_path):
    path = tmp_path / "b.sqlite3"
    many_samples(path)
    os.truncate(path, os.path.getsize(path) // 2)
    buffer = agent.SpillBuffer(str(path))
    numbers = [s["n"] for _, s in buffer.peek(1000, max_bytes=10 ** 7)]
    assert set_aside_files(tmp_path)
    assert numbers and numbers[0] == 0 and numbers == sorted(numbers)


def test_an_unreadable_row_is_dropped_and_the_rest_delivered(tmp_path, caplog):
    path = tmp_path / "b.sqlite3"
    buffer = agent.SpillBuffer(str(path))
    buffer.push(sample(1))
    buffer.db.execute("INSERT INTO samples (taken_at, body) VALUES (0, 'not json')")
    buffer.push(sample(3))
    with caplog.at_level(logging.WARNING, logger="mpanel-agent"):
        assert [s["metrics"]["cpu"]["usage"] for _, s in buffer.peek(10)] == [1, 3]
    assert len(buffer) == 2 and "unreadable samples in the buffer" in caplog.text


def test_a_buffer_that_cannot_be_written_keeps_samples_in_memory_within_bounds(tmp_path, caplog):
    """The state folder's place is taken by a file: nothing can be created there. Samples wait
    in memory, come back oldest first, leave when acked, and obey the size bound."""
    (tmp_path / "not-a-folder").write_text("")
    with caplog.at_level(logging.WARNING, logger="mpanel-agent"):
        buffer = agent.SpillBuffer(str(tmp_path / "not-a-folder" / "b.sqlite3"), max_bytes=300)
        ids = [buffer.push(sample(n)) for n in range(3)]
    assert buffer.trouble and caplog.text.count("buffer file cannot be written") == 1
    assert [s["metrics"]["cpu"]["usage"] for _, s in buffer.peek(10)] == [0, 1, 2]
    buffer.ack(ids[:1])
    assert len(buffer) == 2 and ids[0] not in buffer and ids[1] in buffer
    for n in range(3, 10):
        buffer.push(sample(n))
    assert buffer.prune() > 0
    left = [s["metrics"]["cpu"]["usage"] for _, s in buffer.peek(100)]
    assert left == list(range(10 - len(left), 10))  # the newest survive
    buffer.close()
