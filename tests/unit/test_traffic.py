"""Traffic arithmetic on synthetic series with known answers: counter resets, reboots, gaps,
replayed samples, interfaces coming and going, billing cycles of 28-31 day months, projections
and alert levels (panel/traffic.py)."""
import datetime

import pytest

from panel import traffic

T0 = datetime.datetime(2026, 11, 30, 12, 0)
GB = 10 ** 9


def at(minute):
    return T0 + datetime.timedelta(minutes=minute)


def sample(minute, **interfaces):
    """A sample taken `minute` after T0 with {name: (received, sent)} counters."""
    return at(minute), dict(interfaces)


def totals(samples):
    added = traffic.increments(samples)
    return sum(r for _, r, _ in added), sum(s for _, _, s in added)


def test_counters_growing_add_their_growth_and_the_first_sample_is_the_base():
    series = [sample(0, eth0=(1000, 500)), sample(1, eth0=(1600, 700)),
              sample(2, eth0=(2600, 1700))]
    assert traffic.increments(series) == [(at(1), 600, 200), (at(2), 1000, 1000)]


def test_a_counter_reset_mid_cycle_counts_what_it_counted_since():
    # 1000 -> 5000 is 4000; the reset leaves 300 counted since; then 300 -> 800 is 500.
    series = [sample(0, eth0=(1000, 10)), sample(1, eth0=(5000, 20)),
              sample(2, eth0=(300, 5)), sample(3, eth0=(800, 15))]
    assert totals(series) == (4000 + 300 + 500, 10 + 5 + 10)


def test_a_reboot_resets_every_interface_and_loses_nothing_after_it():
    series = [sample(0, eth0=(10 * GB, GB), eth1=(5 * GB, GB)),
              sample(1, eth0=(11 * GB, 2 * GB), eth1=(6 * GB, 2 * GB)),
              # rebooted: both counters start again from 0
              sample(5, eth0=(100, 50), eth1=(40, 20)),
              sample(6, eth0=(1100, 150), eth1=(140, 120))]
    assert totals(series) == (2 * GB + 140 + 1100, 2 * GB + 70 + 200)


def test_a_gap_is_covered_by_the_counters_growth_across_it():
    # Three hours without a sample: the counter's growth is what crossed the interface.
    series = [sample(0, eth0=(0, 0)), sample(1, eth0=(60, 6)),
              sample(181, eth0=(60 + 3 * GB, 6 + GB)), sample(182, eth0=(61 + 3 * GB, 7 + GB))]
    assert totals(series) == (61 + 3 * GB, 7 + GB)


def test_a_sample_without_the_network_section_is_neither_counted_nor_the_base():
    series = [sample(0, eth0=(100, 10)), (at(1), None), sample(2, eth0=(400, 40))]
    assert traffic.increments(series) == [(at(2), 300, 30)]


def test_a_new_interface_adds_from_its_second_sample_and_a_vanished_one_costs_nothing():
    series = [sample(0, eth0=(100, 10), veth1=(9 * GB, 9 * GB)),
              sample(1, eth0=(200, 20)),                      # veth1 went away
              sample(2, eth0=(300, 30), veth2=(50, 50)),       # veth2 came
              sample(3, eth0=(400, 40), veth2=(80, 90))]
    assert totals(series) == (300 + 30, 30 + 40)


def test_a_replayed_late_sample_moves_bytes_between_hours_and_adds_none():
    before = [sample(50, eth0=(0, 0)), sample(70, eth0=(2000, 200))]
    replayed = sorted(before + [sample(59, eth0=(900, 90))])
    window = (T0, T0 + 4 * traffic.HOUR)
    assert traffic.hourly(before, *window) == {at(60): (2000, 200)}
    assert traffic.hourly(replayed, *window) == {at(0): (900, 90), at(60): (1100, 110)}
    assert totals(replayed) == totals(before)


def test_hourly_keeps_only_the_hours_asked_for_and_uses_the_sample_before_as_base():
    series = [sample(-5, eth0=(0, 0)), sample(1, eth0=(10, 1)), sample(61, eth0=(30, 3))]
    assert traffic.hourly(series, T0, T0 + traffic.HOUR) == {T0: (10, 1)}


