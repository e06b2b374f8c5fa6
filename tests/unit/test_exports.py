"""Downloads as pure functions: CSV cells a spreadsheet would run are made text, and a chart's
rows are its lines' points."""
import csv
import datetime
import io
import types

from panel import charts, exports

START = datetime.datetime(2026, 12, 2, 12, 0)


def parsed(text):
    return list(csv.reader(io.StringIO(text)))


def test_cells_a_spreadsheet_would_run_start_with_an_apostrophe():
    for formula in ("=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1",
                    '=HYPERLINK("http://evil.example")'):
        assert exports.cell(formula) == "'" + formula
    assert [exports.cell(v) for v in ("/var", "a=b", -1.5, 0, None)] == ["/var", "a=b", -1.5, 0,
                                                                          ""]


def test_a_chart_is_one_row_per_point_of_each_line():
    chart = charts.Chart(title="Disk usage", unit="percent", start=START, step=60, bins=60,
                         gap_seconds=180, key="disk", lines=[
                             charts.Line("=evil()", [(charts.epoch(START), 40.0, None)]),
                             charts.Line("/", [(charts.epoch(START) + 60, 12.5, 13.0)])])
    assert parsed(exports.chart_csv([chart])) == [
        list(exports.CHART_HEADER),
        ["disk", "'=evil()", "2026-12-02T12:00:00Z", "40.0", "", "percent"],
        ["disk", "/", "2026-12-02T12:01:00Z", "12.5", "13.0", "percent"]]
    assert exports.chart_json(chart)["lines"][1] == {"label": "/",
                                                     "points": [[charts.epoch(START) + 60,
                                                                 12.5, 13.0]]}


def test_the_alert_history_is_one_row_per_alert():
    alert = types.SimpleNamespace(id=7, server=types.SimpleNamespace(name="-web"), rule="cpu",
                                  state="resolved", message="@cpu above 90%", value=95.5,
                                  threshold=90.0, silenced=False, started_at=START,
                                  resolved_at=None)
    assert parsed(exports.alerts_csv([alert]))[1] == [
        "7", "'-web", "cpu", "resolved", "'@cpu above 90%", "95.5", "90.0", "False",
        "2026-12-02T12:00:00Z", ""]
