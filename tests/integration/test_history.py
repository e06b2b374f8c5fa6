"""Rollups, retention and partitions on the real databases."""
import datetime
import threading

import peewee

from panel import jobs, models, rollups, settings, writer
from panel.db import database_proxy, is_postgres, utcnow
from tests.conftest import bearer, http_request, new_server


def add(agent_id, moment, cpu, late=False):
    models.Metric.insert(agent=agent_id, timestamp=moment, cpu_usage=cpu, memory_used=10,
                         memory_total=100, disk_max_percent=50.0, late=late).execute()


def now_floor():
    return rollups.floor_time(utcnow(), 3600)


def test_rollups_fill_both_tiers_incrementally(database):
    new_server("web")
    agent = models.Agent.get()
    hour = now_floor() - datetime.timedelta(hours=1)
    for minute in range(60):
        add(agent.id, hour + datetime.timedelta(minutes=minute), cpu=float(minute))
    written = rollups.run_rollups(now=hour + datetime.timedelta(minutes=60))
    assert written == {"5m": 12, "1h": 1, "traffic": 0}  # no network section: no traffic
    first = models.Rollup5m.get(models.Rollup5m.bucket == hour)
    assert first.samples == 5 and first.cpu_usage_avg == 2.0 and first.cpu_usage_max == 4.0
    hourly = models.Rollup1h.get()
    assert hourly.samples == 60 and abs(hourly.cpu_usage_avg - 29.5) < 1e-6
    assert hourly.cpu_usage_max == 59.0


def test_a_late_sample_updates_its_bucket_on_the_next_run(database):
    new_server("web")
    agent = models.Agent.get()
    start = now_floor() - datetime.timedelta(minutes=30)
    for minute in range(4):
        add(agent.id, start + datetime.timedelta(minutes=minute), cpu=10.0)
    rollups.run_rollups(now=start + datetime.timedelta(minutes=10))
    add(agent.id, start + datetime.timedelta(minutes=4), cpu=90.0, late=True)  # replayed
    rollups.run_rollups(now=start + datetime.timedelta(minutes=12))
    bucket = models.Rollup5m.get(models.Rollup5m.bucket == start)
    assert bucket.samples == 5 and bucket.cpu_usage_max == 90.0


def test_runs_only_touch_the_recent_window(database):
    new_server("web")
    agent = models.Agent.get()
    old = now_floor() - datetime.timedelta(days=2)
    add(agent.id, old, cpu=50.0)
    assert rollups.run_rollups(now=utcnow()) == {"5m": 0, "1h": 0, "traffic": 0}


def replay(panel, server_id, key, moment, cpu):
    """One buffered sample sent through the panel's API, as the agent replays it."""
    document = {"serverId": server_id, "timestamp": moment.isoformat() + "Z",
                "metrics": {"cpu": {"usage": cpu},
                            "memory": {"total": 100, "used": 10}}}
    response = http_request(panel, "POST", "/api/agent/metrics", json_body=document,
                            headers=bearer(key))
    assert response.status == 200 and response.json()["stored"] == 1, response.text


def test_samples_replayed_hours_and_days_late_reach_both_tiers_in_one_round(panel):
    server, key = new_server("web")
    now = utcnow()
    three_hours = rollups.floor_time(now - datetime.timedelta(hours=3), 300) + \
        datetime.timedelta(minutes=1)
    two_days = rollups.floor_time(now - datetime.timedelta(days=2), 300) + \
        datetime.timedelta(minutes=2)
    replay(panel, server.id, key, three_hours, cpu=30.0)
    replay(panel, server.id, key, two_days, cpu=70.0)

    jobs.JobRunner(settings.from_env({})).run_once()

    agent = models.Agent.get(models.Agent.server == server.id)
    for moment, cpu in ((three_hours, 30.0), (two_days, 70.0)):
        for tier in rollups.TIERS:
            row = tier.model.get_or_none((tier.model.agent == agent.id) & (
                tier.model.bucket == rollups.floor_time(moment, tier.seconds)))
            assert row is not None, (tier.name, moment)
            assert (row.samples, row.cpu_usage_avg, row.cpu_usage_max) == (1, cpu, cpu)
    assert models.DirtyBucket.select().count() == 0  # recomputed once, then forgotten


