"""Failed-login throttling: per source address and per user name, in this process."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

_MAX_TRACKED = 10_000


class LoginThrottled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("too many failed logins; try again later")
        self.retry_after = retry_after


class LoginThrottle:
    """After `limit` failures within `window` seconds from one address or for one user,
    logins are refused (429) until the oldest failure ages out. Each failure also costs the
    caller a growing delay (`delay_for`)."""

    def __init__(self, limit: int, window: int, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str) -> deque[float]:
        now = self.clock()
        entries = self._failures.get(key)
        if entries is None:
            return deque()
        while entries and entries[0] <= now - self.window:
            entries.popleft()
        return entries

    def check(self, address: str, user: str | None) -> None:
        for key in self._keys(address, user):
            entries = self._recent(key)
            if len(entries) >= self.limit:
                raise LoginThrottled(max(1, int(entries[0] + self.window - self.clock()) + 1))

    def failed(self, address: str, user: str | None) -> float:
        """Record a failure; returns how long to delay the answer (seconds)."""
        worst = 0
        for key in self._keys(address, user):
            entries = self._recent(key)
            entries.append(self.clock())
            self._failures[key] = entries
            self._failures.move_to_end(key)
            worst = max(worst, len(entries))
        while len(self._failures) > _MAX_TRACKED:
            self._failures.popitem(last=False)
        return min(0.1 * 2.0 ** (worst - 1), 2.0)

    def succeeded(self, user: str | None) -> None:
        if user:
            self._failures.pop(f"user:{user}", None)

    @staticmethod
    def _keys(address: str, user: str | None) -> list[str]:
        return [f"addr:{address}"] + ([f"user:{user}"] if user else [])
