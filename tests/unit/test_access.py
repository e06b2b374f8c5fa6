"""access.py, the one place that decides what a user sees and may change, and the database's
copy of its rule (a staff role has no customer, a customer role exactly one)."""
import types

import pytest

from panel import access, migrations, models
from tests.conftest import ROOT


def user(role, customer_id=None):
    return types.SimpleNamespace(role=role, customer_id=customer_id)


@pytest.mark.parametrize("role, customer_id, expected", [
    ("admin", None, access.Access(None, True)),
    ("viewer", None, access.Access(None, False)),
    ("customer-admin", 7, access.Access(7, True)),
    ("customer-viewer", 7, access.Access(7, False)),
])
def test_each_role_sees_and_changes_what_its_row_says(role, customer_id, expected):
    assert access.Access.of(user(role, customer_id)) == expected
    assert expected.staff == (customer_id is None)


@pytest.mark.parametrize("broken", [user("admin", 7), user("customer-admin"), user("root")])
def test_a_row_that_breaks_the_rule_sees_nothing_rather_than_everything(broken):
    seen = access.Access.of(broken)
    assert seen == access.NOBODY and not seen.staff and not seen.may_change


def test_a_filter_narrows_staff_and_never_moves_a_customer_user():
    assert access.EVERYTHING.narrowed(3) == access.Access(3, True)
    assert access.EVERYTHING.narrowed(None) == access.EVERYTHING
    customer = access.Access(7, True)
    assert customer.narrowed(3) == customer and customer.narrowed(None) == customer


@pytest.mark.parametrize("need, allowed", [
    ("viewer", {"admin", "viewer", "customer-admin", "customer-viewer"}),
    ("admin", {"admin", "customer-admin"}),
    ("staff", {"admin", "viewer"}),
    ("staff-admin", {"admin"}),
])
def test_each_route_need_admits_these_roles(need, allowed):
    admitted = {name for name, role in access.ROLES.items()
                if access.NEEDS[need](access.Access.of(user(name, None if role.staff else 1)))
                is None}
    assert admitted == allowed


def test_the_schema_and_the_migration_keep_the_roles_rule_as_models_spells_it():
    """The CHECK is derived from access.ROLES in models.py; the SQL files spell it out, so a new
    role must change them too."""
    sql = " ".join((ROOT / "sql" / "schema.sql").read_text().split())
    assert models.ADMIN_ROLE_CHECK in sql
    for dialect in ("postgresql", "sqlite"):
        path = next(p for n, _, p in migrations.available(dialect) if n == 10)
        assert models.ADMIN_ROLE_CHECK[len("CHECK "):] in " ".join(path.read_text().split())
