"""The parts of docs/ generated from the figure table (panel/figures.py): the cpu and memory
field tables and the stored-figures table of docs/protocol.md, and the sample families of
docs/prometheus.md, each between a pair of marker comments. `python -m panel.docs` rewrites them; `--check` exits 1 naming a stale file
(tests/unit/test_docs.py runs the check), so the documents cannot drift from the table.
"""
import argparse
import functools
import sys
from pathlib import Path

from . import figures, protocol

ROOT = Path(__file__).resolve().parent.parent
UNIT_TEXT = {"percent": "%", "bytes": "bytes", "rate": "bytes/s", "load": "", "count": ""}
TYPE_TEXT = {"real": "number", "bigint": "integer", "integer": "integer"}


def _code(*names):
    return ", ".join(f"`{name}`" for name in names)


def _family_unit(figure_unit, family):
    if family.divisor == 100:
        return "ratio 0–1"
    return {"bytes": "bytes", "rate": "bytes/s", "count": "count"}.get(figure_unit, "—")


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
            _code(figure.alert) if figure.alert else "")) + " |")
    return "\n".join(rows)


def entry_fields_table(section):
    """docs/protocol.md, in the section's own field tables: the entry fields (of a list such as
    `mounts`) that feed a figure, from the figure table."""
    rows = ["| field | type | meaning | feeds |", "|---|---|---|---|"]
    for figure in figures.FIGURES:
        if figure.section != section:
            continue
        for put in figure.inputs:
            kind = "number 0–100" if put.kind == "percent" else "integer"
            rows.append(f"| `{figure.entries}[].{put.key}` | {kind}, optional | "
                        f"{put.description} | `{figure.column}` |")
    return "\n".join(rows)


def _schema_type(schema, required):
    kind = schema["type"]
    if kind == "number":
        text = "number 0–100" if schema.get("maximum") == 100 else "number ≥ 0"
    elif kind == "integer" and schema.get("minimum", 0) > 0:
        text = f"integer ≥ {schema['minimum']}"
    else:
        text = kind
    return text + (", required" if required else "")


def section_table(section):
    """docs/protocol.md: the fields of a metrics section that holds no lists (cpu, memory),
    from its wire schema, which takes them from the figure table."""
    schema = protocol.METRICS["properties"][section]
    by_key = {figure.keys[0]: figure for figure in figures.FIGURES
              if figure.section == section and figure.entries is None}
    rows = ["| field | type | meaning |", "|---|---|---|"]
    for key, field in schema["properties"].items():
        figure = by_key.get(key)
        if figure is not None:
            unit = UNIT_TEXT[figure.unit]
            meaning = figure.description + (f", {unit}" if unit else "")
            meaning += f" (stored as `{figure.column}`)"
        else:
            meaning = field["description"].rstrip(".")
            meaning = meaning[:1].lower() + meaning[1:]
        rows.append(f"| `{key}` | {_schema_type(field, key in schema.get('required', ()))} "
                    f"| {meaning} |")
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


# (file, marker name, generator)
GENERATED = (
    ("docs/protocol.md", "metrics.cpu", lambda: section_table("cpu")),
    ("docs/protocol.md", "metrics.memory", lambda: section_table("memory")),
    ("docs/protocol.md", "stored figures", stored_figures_table),
    ("docs/prometheus.md", "sample families", prometheus_table),
) + tuple(
    # Each section whose list entries feed a figure has its generated block of those fields.
    ("docs/protocol.md", f"metrics.{section} entry fields",
     functools.partial(entry_fields_table, section))
    for section in sorted({figure.section for figure in figures.FIGURES if figure.inputs}))


def _markers(name):
    return (f"<!-- generated: {name} (python -m panel.docs; edit panel/figures.py) -->",
            f"<!-- end generated: {name} -->")


def regenerated(text, name, body):
    """`text` with the block between `name`'s markers replaced by `body`."""
    begin, end = _markers(name)
    head, found, rest = text.partition(begin)
    if not found or end not in rest:
        raise ValueError(f"the markers of {name!r} are missing")
    return f"{head}{begin}\n{body}\n{end}{rest.partition(end)[2]}"


def stale(root=ROOT):
    """[(path, fresh text)] of the documents that differ from what the table generates."""
    out = {}
    for path, name, generate in GENERATED:
        current = out.get(path) or (root / path).read_text(encoding="utf-8")
        out[path] = regenerated(current, name, generate())
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
