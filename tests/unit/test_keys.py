"""API keys: format, public id, bcrypt hash and fingerprint, the failure limiter, and the
sealing of a rotated key."""
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


def test_stored_key_columns_recognise_the_key_without_keeping_it():
    key, key_id = keys.new_api_key()
    columns = keys.key_columns(key, key_id, 4)
    assert columns["api_key_id"] == key_id
    assert keys.check_secret(key, columns["api_key_hash"])
    assert columns["api_key_fingerprint"] == keys.fingerprint(key)
    assert keys.fingerprint(key) != keys.fingerprint(key[:-1] + ("A" if key[-1] != "A" else "B"))
    stored = repr(columns)
    assert key not in stored and key.split("_", 2)[2] not in stored


def test_corrupt_or_revoked_stored_hash_reads_as_no():
    assert not keys.check_secret("agent_x", "not-a-bcrypt-hash")
    assert not keys.check_secret("agent_x", keys.REVOKED_HASH)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_limiter_refuses_past_the_limit_within_a_minute_then_lets_go():
    clock = Clock()
    limiter = keys.FailureLimiter(limit=10, window=60, clock=clock)
    for _ in range(10):
        assert limiter.take(("address", "10.0.0.1")) == 0
        clock.now += 1
    wait = limiter.take(("address", "10.0.0.1"))
    assert wait == 50  # until the first of the ten leaves the minute
    assert limiter.take(("address", "10.0.0.2")) == 0  # another address is not affected
    assert limiter.take(("key id", "10.0.0.1")) == 0  # nor a key id, whatever it looks like
    clock.now += 61
    assert limiter.take(("address", "10.0.0.1")) == 0


def test_a_refused_attempt_does_not_lengthen_the_wait():
    clock = Clock()
    limiter = keys.FailureLimiter(limit=3, window=60, clock=clock)
    for _ in range(3):
        limiter.take("a")
    for _ in range(100):
        limiter.take("a")
    clock.now += 60.5
    assert limiter.take("a") == 0


def test_an_attempt_given_back_frees_its_place():
    limiter = keys.FailureLimiter(limit=2, window=60, clock=Clock())
    assert limiter.take("a") == 0 and limiter.take("a") == 0
    assert limiter.take("a") > 0
    limiter.give_back("a")
    assert limiter.take("a") == 0


def test_concurrent_takes_never_pass_more_than_the_limit():
    import threading

    limiter = keys.FailureLimiter(limit=5, window=60)
    passed, barrier = [], threading.Barrier(20)

    def attempt():
        barrier.wait(timeout=10)
        if limiter.take("victim") == 0:
            passed.append(1)

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(passed) == 5


def test_sealed_key_opens_only_with_the_same_secret():
    box = keys.seal(b"panel secret", "agent_0123456789ab_" + "k" * 40)
    assert "kkkk" not in box
    assert keys.unseal(b"panel secret", box) == "agent_0123456789ab_" + "k" * 40
    assert keys.unseal(b"another secret", box) is None
    tampered = box[:-6] + ("A" if box[-6] != "A" else "B") + box[-5:]
    assert keys.unseal(b"panel secret", tampered) is None
    assert keys.unseal(b"panel secret", "not base64!") is None
