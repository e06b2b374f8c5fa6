#!/usr/bin/env python3
"""Where one report's time goes: the real panel app in this process, each stage timed.

    .venv/bin/python bench/ingest_stages.py [--reports 10000] [--agents 512]
                                            [--backend sqlite|postgresql] [--profile]

A fresh database with N servers and their keys, the panel app as `create_app` builds it (the
real group-commit writer thread on the real database), and the bench's real sample (this
machine's, from `agent.py --print`) posted through the WSGI app by one thread, each agent in
turn with a timestamp never sent before. Every key is verified once first (steady state).
Printed: CPU microseconds per report of each stage of the request path (this thread) and of
the writer's commit (its thread), as a share of the process's CPU per report, and how many SQL
statements and SHA-256 / bcrypt calls one report cost in steady state. Waitress in front of
the app is not in here: bench/ingest_threads.py measures the whole server thread by thread.

With --profile, cProfile's top functions of the request thread instead of the stage table.
"""
import argparse
import collections
import datetime
import hashlib
import io
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import fresh_database, make_agents, sample_body  # noqa: E402


class Stages:
    """CPU time per named stage, of the thread that runs it (thread_time: what other
    processes on a shared machine do is not counted); nested stages are not subtracted from
    their callers (the table lists them apart)."""

    def __init__(self):
        self.total = collections.Counter()
        self.calls = collections.Counter()
        self.lock = threading.Lock()

    def wrap(self, name, function):
        def timed(*args, **kwargs):
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.thread_time() - started
                with self.lock:
                    self.total[name] += elapsed
                    self.calls[name] += 1
        return timed


def environ_for(body, key):
    return {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/agent/metrics", "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "REMOTE_ADDR": "127.0.0.1",
            "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "application/json", "HTTP_AUTHORIZATION": f"Bearer {key}",
            "HTTP_DATE": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=512)
    parser.add_argument("--backend", default="sqlite")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mpanel-stages-"))
    with fresh_database(args.backend, workdir) as url:
        keys_path = make_agents(url, args.agents, workdir)
        template = Path(sample_body(workdir)[0]).read_text()
        agents = [line.split() for line in keys_path.read_text().splitlines()]

        from panel import api, auth, create_app, db, errors, ingest, jobs, keys, settings
        from panel import validation  # noqa: F401  (api holds its own name for validate)

        config = settings.from_env({"MPANEL_DATABASE_URL": url, "MPANEL_DATA_DIR": str(workdir),
                                    "MPANEL_LOG_LEVEL": "WARNING"})
        stages = Stages()
        app = create_app(config)
        database = db.database_proxy.obj
        committer = app.committer

        statements = collections.Counter()
        counting = threading.local()

        def count(sql):
            if getattr(counting, "on", False) or threading.current_thread() is committer.thread:
                statements[sql.split()[0].upper()] += 1

        if args.backend == "sqlite":
            connect = database._connect

            def traced():
                connection = connect()
                connection.set_trace_callback(count)
                return connection
            database._connect = traced
        else:
            import psycopg2.extensions

            class Cursor(psycopg2.extensions.cursor):
                def execute(self, sql, params=None):
                    count(sql if isinstance(sql, str) else sql.decode())
                    return super().execute(sql, params)
            database.connect_params["cursor_factory"] = Cursor
        if not database.is_closed():
            database.close()
        committer._reset_connection()  # the writer's next connection is a counted one

        hashes = collections.Counter()
        sha256 = hashlib.sha256

        def counted_sha256(*a, **k):
            hashes["sha256"] += 1
            return sha256(*a, **k)
        hashlib.sha256 = counted_sha256

        def run(key, server_id, moment):
            body = template.replace("{SERVER}", server_id).replace(
                "{TIME}", moment.strftime("%Y-%m-%dT%H:%M:%SZ")).encode()
            status = []
            out = b"".join(app(environ_for(body, key), lambda s, h, e=None: status.append(s)))
            if not status[0].startswith("200"):
                raise SystemExit(f"{status[0]}: {out[:300]!r}")

        base = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
        for index, (server_id, key) in enumerate(agents):  # warm-up: every key verified once
            run(key, server_id, base - datetime.timedelta(seconds=1 + index % 60))

        if not args.profile:
            wrapped = [(errors, "check_text_input", "text rule over query/form parameters"),
                       (auth.AgentAuthenticator, "__call__", "auth (key check, limits)"),
                       (api, "read_body", "read body"),
                       (api, "validate", "schema validation"),
                       (api, "_sample_timestamps", "parse timestamps"),
                       (api, "_measured_offset", "clock offset (Date header)"),
                       (ingest, "sample_row", "sample_row (columns + detail)"),
                       (api, "_note_clock", "note clock"),
                       (jobs, "note_alive", "note alive"),
                       (committer, "submit", "hand to the writer, wake on its commit")]
            for owner, name, label in wrapped:
                setattr(owner, name, stages.wrap(label, getattr(owner, name)))
            json_loads = json.loads
            api.json = type(sys)("json_timed")
            api.json.loads = stages.wrap("json.loads", json_loads)
            committer._commit = stages.wrap("commit (writer thread)", committer._commit)
            committer._values = stages.wrap("  of it: row values + detail pack",
                                            committer._values)

        hashes.clear()
        statements.clear()
        verifier = app.key_verifier
        bcrypt_before = verifier.bcrypt_checks
        counting.on = True
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        started, cpu = time.perf_counter(), time.process_time()
        for n in range(args.reports):
            server_id, key = agents[n % len(agents)]
            run(key, server_id, base + datetime.timedelta(seconds=n // len(agents)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        if profiler:
            profiler.disable()
        counting.on = False
        batches = committer.batches

        per = 1e6 / args.reports
        print(f"{args.backend}: {args.reports} reports, {args.agents} agents, one thread: "
              f"{elapsed * per:.0f} µs per report wall ({args.reports / elapsed:.0f}/s), "
              f"{cpu * per:.0f} µs CPU (all threads)")
        if profiler:
            import pstats

            pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
        else:
            request = cpu * per
            print(f"{'stage (CPU of its thread)':<44} {'µs/report':>10} {'share':>7}")
            for label in stages.total:
                micro = stages.total[label] * per
                print(f"{label:<44} {micro:10.1f} {micro / request:7.1%}")
        print(f"per report in steady state: SQL statements "
              f"{dict((k, round(v / args.reports, 3)) for k, v in statements.items())}, "
              f"sha256 {hashes['sha256'] / args.reports:.2f}, "
              f"bcrypt {(verifier.bcrypt_checks - bcrypt_before) / args.reports:.2f}, "
              f"commits {batches}")
        from panel import models

        with database.connection_context():
            stored = models.Metric.select().count()
        print(f"stored {stored} (of {args.reports + len(agents)} sent)")
        getattr(database, "close_all", database.close)()


if __name__ == "__main__":
    main()
