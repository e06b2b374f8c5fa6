"""The figure table (panel/figures.py) and what derives from it: one order for raw and rollup
chart rows, one rule for the tier a chart range reads."""
import datetime

from panel import charts, figures, rollups, server_page


def test_every_chart_range_reads_the_tier_the_one_rule_picks():
    for chart_range in charts.RANGES.values():
        span = datetime.timedelta(seconds=chart_range.seconds)
        tier = rollups.tier_for(span, charts.ROWS_PER_BIN * chart_range.bins)
        assert chart_range.tier == ("raw" if tier is None else tier.name), chart_range.name
        interval = rollups.RAW_INTERVAL if tier is None else tier.seconds
        # Bins hold whole rows of the tier read, so a rollup bucket never straddles two bins,
        # and no bin averages more rows than the budget.
        assert chart_range.step % interval == 0, chart_range.name
        assert chart_range.step // interval <= charts.ROWS_PER_BIN, chart_range.name
        assert chart_range.source_interval == interval
    # What the page has always read, now from the rule.
    assert {name: r.tier for name, r in charts.RANGES.items()} == {
        "1h": "raw", "6h": "raw", "24h": "raw", "7d": "5m", "30d": "1h"}


def test_the_tier_rule_reads_rollups_past_a_day_and_hourly_past_a_month():
    day = datetime.timedelta(days=1)
    assert rollups.tier_name_for(day) == "raw"
    assert rollups.tier_name_for(2 * day) == "5m"
    assert rollups.tier_name_for(30 * day) == "5m"
    assert rollups.tier_name_for(32 * day) == "1h"
    # A row budget only ever moves to a coarser tier, never to a finer one.
    assert rollups.tier_name_for(30 * day, max_rows=1000) == "1h"
    assert rollups.tier_name_for(day, max_rows=500) == "5m"
    assert rollups.tier_name_for(32 * day, max_rows=10 ** 9) == "1h"


def test_raw_and_rollup_rows_give_each_figure_its_own_series():
    """The tie the two hand-kept lists had: a raw row and a rollup row with the same figures
    must chart each figure as itself, whatever the table's order."""
    moment = datetime.datetime(2026, 12, 1, 12, 0)
    values = {figure.column: float(index + 1) for index, figure in enumerate(figures.CHARTED)}
    raw_row = (moment, *(values.get(column) for column in rollups.RAW_CHART_COLUMNS[1:]))
    rollup_row = (moment, *(v for figure in figures.CHARTED
                            for v in (values[figure.column], 10 * values[figure.column])))
    raw_points = server_page.figure_points("raw", [raw_row])
    rollup_points = server_page.figure_points("5m", [rollup_row])
    for column, value in values.items():
        assert raw_points[column] == [(charts.epoch(moment), value, None)], column
        assert rollup_points[column] == [(charts.epoch(moment), value, 10 * value)], column


def test_rollups_average_exactly_the_figures_the_table_rolls_up():
    assert list(rollups.FIGURES) == [f.column for f in figures.ROLLED_UP]
    assert set(figures.CHARTED) <= set(figures.ROLLED_UP)


def test_every_figure_reads_fields_the_wire_schema_knows():
    from panel import protocol
    sections = protocol.METRICS["properties"]
    for figure in figures.FIGURES:
        schema = {"properties": sections}
        for part in figure.section.split("."):
            schema = schema["properties"][part]
        if figure.entries:
            schema = schema["properties"][figure.entries]["items"]
        missing = set(figure.keys) - set(schema["properties"])
        assert not missing, f"{figure.column} reads {missing}, which the wire schema refuses"


def test_only_the_figure_table_names_iowait_and_steal():
    """The issue's check: a figure is spelled in one file of panel/ and templates/, so adding
    or charting one is an edit to the table."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    for word in ("iowait", "steal"):
        pattern = re.compile(rf"\b{word}\b")
        naming = sorted(str(path.relative_to(root)) for folder in ("panel", "templates")
                        for path in (root / folder).rglob("*") if path.is_file()
                        and pattern.search(path.read_text(encoding="utf-8", errors="replace")))
        assert naming == ["panel/figures.py"], word


def test_a_statvfs_result_gives_used_and_free_inodes():
    import os
    import agent
    # bsize, frsize, blocks, bfree, bavail, files, ffree, favail, flag, namemax
    stat = os.statvfs_result((4096, 4096, 1000, 500, 450, 1000, 50, 40, 0, 255))
    assert agent.mount_inodes(stat) == {"inodesUsed": 950, "inodesFree": 50,
                                        "inodesPercent": 95.0}
    no_table = os.statvfs_result((4096, 4096, 1000, 500, 450, 0, 0, 0, 0, 255))
    assert agent.mount_inodes(no_table) == {}


def test_the_fullest_mounts_inode_share_is_stored_and_mounts_without_inodes_are_skipped():
    from panel import ingest
    mounts = [{"mountpoint": "/", "total": 100, "used": 10, "free": 90, "inodesUsed": 200,
               "inodesFree": 800, "inodesPercent": 20.0},
              {"mountpoint": "/var/spool", "device": "/dev/sdb", "total": 100, "used": 5,
               "free": 95, "inodesUsed": 950, "inodesFree": 50, "inodesPercent": 95.0},
              {"mountpoint": "/boot/efi", "device": "/dev/sdc", "total": 10, "used": 1,
               "free": 9}]
    row = ingest.sample_row({"disk": {"mounts": mounts}})
    assert row["disk_max_inode_percent"] == 95.0 and row["disk_max_percent"] == 10.0
    assert row["detail"]["disks"][1]["inodesUsed"] == 950
    assert ingest.sample_row({"disk": {"mounts": mounts[2:]}})["disk_max_inode_percent"] is None
