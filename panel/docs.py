"""The parts of docs/ generated from where their facts are defined, each between a pair of
marker comments: the field tables of docs/protocol.md from the wire schemas the panel validates
with (panel/protocol.py; a figure's field there comes from panel/figures.py, and its row names
the column it is stored as or feeds), its stored-figures table and docs/prometheus.md's sample
families from the figure table. `python -m panel.docs` rewrites them; `--check` exits 1 naming a
stale file (tests/unit/test_docs.py runs the check), so the documents cannot drift.
"""
import argparse
import functools
import sys
from pathlib import Path

from . import figures, protocol

ROOT = Path(__file__).resolve().parent.parent
UNIT_TEXT = {"percent": "%", "bytes": "bytes", "rate": "bytes/s", "load": "", "count": "",
             "per_second": "per second", "celsius": "°C", "seconds": "seconds", "days": "days"}
TYPE_TEXT = {"real": "number", "bigint": "integer", "integer": "integer"}


def _code(*names):
    return ", ".join(f"`{name}`" for name in names)


def _family_unit(figure_unit, family):
    if family.divisor == 100:
        return "ratio 0–1"
    return {"bytes": "bytes", "rate": "bytes/s", "count": "count", "per_second": "per second",
            "celsius": "°C", "seconds": "seconds", "days": "days"}.get(figure_unit, "—")


def _alert_text(figure):
    """The rule metric, and its built-in rule when it has one ("above 90 % for 5 min")."""
    watch = figure.alert
    if watch is None:
        return ""
    if watch.threshold is None:
        return _code(watch.metric)
    unit = " %" if figures.shown_unit(figure) == "percent" else ""
    side = "below" if watch.below else "above"
    return f"{_code(watch.metric)} (built in: {side} {watch.threshold:g}{unit} for " \
           f"{watch.minutes} min)"


def stored_figures_table():
    """docs/protocol.md: what the panel keeps of each sample, one row per figure."""
    rows = ["| column | from the agent | type | meaning | rolled up | chart | Prometheus "
            "| alert metric |", "|---|---|---|---|---|---|---|---|"]
    for figure in figures.FIGURES:
        unit = UNIT_TEXT[figure.unit]
        meaning = figure.description + (f", {unit}" if unit else "")
        if figure.reduce != "value":
            meaning += f" ({figure.reduce.replace('_', ' ')})"
        chart = ""
        if figure.chart:
            title = next(c.title for c in figures.CHARTS if c.key == figure.chart)
            chart = f"{title}: {figure.label}"
        rows.append("| " + " | ".join((
            _code(figure.column), f"`{figure.wire}`", TYPE_TEXT[figure.storage], meaning,
            _code(*figures.rollup_columns(figure)), chart,
            _code(figure.prometheus.name) if figure.prometheus else "",
            _alert_text(figure))) + " |")
    return "\n".join(rows)


def prometheus_table():
    """docs/prometheus.md: the families the figure table exports."""
    rows = ["| metric | type | unit | labels | meaning |", "|---|---|---|---|---|"]
    per_server = per_mount = 0
    for figure in figures.EXPORTED:
        family = figure.prometheus
        meaning = family.help.rstrip(".") + (f" ({family.note})" if family.note else "")
        rows.append(f"| `{family.name}` | {family.kind} | {_family_unit(figure.unit, family)} "
                    f"| S | {meaning} |")
        per_server += 1
    for figure in figures.FIGURES:
        for put in figure.inputs:
            if put.prometheus:
                rows.append(f"| `{put.prometheus.name}` | gauge | count | M | "
                            f"{put.prometheus.help.rstrip('.')} |")
                per_mount += 1
    rows += ["", f"That is {per_server} series per server that is up"
                 + (f", and {per_mount} per mount" if per_mount else "") + "."]
    return "\n".join(rows)


# ===== Field tables of docs/protocol.md, from the wire schemas (panel/protocol.py) ============

_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power(base, exponent):
    return f"{base}{str(exponent).translate(_SUPERSCRIPT)}"


