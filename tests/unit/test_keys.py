"""API keys: format, public id, bcrypt storage, the verified-key cache, the failure limiter,
and the sealing of a rotated key."""
from panel import keys


def test_new_key_has_the_seed_prefix_and_a_parseable_public_id():
    key, key_id = keys.new_api_key()
    assert key.startswith("agent_")
    assert keys.key_id_of(key) == key_id
    assert len(key.encode()) <= 72  # bcrypt reads at most 72 bytes


def test_keys_are_unique():
    assert len({keys.new_api_key()[0] for _ in range(200)}) == 200


def test_malformed_keys_have_no_id():
    for presented in ("", "agent_", "agent_xyz_abc", "Bearer agent_0011", "agent_" + "0" * 12):
        assert keys.key_id_of(presented) is None


def test_stored_hash_is_bcrypt_at_the_requested_cost_and_never_the_key():
    key, _ = keys.new_api_key()
    hashed = keys.hash_secret(key, 12)
    assert hashed.startswith("$2b$12$")
    assert key not in hashed
    assert keys.check_secret(key, hashed)
    assert not keys.check_secret(key + "x", hashed)


def test_second_check_of_the_same_key_skips_bcrypt():
    key, _ = keys.new_api_key()
    hashed = keys.hash_secret(key, 4)
    cache = keys.VerifiedKeyCache()
    assert all(cache.verify(key, 1, hashed) for _ in range(3))
    assert cache.bcrypt_checks == 1


def test_a_wrong_key_is_never_cached():
    key, _ = keys.new_api_key()
    hashed = keys.hash_secret(key, 4)
    cache = keys.VerifiedKeyCache()
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert not cache.verify(wrong, 1, hashed)
    assert not cache.verify(wrong, 1, hashed)
    assert cache.bcrypt_checks == 2


def test_a_new_stored_hash_invalidates_the_cached_key():
    old, _ = keys.new_api_key()
    cache = keys.VerifiedKeyCache()
    assert cache.verify(old, 1, keys.hash_secret(old, 4))
    new, _ = keys.new_api_key()
    new_hash = keys.hash_secret(new, 4)  # what rotation does to the row
    assert not cache.known(old, 1, new_hash)
    assert not cache.verify(old, 1, new_hash)
    assert not cache.known(old, 1, keys.REVOKED_HASH)


def test_a_cached_key_does_not_open_another_agent():
    key, _ = keys.new_api_key()
    hashed = keys.hash_secret(key, 4)
    cache = keys.VerifiedKeyCache()
    cache.verify(key, 1, hashed)
    assert not cache.known(key, 2, hashed)


def test_cache_does_not_keep_the_key_itself():
    key, _ = keys.new_api_key()
    cache = keys.VerifiedKeyCache()
    cache.verify(key, 1, keys.hash_secret(key, 4))
    stored = repr(cache._entries)
    assert key not in stored and key.split("_", 2)[2] not in stored


def test_cache_is_bounded():
    cache = keys.VerifiedKeyCache(max_entries=3)
    for agent_id in range(5):
        key, _ = keys.new_api_key()
        cache.verify(key, agent_id, keys.hash_secret(key, 4))
    assert len(cache._entries) == 3


def test_corrupt_or_revoked_stored_hash_reads_as_no():
    assert not keys.check_secret("agent_x", "not-a-bcrypt-hash")
    assert not keys.check_secret("agent_x", keys.REVOKED_HASH)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_limiter_blocks_after_the_limit_within_a_minute_then_lets_go():
    clock = Clock()
    limiter = keys.FailureLimiter(limit=10, window=60, clock=clock)
    for _ in range(9):
        limiter.fail("10.0.0.1", "abc")
        clock.now += 1
    assert limiter.retry_after("10.0.0.1") == 0
    limiter.fail("10.0.0.1", "abc")
    wait = limiter.retry_after("10.0.0.1")
    assert 50 < wait <= 60
    assert limiter.retry_after("10.0.0.2") == 0  # another address is not affected
    assert limiter.retry_after("10.0.0.2", "abc") > 0  # the same key id is
    clock.now += 61
    assert limiter.retry_after("10.0.0.1", "abc") == 0


def test_sealed_key_opens_only_with_the_same_secret():
    box = keys.seal(b"panel secret", "agent_0123456789ab_" + "k" * 40)
    assert "kkkk" not in box
    assert keys.unseal(b"panel secret", box) == "agent_0123456789ab_" + "k" * 40
    assert keys.unseal(b"another secret", box) is None
    tampered = box[:-6] + ("A" if box[-6] != "A" else "B") + box[-5:]
    assert keys.unseal(b"panel secret", tampered) is None
    assert keys.unseal(b"panel secret", "not base64!") is None
