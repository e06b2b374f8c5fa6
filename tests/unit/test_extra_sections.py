"""A section no schema describes (a new collector's) is kept as bounded flat figures in the
sample's detail: what ingest.extra_sections keeps and what it leaves out."""
from panel import ingest, protocol


def test_an_unknown_section_keeps_its_flat_figures_only():
    metrics = {"cpu": {"usage": 5.0}, "gpu": {
        "usage": 40.5, "count": 2, "busy": True, "model": "A100", "nested": {"x": 1},
        "list": [1, 2], "nul": "a\x00b", "long": "x" * (ingest.EXTRA_TEXT_LENGTH + 1),
        "huge": protocol.MAX_INT64 + 1, "k" * (ingest.EXTRA_NAME_LENGTH + 1): 1}}
    assert ingest.extra_sections(metrics) == {"gpu": {"usage": 40.5, "count": 2, "busy": True,
                                                      "model": "A100"}}
    assert ingest.sample_row(metrics)["detail"]["extra"] == ingest.extra_sections(metrics)


def test_known_sections_and_empty_or_odd_ones_are_not_extra():
    metrics = {name: {"usage": 1.0} for name in protocol.METRICS["properties"]}
    metrics.update(empty={}, scalar=3, nothing_flat={"a": {"b": 1}}, **{"bad\x00name": {"a": 1}})
    assert ingest.extra_sections(metrics) == {}
    assert "extra" not in (ingest.sample_row({"cpu": {"usage": 1.0}})["detail"] or {})


def test_extra_sections_and_figures_are_bounded():
    many = {f"s{i}": {f"f{j}": j for j in range(ingest.EXTRA_FIGURES + 10)}
            for i in range(ingest.EXTRA_SECTIONS + 5)}
    kept = ingest.extra_sections(many)
    assert len(kept) == ingest.EXTRA_SECTIONS
    assert all(len(figures) == ingest.EXTRA_FIGURES for figures in kept.values())
