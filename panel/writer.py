"""Group commit for ingest: request threads hand their samples to one writer thread per process
and wait; the writer commits everything that arrived meanwhile in one transaction, then wakes
each request with its own outcome. A sample is acknowledged only after it is committed, but
many requests share one commit — batching's throughput without losing an acknowledged sample.

The statements are built once, in plain SQL: Peewee's query builder costs ~100 µs per insert
of this 35-column row, which at a thousand reports a second is most of a core.
"""
import logging
import os
import queue
import sqlite3
import threading
import time

import peewee
import psycopg2

from . import models, rollups
from .db import is_postgres
from .errors import describe_database_error

log = logging.getLogger("mpanel.writer")


class StoreUnavailable(Exception):
    """The samples were not stored: the agent should keep them and try again."""


class SampleUnstorable(Exception):
    """The database refuses the samples for what they hold: sending them again cannot help."""


# A "data exception" (SQLSTATE class 22: a value out of a column's range, text too long) and a
# number the SQLite driver cannot bind fail the same rows every time. The schema's bounds are
# meant to keep such values out (protocol.py); should one drift, the agent must not retry the
# sample for good behind a 503. The writer runs raw cursors, so the drivers' own classes.
_UNSTORABLE = (psycopg2.DataError, sqlite3.DataError, peewee.DataError, OverflowError)


class _Pending:
    __slots__ = ("agent_id", "rows", "now", "done", "stored", "error")

    def __init__(self, agent_id, rows, now):
        self.agent_id, self.rows, self.now = agent_id, rows, now
        self.done = threading.Event()
        self.stored = 0
        self.error = None


class _Entered:
    """A transaction already entered, usable in a `with` that only has to leave it."""

    def __init__(self, transaction):
        self.transaction = transaction

    def __enter__(self):
        return self.transaction

    def __exit__(self, *exc):
        return self.transaction.__exit__(*exc)


