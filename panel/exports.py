"""Downloads of what the pages show: a server's chart series for a range as CSV or JSON, and the
alert history as CSV (pure: rows in, text out).

The series are the chart's own (server_page.build_charts builds them for the page, for
/api/v1/servers/<id>/series and for these downloads alike), so a download holds exactly what
the chart draws: each line's points, with the mean and the peak of rollup rows.

CSV safety ("CSV injection", OWASP): a spreadsheet runs a cell that starts with = + - @ as a
formula, and skips a leading tab or carriage return before one. Agent-supplied mount points,
server names and alert messages end up in cells, so a text cell starting with any of them is
written with a leading apostrophe, which spreadsheets show as text. Numbers are written as
numbers (a negative one is not text).
"""
import csv
import datetime
import io

from . import charts

# ?format= (and the downloads' endings) -> Content-Type.
FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def iso(moment):
    return moment.isoformat() + "Z" if moment else None


def cell(value):
    """One CSV cell: text that a spreadsheet would run is made plain text; None is empty."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(header, rows):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([cell(value) for value in row] for row in rows)
    return out.getvalue()


# ===== Charts ===================================================================================

CHART_HEADER = ("chart", "series", "time", "mean", "peak", "unit")


def chart_csv(built):
    """Built charts (charts.Chart) as CSV: one row per point of each line, oldest first."""
    return csv_text(CHART_HEADER, (
        (chart.key, line.label, iso(charts.EPOCH + datetime.timedelta(seconds=moment)), mean,
         peak, chart.unit)
        for chart in built for line in chart.lines for moment, mean, peak in line.points))


def chart_json(chart):
    """One built chart as JSON (the page's downloads and /api/v1's series alike)."""
    return {"key": chart.key, "title": chart.title, "unit": chart.unit,
            "start": iso(chart.start), "step": chart.step, "bins": chart.bins,
            "yMax": chart.y_max, "note": chart.note or None,
            "lines": [{"label": line.label,
                       "points": [[moment, mean, peak] for moment, mean, peak in line.points]}
                      for line in chart.lines]}


# ===== Alerts ===================================================================================

ALERT_HEADER = ("id", "server", "rule", "state", "message", "value", "threshold", "silenced",
                "started_at", "resolved_at")


def alerts_csv(alerts):
    """Alerts (models.Alert, servers joined) as CSV, in the order given."""
    return csv_text(ALERT_HEADER, (
        (alert.id, alert.server.name, alert.rule, alert.state, alert.message, alert.value,
         alert.threshold, bool(alert.silenced), iso(alert.started_at), iso(alert.resolved_at))
        for alert in alerts))