def _bound(value):
    """A schema's bound as a reader takes it in: 2⁶³−1 rather than 9223372036854775807."""
    if float(value).is_integer() and value >= 10**6:
        value = int(value)
        bits, digits = value.bit_length(), len(str(value)) - 1
        if value == 2**bits - 1:
            return _power(2, bits) + "−1"
        if value == 2**(bits - 1):
            return _power(2, bits - 1)
        if value == 10**digits:
            return _power(10, digits)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _range(low, high):
    if low is not None and high is not None:
        return f" {_bound(low)}–{_bound(high)}"
    if low is not None:
        return f" ≥ {_bound(low)}"
    return f" ≤ {_bound(high)}" if high is not None else ""


def field_type(schema):
    """The type column: the schema's JSON type with its bounds (values, lengths, entries)."""
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return " or ".join(_one_type(schema, kind) for kind in kinds)


def _one_type(schema, kind):
    if kind in ("integer", "number"):
        return kind + _range(schema.get("minimum"), schema.get("maximum"))
    if kind == "string":
        form = f" ({schema['format']})" if "format" in schema else ""
        return f"string{form}" + _range(schema.get("minLength"), schema.get("maxLength"))
    if kind == "array":
        text = "array" + _range(schema.get("minItems"), schema.get("maxItems"))
        items = schema.get("items", {})
        return text if _entries(items) else f"{text} of {field_type(items)}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        most = schema.get("maxProperties")
        names = field_type(schema.get("propertyNames", {"type": "string"}))
        return (f"object{f' ≤ {most} entries' if most else ''} "
                f"({names} → {field_type(schema['additionalProperties'])})")
    return kind


def _entries(schema):
    """The object schema whose fields a field holds: its own, its list's entries', or None."""
    inner = schema.get("items", schema)
    return inner if "properties" in inner else None


def _walk(schema, prefix="", stop=()):
    """(path, name, field schema, required) of every field under `schema`, depth first. The
    entries of lists that share one entry schema (topCpu, topMemory) follow the last of those
    lists; a schema in `stop` (documented in tables of its own) is not entered."""
    properties = schema.get("properties", {})
    inner = {name: _entries(sub) for name, sub in properties.items()}
    for name, sub in properties.items():
        yield prefix + name, name, sub, name in schema.get("required", ())
        if inner[name] is None or any(inner[name] is done for done in stop):
            continue
        sharers = [other for other in properties if inner[other] is inner[name]]
        if name == sharers[-1]:
            for other in sharers:
                mark = "[]." if "items" in properties[other] else "."
                yield from _walk(inner[other], f"{prefix}{other}{mark}", stop)


def field_table(schemas, notes=None, stop=()):
    """A field table of `schemas` (a request body and its other forms, or a metrics section):
    one row per field schema, naming every path that reaches it (a batch's samples have the
    single form's fields; topCpu's and topMemory's entries are one schema). `notes`: text
    added to a path's meaning."""
    rows = {}
    for schema in schemas:
        for path, name, field, required in _walk(schema, stop=stop):
            if "description" not in field:
                raise ValueError(f"{path} has no description in its schema (panel/protocol.py)")
            paths, _, _ = rows.setdefault((name, id(field)), ([], field, required))
            if path not in paths:
                paths.append(path)
    lines = ["| field | type | meaning |", "|---|---|---|"]
    for paths, field, required in rows.values():
        meaning = field["description"] + "".join((notes or {}).get(path, "") for path in paths)
        meaning = meaning.replace("|", r"\|")  # a cell's own bar would end it
        lines.append(f"| {_code(*paths)} | {field_type(field)}{', required' if required else ''} "
                     f"| {meaning} |")
    return "\n".join(lines)


def _figure_notes(section):
    """{field path: note} for the fields of `section` that the figure table reads."""
    stored, feeds = {}, {}
    for figure in figures.FIGURES:
        if figure.section != section and not figure.section.startswith(section + "."):
            continue
        # A service's figure is a field of its service: "mysql.connections" in "services".
        prefix = figure.section[len(section) + 1:] + "." if figure.section != section else ""
        if figure.entries is None:
            stored[prefix + figure.keys[0]] = figure.column
            continue
        for key in dict.fromkeys(figure.keys + tuple(put.key for put in figure.inputs)):
            feeds.setdefault(f"{prefix}{figure.entries}[].{key}", []).append(figure.column)
    return {**{path: f" Stored as `{column}`." for path, column in stored.items()},
            **{path: f" Feeds {_code(*columns)}." for path, columns in feeds.items()}}