class GroupCommitter:
    def __init__(self, database, max_batch=400, linger=None):
        self.database = database
        self.max_batch = max_batch
        # How long the writer waits for company after the first arrival. PostgreSQL flushes its
        # WAL to disk at every commit, so there fewer, larger commits pay; SQLite in WAL mode
        # does not, and takes whatever is already queued.
        if linger is None:
            linger = float(os.environ.get("MPANEL_COMMIT_LINGER_MS",
                                          "3" if is_postgres(database) else "0")) / 1000
        self.linger = linger
        self.queue = queue.Queue()
        self.fields = [f for f in models.Metric._meta.sorted_fields]
        # Each column's conversion, in column order, looked up once: the field's db_value,
        # after its default when the row leaves it out.
        self.columns = [(f.name, f.db_value, f.default) for f in self.fields]
        columns = ", ".join(f'"{f.column_name}"' for f in self.fields)
        mark = database.param
        self.insert_head = f"INSERT INTO server_metrics ({columns}) VALUES "
        self.row_marks = f"({', '.join([mark] * len(self.fields))})"
        # RETURNING tells which rows were new, so each request learns its own duplicates from
        # one statement for the whole batch.
        self.insert_tail = " ON CONFLICT DO NOTHING RETURNING agent_id, timestamp"
        self.rows_per_statement = max(1, 900 // len(self.fields))  # SQLite's 999 parameters
        self.mark = mark
        self.latest_head = "INSERT INTO latest_samples (agent_id, timestamp) VALUES "
        self.latest_tail = (" ON CONFLICT (agent_id) DO UPDATE SET timestamp = excluded.timestamp"
                            " WHERE latest_samples.timestamp < excluded.timestamp")
        self.dirty_head = "INSERT INTO dirty_buckets (agent_id, bucket) VALUES "
        # DO UPDATE ... WHERE never true: PostgreSQL locks the conflicting row all the same
        # (see _commit) but writes no new version of it, so re-marking costs no bloat.
        self.dirty_tail = (" ON CONFLICT (agent_id, bucket) DO UPDATE SET bucket = excluded.bucket"
                           " WHERE 1 = 0")
        self._fast_retry = False
        self.batches = 0  # read by tests: how many commits served how many requests
        self.requests = 0
        self.thread = threading.Thread(target=self._run, name="mpanel-writer", daemon=True)
        self.thread.start()

    def submit(self, agent_id, rows, now, timeout=30.0):
        """Store `rows` (dicts of Metric columns) for the agent; -> how many were new.
        Returns after the commit; raises if it failed."""
        pending = _Pending(agent_id, rows, now)
        self.queue.put(pending)
        if not pending.done.wait(timeout):
            raise StoreUnavailable("the database did not commit in time")
        if isinstance(pending.error, _UNSTORABLE):
            raise SampleUnstorable(f"the database cannot store this sample: "
                                   f"{describe_database_error(pending.error)}") \
                from pending.error
        if pending.error is not None:
            raise StoreUnavailable(f"the database refused the write: "
                                   f"{describe_database_error(pending.error)}") \
                from pending.error
        return pending.stored

    def _values(self, agent_id, row):
        values = []
        for name, db_value, default in self.columns:
            if name == "agent":
                value = agent_id
            elif name in row:
                value = row[name]
            else:
                value = default() if callable(default) else default
            values.append(db_value(value))
        return values

    def _run(self):
        while True:
            batch = [self.queue.get()]
            deadline = time.monotonic() + self.linger
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            try:
                self._commit(batch)
            except Exception as err:  # the boundary: every waiter must hear back
                log.warning("group commit failed size=%s error=%s; retrying one by one",
                            len(batch), err)
                self._reset_connection()
                for pending in batch:
                    try:
                        self._commit([pending])
                    except Exception as single:  # this request's own failure
                        self._reset_connection()
                        pending.error = single
                        pending.done.set()

    def _reset_connection(self):
        """After a failure the connection may be dead (database restarted): drop it, so the
        next commit opens a fresh one."""
        try:
            if not self.database.is_closed():
                self.database.close()
        except Exception as err:  # closing a broken connection may itself fail
            log.debug("closing the writer's connection failed error=%s", err)
        self._fast_retry = False

    def _begin(self):
        """The transaction, taking SQLite's write lock up front. SQLite's own busy handler
        sleeps 25-100 ms at a time while another process writes, which is most of the tail
        latency with two workers; retrying every half millisecond here is not."""
        database = self.database
        if is_postgres(database):
            return database.atomic()
        if not self._fast_retry:
            database.execute_sql("PRAGMA busy_timeout = 0")
            self._fast_retry = True
        deadline = time.monotonic() + 10.0
        while True:
            transaction = database.atomic("IMMEDIATE")
            try:
                transaction.__enter__()
                return _Entered(transaction)
            except peewee.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.0005)

    def _commit(self, batch):
        database = self.database
        if database.is_closed():
            database.connect()  # the writer keeps its connection for good
            self._fast_retry = False
        with self._begin():
            cursor = database.cursor()
            rows = [(pending, row) for pending in batch for row in pending.rows]
            inserted = set()
            timestamp_field = models.Metric.timestamp
            for start in range(0, len(rows), self.rows_per_statement):
                chunk = rows[start:start + self.rows_per_statement]
                params = []
                for pending, row in chunk:
                    params.extend(self._values(pending.agent_id, row))
                cursor.execute(self.insert_head + ", ".join([self.row_marks] * len(chunk)) +
                               self.insert_tail, params)
                inserted.update((agent, timestamp_field.python_value(stamp))
                                for agent, stamp in cursor.fetchall())
            # The buckets of late new samples, marked in this transaction so that none is
            # missed. DO UPDATE rather than DO NOTHING: it locks a mark that is already there
            # until this commit, so a rollup run deleting it meanwhile waits and then sees
            # these samples (rollups.roll_up_dirty). Sorted, as that run locks them, so
            # neither two replicas' writers nor a writer and the run wait in a circle.
            dirty = rollups.dirty_buckets(inserted, max(pending.now for pending in batch))
            for start in range(0, len(dirty), 400):  # 800 parameters: under SQLite's 999
                chunk = dirty[start:start + 400]
                cursor.execute(self.dirty_head + ", ".join([f"({self.mark}, {self.mark})"] *
                                                           len(chunk)) + self.dirty_tail,
                               [value for agent, bucket in chunk for value in
                                (agent, models.DirtyBucket.bucket.db_value(bucket))])
            # Each new row is counted once, by the first request that carried it: a batch
            # holding one timestamp twice, or two retries of one sample meeting in the same
            # commit, store one row and must not answer as if they stored two.
            for pending in batch:
                stored = 0
                for row in pending.rows:
                    key = (pending.agent_id, row["timestamp"])
                    if key in inserted:
                        inserted.discard(key)
                        stored += 1
                pending.stored = stored
            # The latest pointer is the newest sample of the agent's most recent fresh
            # request, even when older than the pointer (a clock set back): the table and
            # the rules must follow what arrives. Only a replay of buffered (late) samples
            # moves it just forward, so draining a backlog never shows old figures.
            newest, fresh = {}, set()
            for pending in batch:
                current = [row["timestamp"] for row in pending.rows if not row.get("late")]
                agent = pending.agent_id
                if current:
                    newest[agent] = max(current)
                    fresh.add(agent)
                elif agent not in fresh:
                    top = max(row["timestamp"] for row in pending.rows)
                    newest[agent] = max(top, newest.get(agent, top))
            # One statement each, in agent order, so two replicas' writers never wait on each
            # other in a circle.
            agents = sorted(newest)
            mark = self.mark
            params = [value for agent in agents for value in (agent, newest[agent])]
            tail = self.latest_tail
            if fresh:
                # Our own integer ids, written out: parameters would pass SQLite's 999 at 400
                # agents in one commit.
                listed = ", ".join(str(int(agent)) for agent in sorted(fresh))
                tail += f" OR excluded.agent_id IN ({listed})"
            cursor.execute(self.latest_head + ", ".join([f"({mark}, {mark})"] * len(agents)) +
                           tail, params)
            cursor.execute(f"UPDATE servers_agents SET last_seen = {mark} WHERE id IN "
                           f"({', '.join([mark] * len(agents))})",
                           [max(pending.now for pending in batch)] + agents)
        self.batches += 1
        self.requests += len(batch)
        for pending in batch:
            pending.done.set()
