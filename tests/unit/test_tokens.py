"""API tokens' pure parts (panel/tokens.py): the format, the public id, and what a token opens
given its own scope and its user's role as it is now."""
import types

from panel import access, tokens


def row(role, customer_id, token_customer, may_write):
    admin = types.SimpleNamespace(role=role, customer_id=customer_id)
    return types.SimpleNamespace(admin=admin, customer_id=token_customer, may_write=may_write)


def test_a_token_carries_its_public_id_and_256_random_bits():
    token, token_id = tokens.new_token()
    assert tokens.token_id_of(token) == token_id and len(token_id) == 12
    assert len(token.split("_", 2)[2]) == 43  # token_urlsafe(32): 256 bits
    assert tokens.new_token()[0] != token
    assert len(tokens.token_hash(token)) == 64 and token not in tokens.token_hash(token)
    for presented in ("", "mpt_", token + "x", token.replace("mpt_", "agent_"), None):
        assert tokens.token_id_of(presented) is None


def test_a_token_opens_its_scope_and_never_more_than_its_user_may_do_now():
    assert tokens.access_of(row("admin", None, None, True)) == access.Access(None, True)
    assert tokens.access_of(row("admin", None, 7, False)) == access.Access(7, False)
    # The user was made read-only since: the write token reads only.
    assert tokens.access_of(row("viewer", None, None, True)) == access.Access(None, False)
    assert tokens.access_of(row("customer-admin", 7, 7, True)) == access.Access(7, True)
    assert tokens.access_of(row("customer-viewer", 7, 7, True)) == access.Access(7, False)
    # Moved to another customer: nothing (and never staff-wide).
    assert tokens.access_of(row("customer-admin", 8, 7, True)) == access.NOBODY
    assert tokens.access_of(row("customer-admin", 8, None, True)) == access.NOBODY
    # A user row breaking the role rule opens nothing either.
    assert tokens.access_of(row("customer-admin", None, None, True)).customer_id == 0


def test_every_token_need_is_a_session_need_of_the_same_rule():
    for name, need in access.TOKEN_NEEDS.items():
        assert need in access.NEEDS.values(), name