def section_table(section):
    """docs/protocol.md: the fields of one section of `metrics`, from its wire schema, each with
    the stored figure it is or feeds."""
    return field_table([protocol.METRICS["properties"][section]], _figure_notes(section))


def request_bodies():
    """{"POST /api/agent/metrics": [its body schemas]}, from the OpenAPI document's operations."""
    bodies = {}
    for path, operations in protocol.openapi_document()["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                schema = content["application/json"]["schema"]
                bodies[f"{method.upper()} {path}"] = [
                    protocol.REQUEST_SCHEMAS[ref["$ref"].rsplit("/", 1)[1]]
                    for ref in schema.get("oneOf", [schema])]
    return bodies


def body_table(operation):
    """docs/protocol.md: the fields of an operation's request body; `metrics` has a table per
    section."""
    return field_table(request_bodies()[operation], stop=(protocol.METRICS,))


def rules_table():
    """README: every rule metric an admin can set, and its built-in global rule."""
    from . import alerts  # late: the rule metrics come from the figure table and checks.CHECKS

    built_in = {metric: (threshold, minutes) for metric, threshold, minutes, _ in
                alerts.built_in_rules()}
    rows = ["| metric | watches | built-in rule |", "|---|---|---|"]
    for metric in alerts.METRICS:
        rule = ""
        if metric in built_in:
            threshold, minutes = built_in[metric]
            unit = alerts.UNITS.get(metric, "")
            unit = f" {unit.strip()}" if unit.strip() else ""
            if metric in alerts.STATES:
                rule = "when it happens" + (f" and lasts {minutes} min" if minutes else "")
            else:
                rule = f"{alerts.SIDES[metric]} {threshold:g}{unit}" + \
                    (f" for {minutes} min" if minutes else ", at once")
        rows.append(f"| `{metric}` | {alerts.HELP[metric]} | {rule} |")
    return "\n".join(rows)


# ===== The generated blocks ====================================================================

SCHEMAS, FIGURE_TABLE = "panel/protocol.py or panel/figures.py", "panel/figures.py"

# (file, marker name, generator, what to edit)
GENERATED = tuple(
    ("docs/protocol.md", operation, functools.partial(body_table, operation), SCHEMAS)
    for operation in request_bodies()
) + tuple(
    ("docs/protocol.md", f"metrics.{section}", functools.partial(section_table, section), SCHEMAS)
    for section in protocol.METRICS["properties"]
) + (
    ("docs/protocol.md", "stored figures", stored_figures_table, FIGURE_TABLE),
    ("docs/prometheus.md", "sample families", prometheus_table, FIGURE_TABLE),
    ("README.md", "alert rules", rules_table, "panel/figures.py or panel/checks.py"),
)


def _markers(name, source):
    return (f"<!-- generated: {name} (python -m panel.docs; edit {source}) -->",
            f"<!-- end generated: {name} -->")


def regenerated(text, name, body, source):
    """`text` with the block between `name`'s markers replaced by `body`."""
    begin, end = _markers(name, source)
    head, found, rest = text.partition(begin)
    if not found or end not in rest:
        raise ValueError(f"the markers of {name!r} are missing")
    return f"{head}{begin}\n{body}\n{end}{rest.partition(end)[2]}"


def stale(root=ROOT):
    """[(path, fresh text)] of the documents that differ from what the table generates."""
    out = {}
    for path, name, generate, source in GENERATED:
        current = out.get(path) or (root / path).read_text(encoding="utf-8")
        out[path] = regenerated(current, name, generate(), source)
    return [(path, text) for path, text in out.items()
            if (root / path).read_text(encoding="utf-8") != text]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m panel.docs", description=__doc__)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a generated part is stale, writing nothing")
    args = parser.parse_args(argv)
    changed = stale()
    for path, text in changed:
        if args.check:
            print(f"{path} is stale: run python -m panel.docs", file=sys.stderr)
        else:
            (ROOT / path).write_text(text, encoding="utf-8")
            print(f"rewrote {path}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
