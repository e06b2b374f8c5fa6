"""Every query the panel runs is a named function in models.py (its docstring says so): no other
module builds one on a model or hands SQL to the driver. What is left, and why, is listed here."""
import re
from pathlib import Path

PANEL = Path(__file__).resolve().parents[2] / "panel"
BUILT_QUERY = re.compile(r"models\.[A-Z]\w*\.(?:select|update|delete|insert|insert_many|replace)\(")
RAW_SQL = re.compile(r"\.execute_sql\(")

# Modules that hand SQL to the driver themselves, and why.
OWN_SQL = {
    "migrations.py",  # applies the schema and the migration files, under its own lock
    "writer.py",      # the connection's own settings (PRAGMA busy_timeout) for its write lock
}


def test_no_module_but_models_builds_a_query():
    building = {path.name: BUILT_QUERY.findall(path.read_text())
                for path in PANEL.glob("*.py") if path.name != "models.py"}
    assert {name: found for name, found in building.items() if found} == {}


def test_no_module_but_models_and_the_schema_keepers_runs_sql():
    running = {path.name: len(RAW_SQL.findall(path.read_text()))
               for path in PANEL.glob("*.py") if path.name not in OWN_SQL | {"models.py"}}
    assert {name: found for name, found in running.items() if found} == {}


def test_the_modules_excused_exist():
    """A renamed or emptied module leaves the list: it must not excuse a module that is gone."""
    assert {name for name in OWN_SQL if RAW_SQL.search((PANEL / name).read_text())} == OWN_SQL
