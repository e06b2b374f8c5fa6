"""Plausible metric history for the dashboard's browser tests, screenshots and benchmarks:
samples in the agent's wire format (docs/protocol.md), with a daily rhythm, noise, a nightly
backup burst and top-process lists, deterministic for a given seed. They go through the real
ingest API like an agent replaying its buffer."""
import datetime
import math
import random

GIB = 1 << 30
ROOT_INODES = 5_242_880  # ext4 on 80 GiB, one inode per 16 KiB


def sample(moment, rng, memory_total=16 * GIB):
    """One sample taken at `moment` (naive UTC)."""
    hour = moment.hour + moment.minute / 60
    day_shape = 0.5 + 0.5 * math.sin((hour - 9) / 24 * 2 * math.pi)  # busy in the afternoon
    backup = 1.0 if 2 <= hour < 2.5 else 0.0
    cpu = min(100.0, 8 + 45 * day_shape + 30 * backup + rng.gauss(0, 4) ** 2 / 4)
    used = int(memory_total * min(0.95, 0.35 + 0.25 * day_shape + rng.uniform(-0.02, 0.02)))
    rx = max(0.0, 2e6 * day_shape + 4e5 * rng.random() + 8e6 * backup)
    tx = max(0.0, 6e5 * day_shape + 1e5 * rng.random() + 3e7 * backup)
    root_inodes = int(ROOT_INODES * (0.22 + 0.02 * day_shape + 0.1 * backup))  # mail spool
    top = [
        {"pid": 812, "name": "postgres", "user": "postgres", "cpuPercent": round(cpu * 0.4, 1),
         "rss": 900 << 20},
        {"pid": 1204, "name": "nginx", "user": "www-data", "cpuPercent": round(cpu * 0.2, 1),
         "rss": 60 << 20},
        {"pid": 2210, "name": "restic" if backup else "python3", "user": "root",
         "cpuPercent": round(cpu * (0.3 if backup else 0.05), 1), "rss": 210 << 20},
    ]
    return {
        "timestamp": moment.replace(microsecond=0).isoformat() + "Z",
        "metrics": {
            # Steal and inodes take no draws of `rng`, so every other figure of a seed stays
            # what it was before they were added.
            "cpu": {"usage": round(cpu, 1), "iowait": round(2 + 10 * backup + rng.random(), 1),
                    "steal": round(0.2 + 1.5 * day_shape, 1),
                    "load1": round(cpu / 25 + rng.random() * 0.2, 2),
                    "load5": round(cpu / 27, 2), "load15": round(cpu / 30, 2), "count": 4},
            "memory": {"total": memory_total, "used": used, "free": memory_total - used,
                       "available": memory_total - used, "cached": GIB,
                       "swapTotal": 2 * GIB, "swapUsed": int(GIB * 0.1 * (1 + day_shape))},
            "disk": {
                "mounts": [
                    {"mountpoint": "/", "device": "/dev/vda1", "fstype": "ext4",
                     "total": 80 * GIB, "used": int(52 * GIB + hour * 0.05 * GIB),
                     "free": int(28 * GIB - hour * 0.05 * GIB),
                     "percent": round(65 + hour * 0.0625, 1),
                     "inodesUsed": root_inodes, "inodesFree": ROOT_INODES - root_inodes,
                     "inodesPercent": round(100 * root_inodes / ROOT_INODES, 1)},
                    {"mountpoint": "/var/lib/postgresql", "device": "/dev/vdb", "fstype": "xfs",
                     "total": 200 * GIB, "used": 82 * GIB, "free": 118 * GIB, "percent": 41.0,
                     "inodesUsed": 3100, "inodesFree": 104854500, "inodesPercent": 0.0},
                ],
                "io": [{"device": "vda", "readBytesPerSec": round(3e5 * day_shape + 5e6 * backup),
                        "writeBytesPerSec": round(8e5 * day_shape + 2e7 * backup)}],
            },
            "network": {"interfaces": [{"interface": "eth0", "bytesSent": 10 ** 10,
                                        "bytesRecv": 3 * 10 ** 10, "packetsSent": 10 ** 7,
                                        "packetsRecv": 3 * 10 ** 7,
                                        "bytesSentPerSec": round(tx, 1),
                                        "bytesRecvPerSec": round(rx, 1)}]},
            "processes": {"total": 180 + rng.randint(0, 20), "running": 2, "topCpu": top,
                          "topMemory": top},
            "services": {"redis": {"usedMemory": 48 << 20, "connectedClients": 12,
                                   "opsPerSec": round(300 * day_shape, 1)}},
        },
    }


def history(end, minutes, seed=1, skip=()):
    """Samples every minute for `minutes` minutes up to `end`, oldest first, leaving out the
    minutes (offsets from the start) in `skip`: the server was down."""
    rng = random.Random(seed)
    start = end - datetime.timedelta(minutes=minutes)
    skipped = set(skip)
    return [sample(start + datetime.timedelta(minutes=i), rng) for i in range(minutes)
            if i not in skipped]


