"""API keys: format, public id, bcrypt storage and the verified-key cache."""
import types

from panel import auth


def agent_with(key, rounds=4, agent_id=1):
    return types.SimpleNamespace(id=agent_id, api_key_hash=auth.hash_secret(key, rounds))


def test_new_key_has_the_seed_prefix_and_a_parseable_public_id():
    key, key_id = auth.new_api_key()
    assert key.startswith("agent_")
    assert auth.key_id_of(key) == key_id
    assert len(key.encode()) <= 72  # bcrypt reads at most 72 bytes


def test_keys_are_unique():
    assert len({auth.new_api_key()[0] for _ in range(200)}) == 200


def test_malformed_keys_have_no_id():
    for presented in ("", "agent_", "agent_xyz_abc", "Bearer agent_0011", "agent_" + "0" * 12):
        assert auth.key_id_of(presented) is None


def test_stored_hash_is_bcrypt_at_the_requested_cost_and_never_the_key():
    key, _ = auth.new_api_key()
    hashed = auth.hash_secret(key, 12)
    assert hashed.startswith("$2b$12$")
    assert key not in hashed
    assert auth.check_secret(key, hashed)
    assert not auth.check_secret(key + "x", hashed)


def test_second_check_of_the_same_key_skips_bcrypt():
    key, _ = auth.new_api_key()
    agent = agent_with(key)
    cache = auth.VerifiedKeyCache()
    assert cache.verify(key, agent)
    assert cache.verify(key, agent)
    assert cache.verify(key, agent)
    assert cache.bcrypt_checks == 1


def test_a_wrong_key_is_never_cached():
    key, _ = auth.new_api_key()
    agent = agent_with(key)
    cache = auth.VerifiedKeyCache()
    assert not cache.verify(key[:-1] + "A" if key[-1] != "A" else key[:-1] + "B", agent)
    assert not cache.verify(key[:-1] + "A" if key[-1] != "A" else key[:-1] + "B", agent)
    assert cache.bcrypt_checks == 2


def test_replacing_the_stored_hash_invalidates_the_cached_key():
    old, _ = auth.new_api_key()
    agent = agent_with(old)
    cache = auth.VerifiedKeyCache()
    assert cache.verify(old, agent)
    new, _ = auth.new_api_key()
    agent.api_key_hash = auth.hash_secret(new, 4)  # what a key replacement does to the row
    assert not cache.verify(old, agent)
    assert cache.verify(new, agent)


def test_cache_does_not_keep_the_key_itself():
    key, _ = auth.new_api_key()
    cache = auth.VerifiedKeyCache()
    cache.verify(key, agent_with(key))
    stored = repr(cache._entries)
    assert key not in stored and key.split("_", 2)[2] not in stored


def test_cache_is_bounded():
    cache = auth.VerifiedKeyCache(max_entries=3)
    for agent_id in range(5):
        key, _ = auth.new_api_key()
        cache.verify(key, agent_with(key, agent_id=agent_id))
    assert len(cache._entries) == 3


def test_corrupt_stored_hash_reads_as_no():
    assert not auth.check_secret("agent_x", "not-a-bcrypt-hash")
