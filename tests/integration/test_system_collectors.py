"""The system collectors against what this machine really has: a bind mount made by the test
(mounting needs root)."""
import subprocess

import agent
from tests.conftest import require


def test_a_bind_mount_of_a_listed_file_system_is_left_out(tmp_path):
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    done = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True,
                          text=True)
    require("a bind mount", done.returncode == 0, f"needs root: {done.stderr.strip()}")
    try:
        mounts = agent.collect_disk(agent.CollectorContext())["mounts"]
        with open("/proc/self/mounts") as listing:
            assert f" {target} " in listing.read()  # mounted, and a real file system's
        points = [m["mountpoint"] for m in mounts]
        assert str(target) not in points
        assert len(points) == len({(m["device"], m["total"], m["used"]) for m in mounts})
    finally:
        subprocess.run(["umount", str(target)], check=False)
