"""The login throttle's rules, over both of its bucket tables: one process's and the memory the
workers of a supervisor share (the same tables the rate limits use, registry/limits.py)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from auth.throttle import Buckets, LoginThrottle, LoginThrottled, source
from registry.limits import LocalLimits, SharedLimits
from tests.auth import Clock

TABLES: dict[str, Callable[[], Buckets]] = {
    "local": lambda: LocalLimits().failures,
    "shared": lambda: SharedLimits(2).failures,
}


def throttle(table: str, clock: Clock) -> LoginThrottle:
    return LoginThrottle(limit=3, window=60, address_limit=5, buckets=TABLES[table](),
                         clock=clock)


def refused(t: LoginThrottle, address: str, user: str | None) -> int | None:
    """The Retry-After of a refusal, or None when the login may be tried."""
    try:
        t.check(address, user)
    except LoginThrottled as exc:
        return exc.retry_after
    return None


@pytest.mark.parametrize("table", TABLES)
def test_a_pair_is_refused_and_recovers_one_try_at_a_time(table: str) -> None:
    clock = Clock()
    t = throttle(table, clock)
    delays = [t.failed("192.0.2.1", "dave") for _ in range(3)]
    assert delays == pytest.approx([0.1, 0.2, 0.4])
    assert refused(t, "192.0.2.1", "dave") == 20  # one more every 60 / 3 s
    assert refused(t, "192.0.2.2", "dave") is None  # dave elsewhere
    assert refused(t, "192.0.2.1", "eve") is None  # someone else from there
    clock.now += 20
    assert refused(t, "192.0.2.1", "dave") is None
    t.failed("192.0.2.1", "dave")
    assert refused(t, "192.0.2.1", "dave") == 20
    t.succeeded("192.0.2.1", "dave")  # the right password: the pair's failures are forgiven
    assert refused(t, "192.0.2.1", "dave") is None


@pytest.mark.parametrize("table", TABLES)
def test_an_address_has_a_looser_allowance_for_all_users(table: str) -> None:
    clock = Clock()
    t = throttle(table, clock)
    for n in range(5):
        assert refused(t, "192.0.2.9", f"user{n}") is None
        t.failed("192.0.2.9", f"user{n}")
    assert refused(t, "192.0.2.9", "someone-new") == 12  # 60 / 5
    assert refused(t, "192.0.2.9", None) == 12  # authorization-token logins too
    assert refused(t, "192.0.2.10", "user0") is None
    t.succeeded("192.0.2.9", "user0")  # a success does not forgive the address
    assert refused(t, "192.0.2.9", "user0") == 12


@pytest.mark.parametrize("table", TABLES)
def test_ipv6_addresses_count_per_64(table: str) -> None:
    t = throttle(table, Clock())
    for n in range(3):
        t.failed(f"2001:db8:1:2::{n + 1}", "dave")
    assert refused(t, "2001:db8:1:2:ffff::1", "dave") is not None
    assert refused(t, "2001:db8:1:3::1", "dave") is None


def test_sources() -> None:
    assert source("192.0.2.1") == "192.0.2.1"
    assert source("::ffff:192.0.2.1") == "192.0.2.1"
    assert source("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert source("") == ""


def test_shared_failures_are_seen_by_every_worker() -> None:
    """A failure recorded in a forked worker counts in the other processes."""
    shared = SharedLimits(2)
    clock = Clock()
    t = LoginThrottle(3, 60, 5, shared.failures, clock=clock)
    pid = os.fork()
    if pid == 0:  # the "other worker"
        try:
            for _ in range(3):
                t.failed("192.0.2.1", "dave")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert refused(t, "192.0.2.1", "dave") == 20
    # The rate limits' buckets are a table of their own: no login failure is in them.
    assert shared.buckets.peek("login-pair:x", 1.0, 3.0, clock()) == 3.0