# ===== A fleet in the database, for the servers table at size ====================================

def fleet(count, now, seed=3, prefix="srv"):
    """`count` servers written straight into the bound database (the API would take minutes
    for 10,000): each with an agent whose key is never used, and, for most, a latest sample,
    services, a disk forecast and a day of traffic, as a fleet's servers table shows them.
    One in 50 has never reported and one in 40 is silent. -> [(server id, agent id)] by name."""
    from panel import checks, models

    rng = random.Random(seed)
    names = [f"{prefix}-{index:05d}" for index in range(count)]
    with models.database_proxy.atomic():
        for chunk in _chunks(names, 500):
            models.Server.insert_many([{"name": name, "critical": rng.random() < 0.05}
                                       for name in chunk]).execute()
        ids = dict(models.Server.select(models.Server.name, models.Server.id)
                   .where(models.Server.name.startswith(prefix + "-")).tuples())
        for chunk in _chunks(names, 500):
            models.Agent.insert_many([{
                "server": ids[name], "api_key_id": f"f{ids[name]:015d}"[-16:],
                "api_key_hash": "unused", "status": "active", "agent_version": "0.2.0",
                "hostname": f"{name}.example.net"} for name in chunk]).execute()
        agents = dict(models.Agent.select(models.Agent.server, models.Agent.id)
                      .where(models.Agent.server.in_(list(ids.values()))).tuples())
        pairs = [(ids[name], agents[ids[name]]) for name in names]
        reporting = [(index, agent) for index, (_, agent) in enumerate(pairs) if index % 50]
        for chunk in _chunks(reporting, 500):
            seen = {agent: now - datetime.timedelta(
                seconds=3600 if index % 40 == 1 else rng.randint(1, 59)) for index, agent in chunk}
            models.Metric.insert_many([fleet_sample(agent, seen[agent], rng)
                                       for _, agent in chunk]).execute()
            models.LatestSample.insert_many([{"agent": agent, "timestamp": seen[agent]}
                                             for _, agent in chunk]).execute()
            for agent, moment in seen.items():
                models.Agent.update(last_seen=moment).where(models.Agent.id == agent).execute()
        states, forecasts, days = [], [], []
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        for index, agent in reporting:
            for service in rng.sample(["nginx", "mysql", "php_fpm", "redis"], rng.randint(0, 3)):
                down = rng.random() < 0.02
                states.append({"agent": agent, "metric": "service_down", "subject": service,
                               "text": "down" if down else "up", "updated_at": now,
                               "bad_since": now if down else None})
            if rng.random() < 0.2:
                forecasts.append({"agent": agent, "mount": "/var", "used": 40 * GIB,
                                  "capacity": 80 * GIB, "bytes_per_day": 2.0 * GIB,
                                  "full_at": now + datetime.timedelta(days=rng.randint(2, 200)),
                                  "reason": "", "computed_at": now})
            days.append({"agent": agent, "day": midnight, "received": rng.randint(1, 50) * GIB,
                         "sent": rng.randint(1, 20) * GIB})
        assert checks.BY_METRIC["service_down"]
        for model, rows in ((models.CheckState, states), (models.MountForecast, forecasts),
                            (models.TrafficDay, days)):
            for chunk in _chunks(rows, 500):
                model.insert_many(chunk).execute()
    return pairs


def fleet_sample(agent, moment, rng):
    """A latest-sample row of the figures the servers table shows."""
    total = 16 * GIB
    return {"agent": agent, "timestamp": moment, "cpu_usage": round(rng.uniform(1, 95), 1),
            "memory_used": int(total * rng.uniform(0.2, 0.9)), "memory_total": total,
            "disk_max_percent": round(rng.uniform(10, 95), 1),
            "network_rx_rate": rng.uniform(1e3, 5e7), "network_tx_rate": rng.uniform(1e3, 2e7),
            "cpu_load_1min": round(rng.uniform(0, 8), 2)}


def report_again(agents, now, seed=4):
    """A new latest sample for each of `agents`, taken at `now`: what a minute of reports does
    to the servers table."""
    from panel import models

    rng = random.Random(seed)
    with models.database_proxy.atomic():
        for chunk in _chunks(list(agents), 500):
            models.Metric.insert_many([fleet_sample(agent, now, rng) for agent in chunk]).execute()
            models.LatestSample.update(timestamp=now).where(
                models.LatestSample.agent.in_(chunk)).execute()
            models.Agent.update(last_seen=now).where(models.Agent.id.in_(chunk)).execute()


def _chunks(items, size):
    return [items[start:start + size] for start in range(0, len(items), size)]
