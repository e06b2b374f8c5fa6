"""`make run` on a fresh data folder: admin created, this machine registered, panel and local
agent started — and this machine shows up online in the servers table within 30 s. Ctrl-C
stops both."""
import os
import re
import signal
import socket
import subprocess
import time
import types

import pytest

from tests.conftest import ROOT, free_port
from tests.integration.test_dashboard import Browser


def start_make_run(tmp_path, port, password=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPANEL_")}
    env.update(MPANEL_DATA_DIR=str(tmp_path / "data"), MPANEL_PORT=str(port),
               MPANEL_BCRYPT_ROUNDS="4")
    if password:
        env["MPANEL_ADMIN_PASSWORD"] = password
    log = open(tmp_path / "make-run.log", "wb")
    # A session of its own, so the test can send Ctrl-C to the whole group like a terminal does.
    return subprocess.Popen(["make", "-s", "run"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def ctrl_c(process):
    """SIGINT to the whole process group, as a terminal's Ctrl-C; True when every process of
    the group (make, run-local, panel, agent) has gone within 20 s."""
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=20)  # make itself exits by the signal, as it does in a terminal
    deadline = time.monotonic() + 20
    while group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_alive(process.pid):
        os.killpg(process.pid, signal.SIGKILL)
        return False
    return True


def wait_for_row(browser, deadline):
    while time.monotonic() < deadline:
        page = browser.request("GET", "/servers").text
        if "badge online" in page and re.search(r'<td class="num">\d+\.\d %</td>', page):
            return page
        time.sleep(0.5)
    return None


def port_is_free(port):
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.timeout(120)
def test_make_run_shows_this_machine_within_30_seconds(tmp_path):
    port = free_port()
    started = time.monotonic()
    process = start_make_run(tmp_path, port, password="make-run-password")
    try:
        panel = types.SimpleNamespace(host="127.0.0.1", port=port)
        browser = Browser(panel)
        deadline = started + 30
        while time.monotonic() < deadline:
            try:
                if browser.login(password="make-run-password").status == 303:
                    break
            except OSError:
                time.sleep(0.3)
        page = wait_for_row(browser, deadline)
        assert page is not None, (tmp_path / "make-run.log").read_text()
        assert socket.gethostname() in page
    finally:
        stopped = ctrl_c(process)
    log_text = (tmp_path / "make-run.log").read_text()
    assert stopped, log_text
    assert "agent stopped" in log_text and "Traceback" not in log_text
    assert port_is_free(port)
    key_file = tmp_path / "data" / "local-agent" / "config.json"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"


@pytest.mark.timeout(120)
def test_make_run_generates_and_prints_the_admin_password_once(tmp_path):
    port = free_port()
    process = start_make_run(tmp_path, port)
    log_path = tmp_path / "make-run.log"
    try:
        deadline = time.monotonic() + 30
        password = None
        while time.monotonic() < deadline and password is None:
            match = re.search(r"with password: (\S+)", log_path.read_text())
            password = match.group(1) if match else None
            time.sleep(0.2)
        assert password, log_path.read_text()
        browser = Browser(types.SimpleNamespace(host="127.0.0.1", port=port))
        assert browser.login(password=password).status == 303
    finally:
        ctrl_c(process)

    # A second start keeps the admin and the machine's key, and prints no password.
    log_path.rename(tmp_path / "first.log")
    process = start_make_run(tmp_path, port)
    try:
        browser = Browser(types.SimpleNamespace(host="127.0.0.1", port=port))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if browser.login(password=password).status == 303:
                    break
            except OSError:
                time.sleep(0.3)
        assert wait_for_row(browser, time.monotonic() + 30) is not None
    finally:
        ctrl_c(process)
    assert "with password:" not in log_path.read_text()


@pytest.mark.timeout(60)
def test_make_run_on_a_busy_port_says_so_instead_of_reporting_elsewhere(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        process = start_make_run(tmp_path, port, password="make-run-password")
        process.wait(timeout=45)
    finally:
        busy.close()
    log_text = (tmp_path / "make-run.log").read_text()
    assert "the panel did not start" in log_text and "MPANEL_PORT" in log_text
    assert "agent starting" not in log_text
