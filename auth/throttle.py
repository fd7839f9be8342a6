"""Failed-login throttling, per (user, source address) and, more loosely, per source address.

Keying on the user alone would let anyone lock a user out by guessing wrong, and keying on the
address alone would let one user behind a NAT or load balancer lock out everyone behind it. So a
login is refused only when its own (user, address) pair, or its address as a whole, has been
failing: a correct password from an address that has not been failing always gets through.

Failures drain token buckets (`limit` failures at once, then one more every `window / limit`
seconds), kept in a `Buckets` table: one process's dict, or the memory the workers of one
supervisor share (`registry.limits`), so the throttle holds for all of them together. Bucket
keys are digests: a user name from a Basic header is any string, and it should not sit in
shared memory as typed."""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Callable
from typing import Protocol

_IPV6_NETWORK = 64  # one IPv6 subscriber holds at least a /64: its addresses are one source


class Buckets(Protocol):
    """Token buckets by key (`registry.limits` provides them, local or shared)."""

    def take(self, key: str, rate: float, burst: float, now: float) -> float:
        """The tokens before this call; one is taken if there was one."""
        ...

    def peek(self, key: str, rate: float, burst: float, now: float) -> float:
        """The tokens now, taking none."""
        ...

    def forget(self, key: str) -> None:
        """The bucket is full again."""
        ...


class LoginThrottled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("too many failed logins; try again later")
        self.retry_after = retry_after


def source(address: str) -> str:
    """The source a failure counts against: the IPv4 address, or the IPv6 /64 (IPv4-mapped
    IPv6 addresses are their IPv4 address). Anything else (no address) counts as itself."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, _IPV6_NETWORK), strict=False))
    return str(ip)


class LoginThrottle:
    """`limit` failures per (user, source) and `address_limit` per source, each refilled over
    `window` seconds. Each failure also costs the caller a growing delay (`failed`)."""

    def __init__(self, limit: int, window: int, address_limit: int, buckets: Buckets,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.address_limit = address_limit
        self.buckets = buckets
        self.clock = clock

    def check(self, address: str, user: str | None) -> None:
        """LoginThrottled if this pair or this source has used up its failures."""
        now = self.clock()
        for key, burst in self._keys(address, user):
            tokens = self.buckets.peek(key, burst / self.window, burst, now)
            if tokens < 1:
                raise LoginThrottled(max(1, math.ceil((1 - tokens) * self.window / burst)))

    def failed(self, address: str, user: str | None) -> float:
        """Record a failure; returns how long to delay the answer (seconds): doubling with each
        recent failure of the pair, at most 2 s."""
        now = self.clock()
        used = 1.0
        for key, burst in self._keys(address, user):  # the pair last, when there is one
            used = burst - self.buckets.take(key, burst / self.window, burst, now) + 1
        return min(0.1 * math.pow(2.0, used - 1), 2.0)

    def succeeded(self, address: str, user: str) -> None:
        """The pair's failures are forgiven; the source's stand (someone else's, perhaps)."""
        self.buckets.forget(self._pair(address, user))

    def _keys(self, address: str, user: str | None) -> list[tuple[str, float]]:
        keys = [(self._source(address), float(self.address_limit))]
        if user is not None:
            keys.append((self._pair(address, user), float(self.limit)))
        return keys

    @staticmethod
    def _source(address: str) -> str:
        return "login-source:" + _digest(source(address))

    @staticmethod
    def _pair(address: str, user: str) -> str:
        return "login-pair:" + _digest(f"{source(address)}\n{user}")


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(errors="surrogatepass"), digest_size=16).hexdigest()
