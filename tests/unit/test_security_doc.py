"""docs/security.md's "What we tested" names the test behind each claim: each must exist, so a
renamed or deleted test cannot leave the document claiming what nothing checks any more."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"`((?:integration|unit)/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`")


def references_in_what_we_tested():
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    section = text[text.index("## What we tested"):]
    section = section[:section.index("\n## ", 1)]
    current = None
    for match in REFERENCE.finditer(section):
        path, name, same_file_name = match.groups()
        if path:
            current = path
        yield current, name or same_file_name


def test_every_test_named_in_what_we_tested_exists():
    references = list(references_in_what_we_tested())
    assert len(references) >= 30
    for path, name in references:
        source = ROOT / "tests" / path
        assert source.is_file(), path
        if name:
            assert re.search(rf"^def {name}\(", source.read_text(encoding="utf-8"), re.M), \
                f"{path}::{name}"
