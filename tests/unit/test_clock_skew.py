"""How far off an agent's clock is, as the servers table and the detail page say it."""
import datetime

import pytest

from panel import ingest, models

NOW = datetime.datetime(2026, 11, 30, 12, 0)


@pytest.mark.parametrize("offset,text", [
    (None, None),
    (0, None),
    (-1, None),
    (models.CLOCK_SKEW_WARNING, None),
    (models.CLOCK_SKEW_WARNING + 1, "clock 1 min ahead"),
    (7199, "clock 2 h ahead"),  # a Date header's whole seconds
    (-3600, "clock 1 h behind"),
    (-(3 * 86400 + 7200), "clock 3 d 2 h behind"),
    (ingest.MAX_CLOCK_OFFSET, "clock 24855 d 3 h ahead"),
])
def test_a_clock_off_by_more_than_a_minute_is_named(offset, text):
    assert models.clock_skew(offset) == text


def test_an_agents_now_is_its_own_only_when_its_clock_is_off():
    assert models.agent_clock(None, NOW) == NOW
    assert models.agent_clock(30, NOW) == NOW
    assert models.agent_clock(-3600, NOW) == NOW - datetime.timedelta(hours=1)
