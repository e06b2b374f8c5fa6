"""The generated parts of docs/ (panel/docs.py) are what the wire schemas and the figure table
make of them now, and docs/protocol.md describes every field the panel accepts."""
import re

import pytest

from panel import docs, figures, protocol


def _copy_documents(tmp_path):
    for path, *_ in docs.GENERATED:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text((docs.ROOT / path).read_text(encoding="utf-8"),
                                     encoding="utf-8")
    assert docs.stale(tmp_path) == []


def test_committed_documents_match_what_the_schemas_and_the_figure_table_generate():
    assert docs.stale() == [], "run python -m panel.docs and commit the result"


def test_a_changed_figure_makes_the_document_stale(tmp_path, monkeypatch):
    _copy_documents(tmp_path)
    first = figures.FIGURES[0]
    renamed = type(first)(**{**first.__dict__, "description": "something else entirely"})
    monkeypatch.setattr(figures, "FIGURES", (renamed,) + figures.FIGURES[1:])
    assert [path for path, _ in docs.stale(tmp_path)] == ["docs/protocol.md"]


@pytest.mark.parametrize("schema,key,value", [
    (protocol.INTERFACE["properties"]["bytesSent"], "description", "something else entirely"),
    (protocol.SERVICES["properties"]["redis"]["properties"]["usedMemory"], "description",
     "something else entirely"),
    (protocol.PROCESS["properties"]["name"], "maxLength", 128),
    (protocol.REGISTER["properties"]["hostname"], "description", "something else entirely"),
    (protocol.BATCH_BODY["properties"]["samples"], "maxItems", 50),
])
def test_a_changed_schema_makes_the_document_stale_and_the_check_fail(schema, key, value,
                                                                     monkeypatch, capsys):
    before = (docs.ROOT / "docs/protocol.md").read_text(encoding="utf-8")
    assert docs.main(["--check"]) == 0
    monkeypatch.setitem(schema, key, value)
    assert [path for path, _ in docs.stale()] == ["docs/protocol.md"]
    assert docs.main(["--check"]) == 1
    assert "docs/protocol.md is stale" in capsys.readouterr().err
    assert (docs.ROOT / "docs/protocol.md").read_text(encoding="utf-8") == before


def test_a_field_without_a_description_is_named_rather_than_documented_blank(monkeypatch):
    monkeypatch.delitem(protocol.DISK_IO["properties"]["readOpsPerSec"], "description")
    with pytest.raises(ValueError, match=r"io\[\]\.readOpsPerSec has no description"):
        docs.section_table("disk")


def test_entries_shared_by_two_lists_are_one_row_naming_both():
    table = docs.section_table("processes")
    assert "| `topCpu[].pid`, `topMemory[].pid` | integer 0–2³²−1, required |" in table
    assert table.count("[].pid") == 2


def test_bounds_read_as_powers():
    assert [docs._bound(v) for v in (2**63 - 1, 2**31 - 1, 2**32, 1e15, 100, 0.5, 946684800)] \
        == ["2⁶³−1", "2³¹−1", "2³²", "10¹⁵", "100", "0.5", "946684800"]


def test_every_figure_and_family_has_its_row():
    protocol_text = docs.stored_figures_table()
    for figure in figures.FIGURES:
        assert f"| `{figure.column}` | `{figure.wire}` |" in protocol_text
    prometheus_text = docs.prometheus_table()
    for figure in figures.EXPORTED:
        assert f"| `{figure.prometheus.name}` |" in prometheus_text


# ===== Every field the panel accepts is in the document ========================================
# Derived from the schemas with a walk of its own, not docs.py's: a generator that skipped a
# field would otherwise agree with itself.

def _doc_tables(text):
    """{label: [row cells]} for every table of docs/protocol.md, under the label it follows:
    its heading (`## POST /api/agent/metrics`), or a line that opens with a section's name
    (`metrics.cpu`)."""
    tables, label = {}, None
    for line in text.splitlines():
        heading = re.match(r"^#+ (.+)$", line) or re.match(r"^`(metrics\.\w+)`", line)
        if heading:
            label = heading.group(1).strip()
        elif line.startswith("|") and not re.match(r"^\|[-| ]+\|$", line) and label:
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            if cells[0] != "field":
                tables.setdefault(label, []).append(cells)
    return tables


def _accepted(schema, path=""):
    """Every field path `schema` accepts, as the tables write it (`mounts[].total`)."""
    for name, sub in schema.get("properties", {}).items():
        yield path + name
        yield from _accepted(sub.get("items", sub), path + name + ("[]." if "items" in sub else "."))


def _request_fields():
    """(table label, path) of every field of every request body the OpenAPI document's operations
    take: a body's own fields in its operation's table, a metrics section's fields in the
    section's (`metrics.disk`, path `mounts[].total`), the section itself with path None."""
    for path, operations in protocol.openapi_document()["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get(
                "application/json", {}).get("schema")
            for ref in (body or {}).get("oneOf", [body] if body else []):
                schema = protocol.REQUEST_SCHEMAS[ref["$ref"].rsplit("/", 1)[1]]
                for field in _accepted(schema):
                    head, found, rest = field.partition("metrics.")
                    if found and head in ("", "samples[]."):
                        section, _, inner = rest.partition(".")
                        yield f"metrics.{section}", inner or None
                    else:
                        yield f"{method.upper()} {path}", field


def _undescribed(tables, fields):
    """The (label, path) of `fields` that no row of their own table describes: the path named in
    the row's field cell, with a meaning."""
    missing = []
    for label, path in fields:
        rows = tables.get(label, [])
        if path is None:
            described = bool(rows)
        else:
            described = any(row[-1] and path in re.findall(r"`([^`]+)`", row[0]) for row in rows)
        if not described and (label, path) not in missing:
            missing.append((label, path))
    return missing


def test_protocol_doc_describes_every_field_the_panel_accepts_in_its_own_table():
    """Each field has a row, with a meaning, in the table for its part of the request, under
    its whole path: `topMemory[].pid`, not a `pid` that could be any list's."""
    fields = list(_request_fields())
    assert ("metrics.services", "postgresql.databases[].size") in fields
    assert ("POST /api/agent/metrics", "samples[].timestamp") in fields
    tables = _doc_tables((docs.ROOT / "docs" / "protocol.md").read_text(encoding="utf-8"))
    assert _undescribed(tables, fields) == []


def test_a_field_only_mentioned_elsewhere_is_not_described():
    """What the check above refuses: cpu's `count` named in prose and in the memory table, an
    entry field under its bare name, a row without a meaning, a section without a table."""
    text = ("`metrics.cpu`\n\n| field | type | meaning |\n|---|---|---|\n"
            "| `usage` | number | busy share |\n\nThe `count` is logical CPUs.\n\n"
            "`metrics.memory`\n\n| field | type | meaning |\n|---|---|---|\n"
            "| `count` | integer | something else |\n\n`metrics.processes`\n\n"
            "| field | type | meaning |\n|---|---|---|\n| `pid` | integer | process id |\n"
            "| `topCpu[].name` | string |  |\n")
    fields = [("metrics.cpu", "usage"), ("metrics.cpu", "count"),
              ("metrics.processes", "topCpu[].pid"), ("metrics.processes", "topCpu[].name"),
              ("metrics.disk", None)]
    assert _undescribed(_doc_tables(text), fields) == fields[1:]
