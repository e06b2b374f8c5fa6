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