def test_a_late_sample_joins_the_rollup_already_made_for_its_hour(panel):
    server, key = new_server("web")
    hour = rollups.floor_time(utcnow() - datetime.timedelta(hours=5), 3600)
    replay(panel, server.id, key, hour + datetime.timedelta(minutes=1), cpu=10.0)
    jobs.JobRunner(settings.from_env({})).run_once()
    replay(panel, server.id, key, hour + datetime.timedelta(minutes=2), cpu=30.0)
    replay(panel, server.id, key, hour + datetime.timedelta(minutes=40), cpu=50.0)
    jobs.JobRunner(settings.from_env({})).run_once()
    first = models.Rollup5m.get(models.Rollup5m.bucket == hour)
    assert (first.samples, first.cpu_usage_avg, first.cpu_usage_max) == (2, 20.0, 30.0)
    hourly = models.Rollup1h.get(models.Rollup1h.bucket == hour)
    assert (hourly.samples, hourly.cpu_usage_avg, hourly.cpu_usage_max) == (3, 30.0, 50.0)


def test_a_30_day_chart_reads_at_most_9000_rows(database):
    new_server("web")
    agent = models.Agent.get()
    end = now_floor()
    start = end - datetime.timedelta(days=30)
    rows = [{"agent": agent.id, "bucket": start + datetime.timedelta(minutes=5 * i),
             "samples": 5, "cpu_usage_avg": 1.0} for i in range(30 * 288)]
    models.upsert_rollups(models.Rollup5m, rows)
    tier, series = rollups.series(agent.id, start, end)
    assert tier == "5m" and len(series) <= 9000
    tier, _ = rollups.series(agent.id, end - datetime.timedelta(hours=6), end)
    assert tier == "raw"


def test_retention_drops_old_raw_samples_and_rollups(database):
    config = settings.from_env({"MPANEL_RETENTION_RAW_DAYS": "7", "MPANEL_RETENTION_5M_DAYS": "90",
                                "MPANEL_RETENTION_1H_DAYS": "730"})
    new_server("web")
    agent = models.Agent.get()
    now = utcnow()
    rollups.ensure_partitions(now, days_back=12)
    for days in (0, 1, 6, 8, 10):
        add(agent.id, now - datetime.timedelta(days=days, minutes=1), cpu=1.0)
    models.upsert_rollups(models.Rollup5m, [
        {"agent": agent.id, "bucket": now - datetime.timedelta(days=d), "samples": 1}
        for d in (1, 89, 91)])
    removed = rollups.prune(config, now)
    kept = sorted((now - m.timestamp).days for m in models.Metric.select())
    assert kept == [0, 1, 6]
    assert models.Rollup5m.select().count() == 2 and removed["5m"] == 1
    if is_postgres():
        assert removed["raw_partitions"] >= 2  # whole days dropped, not rows deleted
        days = [name for name in models.day_partitions() if name.startswith("server_metrics_p")]
        oldest = min(days)[len("server_metrics_p"):]
        assert datetime.datetime.strptime(oldest, "%Y%m%d") >= \
            (now - datetime.timedelta(days=8)).replace(hour=0, minute=0, second=0, microsecond=0)


def test_postgresql_makes_daily_partitions_ahead(database):
    if not is_postgres():
        assert rollups.ensure_partitions() == 0
        return
    rollups.ensure_partitions(utcnow(), days_back=1, days_ahead=3)
    tomorrow = (utcnow() + datetime.timedelta(days=3)).strftime("%Y%m%d")
    assert f"server_metrics_p{tomorrow}" in models.day_partitions()
    new_server("web")
    add(models.Agent.get().id, utcnow(), cpu=1.0)
    in_default = database.execute_sql("SELECT count(*) FROM server_metrics_default").fetchone()[0]
    assert in_default == 0  # today's sample went to today's partition


def test_a_chart_reads_only_its_figure_from_the_rollups(database):
    new_server("web")
    agent = models.Agent.get()
    end = now_floor()
    models.upsert_rollups(models.Rollup5m, [
        {"agent": agent.id, "bucket": end - datetime.timedelta(minutes=5 * i), "samples": 5,
         "cpu_usage_avg": 10.0 + i, "cpu_usage_max": 50.0 + i} for i in range(12 * 30)])
    tier, rows = rollups.series(agent.id, end - datetime.timedelta(days=2), end, ["cpu_usage"])
    assert tier == "5m" and len(rows) == 360
    first_bucket, average, peak = rows[0]
    assert isinstance(first_bucket, datetime.datetime)
    assert (average, peak) == (10.0 + 359, 50.0 + 359)  # oldest first


