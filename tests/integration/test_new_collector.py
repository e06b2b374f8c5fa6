"""A collector nobody listed anywhere in the panel is on by default: a real agent with one extra
registration (a wrapper that imports agent.py, registers a collector and runs main()) reports
to a panel with default settings, and the new section is stored in the sample's detail and
shown on the server page (issue 11: a fixed list in panel/settings.py switched it off)."""
import html
import os
import signal
import subprocess
import sys

from panel import models
from tests.conftest import ROOT, agent_env, new_server, wait_for, write_agent_config
from tests.integration.test_dashboard_pages import admin  # noqa: F401 (the fixture)

WRAPPER = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import agent


@agent.collector("entropy")
def collect_entropy(ctx):
    \"\"\"A collector the panel has never heard of: a flat section of figures.\"\"\"
    return {{"availableBits": 3456, "poolPercent": 84.5, "source": "<kernel & co>",
             "nested": {{"dropped": 1}}}}


sys.exit(agent.main())
"""


def test_a_new_collector_is_on_by_default_and_its_data_stored_and_shown(panel, admin, tmp_path):  # noqa: F811
    server, key = new_server("plugin-box")
    wrapper = tmp_path / "agent_with_entropy.py"
    wrapper.write_text(WRAPPER)
    # No enabledCollectors: the registry's defaults. Run as a service (not --once), so the
    # agent reads GET /api/agent/config before its first sample and applies the panel's list.
    config = write_agent_config(tmp_path, panel.url, key, interval=1)
    log_path = tmp_path / "agent.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, str(wrapper), "--config", str(config)],
                                   env=agent_env(), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        assert wait_for(lambda: models.Metric.select().count() >= 1, timeout=30), \
            log_path.read_text()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)

    stored = models.Metric.select().order_by(models.Metric.timestamp.desc()).first()
    assert stored.extra == {"entropy": {"availableBits": 3456, "poolPercent": 84.5,
                                        "source": "<kernel & co>"}}  # nested: left out
    assert stored.cpu_usage is not None  # the shipped collectors ran too

    page = admin.request("GET", f"/servers/{server.id}/processes").text
    table = page.split("<caption>entropy</caption>", 1)[1].split("</table>", 1)[0]
    assert "availableBits" in table and "3,456" in table
    assert html.escape("<kernel & co>") in table  # agent-supplied text shown as text