def test_reading_the_detail_skips_entries_without_counters():
    assert traffic.interface_counters(None) is None
    assert traffic.interface_counters([{"interface": "eth0", "bytesRecv": 5, "bytesSent": 6},
                                       {"interface": "eth1", "bytesRecv": 5},
                                       {"bytesRecv": 1, "bytesSent": 1}]) == {"eth0": (5, 6)}


# ===== Cycles ===================================================================================

def day(text):
    return datetime.datetime.strptime(text, "%Y-%m-%d")


@pytest.mark.parametrize("moment, billing_day, start, end", [
    ("2026-03-15", 1, "2026-03-01", "2026-04-01"),
    ("2026-03-01", 1, "2026-03-01", "2026-04-01"),   # the billing day's midnight starts it
    ("2026-03-14", 15, "2026-02-15", "2026-03-15"),   # a 28-day cycle
    ("2026-12-20", 15, "2026-12-15", "2027-01-15"),   # across the year's end
    ("2026-01-10", 15, "2025-12-15", "2026-01-15"),
    ("2026-02-28", 31, "2026-02-28", "2026-03-31"),   # day 31 falls on February's last
    ("2026-02-27", 31, "2026-01-31", "2026-02-28"),
    ("2028-02-29", 30, "2028-02-29", "2028-03-30"),   # a leap year's February
    ("2026-04-30", 31, "2026-04-30", "2026-05-31"),   # a 30-day month
])
def test_cycles_start_on_the_billing_day_or_the_months_last(moment, billing_day, start, end):
    assert traffic.cycle(day(moment), billing_day) == (day(start), day(end))


def test_the_last_instant_before_the_billing_day_is_still_the_old_cycle():
    moment = day("2026-03-15") - datetime.timedelta(microseconds=1)
    assert traffic.cycle(moment, 15) == (day("2026-02-15"), day("2026-03-15"))


def test_projection_is_the_pace_so_far_over_the_whole_cycle():
    start, end = day("2026-04-01"), day("2026-05-01")     # 30 days
    assert traffic.projection(100 * GB, start, end, day("2026-04-11")) == 300 * GB
    assert traffic.projection(100 * GB, start, end, start + datetime.timedelta(hours=1)) is None


def test_usage_counts_by_the_chosen_basis_and_reaches_the_levels():
    start, end = day("2026-04-01"), day("2026-05-01")
    summed = traffic.Usage(60 * GB, 25 * GB, start, end, day("2026-04-16"), 100 * GB)
    assert summed.used == 85 * GB and summed.percent == 85.0 and summed.level == 80
    assert summed.projected == 170 * GB
    larger = traffic.Usage(60 * GB, 25 * GB, start, end, day("2026-04-16"), 100 * GB, "max")
    assert larger.used == 60 * GB and larger.level is None
    assert traffic.reached(100 * GB, 100 * GB) == 100
    assert traffic.reached(5, None) is None


@pytest.mark.parametrize("text, expected", [
    ("500 GB", 500 * GB), ("1.5T", 1_500_000_000_000), ("2 TiB", 2 * 1024 ** 4),
    ("1000000", 1_000_000), ("", None), ("  ", None), ("750g", 750 * GB)])
def test_allowances_read_as_hosts_write_them(text, expected):
    assert traffic.parse_allowance(text) == expected


@pytest.mark.parametrize("text", ["-5 GB", "0", "lots", "5 XB", "1e9", "9999999 PB", "5 iB"])
def test_allowances_that_are_not_amounts_are_refused(text):
    with pytest.raises(ValueError):
        traffic.parse_allowance(text)


@pytest.mark.parametrize("text", ["0", "32", "x", "", "-1", "1.5"])
def test_billing_days_outside_a_month_are_refused(text):
    with pytest.raises(ValueError):
        traffic.parse_billing_day(text)


@pytest.mark.parametrize("value", [2 * 10 ** 12, 500 * GB, 2 * 1024 ** 4, 1234567, 1000, 1024])
def test_an_allowance_shown_in_a_form_reads_back_as_the_same_bytes(value):
    assert traffic.parse_allowance(traffic.allowance_text(value)) == value