def test_a_backlog_of_dirty_buckets_is_worked_off_in_batches(database):
    new_server("web")
    agent = models.Agent.get()
    start = now_floor() - datetime.timedelta(days=3)
    moments = [start + datetime.timedelta(minutes=5 * i) for i in range(450)]
    for moment in moments:
        add(agent.id, moment + datetime.timedelta(seconds=30), cpu=40.0)
    models.DirtyBucket.insert_many([{"agent": agent.id, "bucket": m} for m in moments]).execute()
    written = rollups.roll_up_dirty(batch=200)
    assert written["5m"] == 450 and models.DirtyBucket.select().count() == 0
    assert models.Rollup5m.select().count() == 450
    assert models.Rollup1h.select(peewee.fn.SUM(models.Rollup1h.samples)).scalar() == 450


def test_two_replicas_rolling_up_while_late_samples_arrive_count_each_sample_once(panel):
    """Two job runners (threads with their own connections, competing for the rollup job's
    lock as two replicas do) run rounds while the real panel stores late samples; afterwards
    every 5-minute bucket counts exactly the samples sent into it: no mark was deleted by a
    run that had not seen its sample, none counted twice."""
    server, key = new_server("web")
    base = rollups.floor_time(utcnow() - datetime.timedelta(hours=3), 3600)
    moments = [base + datetime.timedelta(minutes=5 * (i % 8), seconds=7 * (i // 8))
               for i in range(40)]
    stop = threading.Event()
    failures = []

    def replica():
        runs = 0
        while not stop.is_set() and runs < 500:
            runs += 1
            try:
                with database_proxy.connection_context():
                    jobs.run_locked("rollups", lambda _: rollups.run_rollups(), None)
            except Exception as err:  # reported by the test, not swallowed
                failures.append(err)
                return

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for moment in moments:
            replay(panel, server.id, key, moment, cpu=10.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not failures and not any(thread.is_alive() for thread in threads)
    rollups.run_rollups()
    agent = models.Agent.get(models.Agent.server == server.id)
    counts = {row.bucket: row.samples for row in
              models.Rollup5m.select().where(models.Rollup5m.agent == agent.id)}
    assert counts == {base + datetime.timedelta(minutes=5 * k): 5 for k in range(8)}
    assert models.Rollup1h.get(models.Rollup1h.bucket == base).samples == 40
    assert models.DirtyBucket.select().count() == 0


def test_one_commit_marking_more_buckets_than_sqlite_takes_parameters(database):
    """A commit of 450 late samples, each in its own bucket (the writer's statements stay
    under SQLite's 999 parameters)."""
    new_server("web")
    agent = models.Agent.get()
    now = utcnow()
    start = now_floor() - datetime.timedelta(days=3)
    rows = [{"timestamp": start + datetime.timedelta(minutes=5 * i), "late": True,
             "created_at": now, "cpu_usage": 1.0} for i in range(450)]
    committer = writer.GroupCommitter(database)
    assert committer.submit(agent.id, rows, now) == 450
    assert models.DirtyBucket.select().count() == 450
    assert rollups.roll_up_dirty()["5m"] == 450


def test_a_job_failing_every_round_is_logged_once_and_its_recovery_too(tmp_path, caplog):
    """A real SQLite file whose metrics_1h table is renamed away: the jobs that need it fail
    each round, each with one traceback, not one a round; putting it back is logged once."""
    from panel import db

    bound = db.database_proxy.obj
    scratch = db.bind(f"sqlite:///{tmp_path / 'panel.sqlite3'}")
    try:
        db.init_schema(scratch)
        scratch.execute_sql("ALTER TABLE metrics_1h RENAME TO metrics_1h_away")
        runner = jobs.JobRunner(settings.from_env({}))
        caplog.set_level("DEBUG", logger="mpanel.jobs")
        for _ in range(3):
            runner.last_run.clear()  # every job is due each round
            runner.run_once()
        failed = [r.getMessage().split()[2] for r in caplog.records
                  if r.getMessage().startswith("job failed")]
        assert failed and len(failed) == len(set(failed)), failed  # once per failing job
        assert all(r.exc_info for r in caplog.records if r.getMessage().startswith("job failed"))
        still = [r.getMessage().split()[3] for r in caplog.records
                 if r.getMessage().startswith("job still failing")]
        assert sorted(still) == sorted(failed * 2)
        scratch.execute_sql("ALTER TABLE metrics_1h_away RENAME TO metrics_1h")
        runner.last_run.clear()
        runner.run_once()
        recovered = [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]
        assert sorted(recovered) == sorted(f"job recovered {name}" for name in failed)
    finally:
        scratch.close()
        db.database_proxy.initialize(bound)
