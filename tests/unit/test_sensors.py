"""The sensors collector's parser on psutil's own example output (tests/fixtures/README.md):
no machine this project is tested on has a temperature sensor — virtual machines show none —
so psutil.sensors_temperatures() is empty here and the collector is absent, which is checked
too."""
import json
from pathlib import Path

import psutil
import pytest

import agent
from panel import protocol
from panel.validation import validate

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sensors_temperatures.json"


def test_the_hottest_cpu_reading_and_every_reading_hottest_first():
    section = agent.parse_sensors(json.loads(FIXTURE.read_text()))
    validate(protocol.SENSORS, section, "metrics.sensors")
    assert section["cpuMax"] == 52.0  # coretemp's package and core 1; acpitz is no CPU chip
    assert [r["current"] for r in section["readings"]] == [52.0, 52.0, 47.0, 47.0, 47.0, 45.0,
                                                           45.0]
    assert section["readings"][0] == {"name": "coretemp", "label": "Physical id 0",
                                      "current": 52.0, "high": 100.0, "critical": 100.0}
    assert {"name": "asus", "label": "", "current": 47.0} in section["readings"]  # no limits
    assert section["omitted"] == 0


def test_amd_chips_count_as_cpu_and_impossible_readings_are_dropped():
    section = agent.parse_sensors({
        "k10temp": [["Tctl", 61.25, None, None], ["Tccd1", 58.5, None, None]],
        "nvme": [["Composite", 38.85, 84.85, 84.85], ["Sensor 2", 65261.85, 65261.85, None]],
        "it8792": [["", -128.0, 127.0, 127.0]],   # nothing connected to this input
        "acpitz": [["", 27.8, 0.0, -273.2]]})     # limits that are no limits
    validate(protocol.SENSORS, section, "metrics.sensors")
    assert section["cpuMax"] == 61.2
    assert [(r["name"], r["label"]) for r in section["readings"]] == [
        ("k10temp", "Tctl"), ("k10temp", "Tccd1"), ("nvme", "Composite"), ("acpitz", "")]
    assert section["readings"][3] == {"name": "acpitz", "label": "", "current": 27.8,
                                      "high": 0.0}


def test_without_a_cpu_chip_there_is_no_cpu_figure():
    section = agent.parse_sensors({"nvme": [["Composite", 38.0, 84.0, 84.0]]})
    assert "cpuMax" not in section and len(section["readings"]) == 1


def test_readings_are_bounded_and_the_rest_counted():
    section = agent.parse_sensors({"coretemp": [[f"Core {n}", 40.0 + n / 10, None, None]
                                                for n in range(64)]})
    validate(protocol.SENSORS, section, "metrics.sensors")
    assert len(section["readings"]) == 50 and section["omitted"] == 14
    assert section["readings"][0]["label"] == "Core 63" and section["cpuMax"] == 46.3


@pytest.mark.parametrize("raw", [{}, {"acpitz": []}, {"it8792": [["", -128.0, None, None]]}])
def test_no_reading_means_absent(raw):
    with pytest.raises(agent.ServiceAbsent):
        agent.parse_sensors(raw)


def test_a_machine_without_sensors_leaves_the_section_out():
    if getattr(psutil, "sensors_temperatures", lambda: {})():
        pytest.skip("this machine has temperature sensors")
    ctx = agent.CollectorContext()
    metrics, unavailable = agent.run_collectors(("sensors",), ctx)
    assert metrics == {} and unavailable == {}
    assert "sensors" in ctx.absent_until  # looked for again only after ABSENT_RECHECK
