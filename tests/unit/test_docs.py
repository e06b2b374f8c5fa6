"""The generated parts of docs/ (panel/docs.py) are what the figure table makes of them now."""
from panel import docs, figures


def test_committed_documents_match_what_the_figure_table_generates():
    assert docs.stale() == [], "run python -m panel.docs and commit the result"


def test_a_changed_figure_makes_the_document_stale(tmp_path, monkeypatch):
    for path, _, _ in docs.GENERATED:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text((docs.ROOT / path).read_text(encoding="utf-8"),
                                     encoding="utf-8")
    assert docs.stale(tmp_path) == []
    first = figures.FIGURES[0]
    renamed = type(first)(**{**first.__dict__, "description": "something else entirely"})
    monkeypatch.setattr(figures, "FIGURES", (renamed,) + figures.FIGURES[1:])
    assert [path for path, _ in docs.stale(tmp_path)] == ["docs/protocol.md"]


def test_every_figure_and_family_has_its_row():
    protocol_text = docs.stored_figures_table()
    for figure in figures.FIGURES:
        assert f"| `{figure.column}` | `{figure.wire}` |" in protocol_text
    prometheus_text = docs.prometheus_table()
    for figure in figures.EXPORTED:
        assert f"| `{figure.prometheus.name}` |" in prometheus_text
