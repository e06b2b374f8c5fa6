"""MariaDB servers of a test's own, in a temporary folder: for what the machine's shared server
must not be put through (stopped, made a replica). Debian's mariadb-server provides both
programs; .ci/run installs it."""
import shutil
import subprocess
import time
from pathlib import Path

from tests.conftest import free_port, require, stop_process

# Small and unsynced: these servers hold nothing worth an fsync, and start in seconds.
FAST = ("--innodb-log-file-size=4M", "--innodb-buffer-pool-size=8M",
        "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
        "--innodb-data-file-path=ibdata1:4M:autoextend", "--skip-name-resolve")


class OwnMariadb:
    def __init__(self, folder, server_id, options=()):
        self.folder = Path(folder)
        self.options = tuple(options)  # more mariadbd options, e.g. --max-connections=10
        self.datadir = self.folder / "data"
        self.socket = str(self.folder / "mysqld.sock")
        self.port = free_port()
        self.server_id = server_id
        self.process = None

    @property
    def settings(self):
        return {"host": "127.0.0.1", "port": self.port, "user": "root"}

    def install(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([shutil.which("mariadb-install-db"), "--no-defaults",
                        f"--datadir={self.datadir}", "--auth-root-authentication-method=normal",
                        "--user=root", "--skip-test-db", *FAST], check=True,
                       capture_output=True, timeout=120)

    def start(self):
        self.process = subprocess.Popen(
            [shutil.which("mariadbd"), "--no-defaults", f"--datadir={self.datadir}",
             f"--socket={self.socket}", f"--port={self.port}", "--bind-address=127.0.0.1",
             f"--pid-file={self.folder / 'mysqld.pid'}", "--user=root",
             f"--server-id={self.server_id}", f"--log-bin={self.folder / 'binlog'}",
             f"--relay-log={self.folder / 'relay'}", f"--log-error={self.folder / 'error.log'}",
             *FAST, *self.options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited:\n{self.log()}")
            if self.sql("SELECT 1", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"mariadbd did not answer:\n{self.log()}")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process, timeout=30)

    def log(self):
        path = self.folder / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def sql(self, statements, check=True):
        """Run SQL as root with Debian's mariadb client -> the completed process (tab output)."""
        done = subprocess.run([shutil.which("mariadb"), "--no-defaults", "-uroot",
                               f"--socket={self.socket}", "-B", "-N", "-e", statements],
                              capture_output=True, text=True, timeout=30)
        if check and done.returncode != 0:
            raise RuntimeError(done.stderr)
        return done


def require_mariadb_server():
    require("MariaDB's server programs", shutil.which("mariadbd") and
            shutil.which("mariadb-install-db") and shutil.which("mariadb"),
            "install Debian's mariadb-server (.ci/run installs it)")
