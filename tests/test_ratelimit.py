"""Token buckets: a rate on average, a burst at once, per user."""
from chat.ratelimit import RateLimiter, TokenBucket


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_burst_is_allowed_then_the_rate():
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=20, clock=clock)
    assert [bucket.take() for _ in range(21)] == [True] * 20 + [False]
    clock.now += 0.1
    assert bucket.take() is True
    assert bucket.take() is False


def test_tokens_never_exceed_the_burst():
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=20, clock=clock)
    clock.now += 3600
    assert sum(bucket.take() for _ in range(30)) == 20


def test_each_user_has_a_bucket():
    limiter = RateLimiter(rate=1, burst=1, clock=Clock())
    assert limiter.allow(1) and not limiter.allow(1)
    assert limiter.allow(2)


def test_idle_buckets_are_forgotten_when_there_are_many():
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=1, clock=clock)
    limiter.PRUNE_ABOVE = 3
    for user in range(5):
        limiter.allow(user)
    clock.now += 10
    limiter.allow("new")
    assert list(limiter.buckets) == ["new"]
