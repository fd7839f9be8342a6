"""Rate limits per identity (or, for anonymous callers, per address) and API class, and a cap
on concurrent upload requests; both per replica. Within a replica, one process keeps its
token buckets in a dict; `server.workers` processes share theirs (`SharedLimits`). The login
throttle (`auth.throttle`) keeps its failure buckets beside them, in a table of their own
(`failures`), so that neither can push the other's buckets out.

API classes are ECR's operations; the data plane's requests count as the operation ECR would
run for them (a manifest GET is BatchGetImage, a blob GET GetDownloadUrlForLayer, ...). The
default rates are ECR's published per-second quotas; a class may be given its own."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import mmap
import os
import struct
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from registry.settings import LimitsSettings
from storage.errors import RateLimited

# ECR's published rates (requests per second), the defaults here.
ECR_RATES: dict[str, float] = {
    "BatchCheckLayerAvailability": 1000, "BatchGetImage": 2000, "CompleteLayerUpload": 100,
    "GetAuthorizationToken": 500, "GetDownloadUrlForLayer": 3000, "InitiateLayerUpload": 100,
    "PutImage": 10, "UploadLayerPart": 500,
}
DEFAULT_RATE = 100.0  # every other operation
_BUCKETS = 100_000
_FAILURES = 32_768

# The data plane's requests as the ECR operations they stand for: (route, method) -> class.
DATA_PLANE: dict[tuple[str, str], str] = {
    ("manifest", "GET"): "BatchGetImage", ("manifest", "HEAD"): "BatchGetImage",
    ("manifest", "PUT"): "PutImage", ("manifest", "DELETE"): "BatchDeleteImage",
    ("blob", "GET"): "GetDownloadUrlForLayer", ("blob", "HEAD"): "BatchCheckLayerAvailability",
    ("blob", "DELETE"): "BatchDeleteImage",
    ("blob_upload", "POST"): "InitiateLayerUpload", ("blob_upload", "PATCH"): "UploadLayerPart",
    ("blob_upload", "PUT"): "CompleteLayerUpload", ("blob_upload", "GET"): "DescribeImages",
    ("blob_upload", "DELETE"): "InitiateLayerUpload",
    ("tags", "GET"): "ListImages", ("catalog", "GET"): "DescribeRepositories",
    ("referrers", "GET"): "ListImageReferrers", ("token", "GET"): "GetAuthorizationToken",
    ("token", "POST"): "GetAuthorizationToken",
}


def _spend(tokens: float, last: float, now: float, rate: float,
           burst: float) -> tuple[float, float]:
    """A bucket that held `tokens` at `last`, refilled at `rate` up to `burst`: the tokens
    available now, and those left after one request (none taken when under one)."""
    available = min(burst, tokens + (now - last) * rate)
    return available, available - 1 if available >= 1 else available


class LocalBuckets:
    """One process's token buckets: a bounded table, least recently used out first (an
    evicted caller starts again with a full bucket)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, rate: float, burst: float, now: float) -> float:
        """The bucket's tokens before this request; one is taken if there was one."""
        available, left = _spend(*self._buckets.pop(key, (burst, now)), now, rate, burst)
        self._buckets[key] = (left, now)
        while len(self._buckets) > self._size:
            self._buckets.popitem(last=False)
        return available

    def peek(self, key: str, rate: float, burst: float, now: float) -> float:
        return _spend(*self._buckets.get(key, (burst, now)), now, rate, burst)[0]

    def forget(self, key: str) -> None:
        self._buckets.pop(key, None)


class LocalLimits:
    """One process's rate-limit and login-failure buckets and count of upload requests in
    flight."""

    def __init__(self) -> None:
        self.buckets = LocalBuckets(_BUCKETS)
        self.failures = LocalBuckets(_FAILURES)
        self.uploads = 0

    def take(self, key: str, rate: float, burst: float, now: float) -> float:
        return self.buckets.take(key, rate, burst, now)

    def start_upload(self, cap: int) -> bool:
        if cap > 0 and self.uploads >= cap:
            return False
        self.uploads += 1
        return True

    def end_upload(self) -> None:
        self.uploads = max(0, self.uploads - 1)


class SharedBuckets:
    """Token buckets in `sets` sets of `WAYS` slots of a memory map shared by the workers,
    read and written under the map's lock. A key's set is picked by a hash keyed with a secret
    drawn before the fork, so no caller can aim its keys at someone else's set; a full set gives
    its least recently used slot to a new key (which then starts with a full bucket, as when a
    lone process's bounded table evicts)."""

    WAYS = 8
    _SLOT = struct.Struct("=Qdd")  # key hash (0: free), tokens, when last taken (monotonic)

    def __init__(self, view: mmap.mmap, offset: int, sets: int, salt: bytes,
                 locked: Callable[[], contextlib.AbstractContextManager[None]]) -> None:
        self._view, self._offset, self._sets = view, offset, sets
        self._salt, self._locked = salt, locked

    @classmethod
    def size(cls, sets: int) -> int:
        return sets * cls.WAYS * cls._SLOT.size

    def take(self, key: str, rate: float, burst: float, now: float) -> float:
        """As `LocalBuckets.take`, for every worker."""
        with self._locked():
            hashed, index, tokens, last = self._find(key, burst, now)
            available, left = _spend(tokens, last, now, rate, burst)
            self._SLOT.pack_into(self._view, self._at(index), hashed, left, now)
        return available

    def peek(self, key: str, rate: float, burst: float, now: float) -> float:
        with self._locked():
            _, _, tokens, last = self._find(key, burst, now)
        return _spend(tokens, last, now, rate, burst)[0]

    def forget(self, key: str) -> None:
        with self._locked():
            hashed, index, _, _ = self._find(key, 0.0, 0.0)
            if self._SLOT.unpack_from(self._view, self._at(index))[0] == hashed:
                self._SLOT.pack_into(self._view, self._at(index), 0, 0.0, 0.0)

    def _at(self, index: int) -> int:
        return self._offset + index * self._SLOT.size

    def _find(self, key: str, burst: float, now: float) -> tuple[int, int, float, float]:
        """(key hash, its slot or the one it would take, tokens, when last taken); the caller
        holds the lock."""
        hashed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8,
                                                key=self._salt).digest(), "little") or 1
        first = (hashed % self._sets) * self.WAYS
        chosen, oldest = first, math.inf
        for index in range(first, first + self.WAYS):
            owner, held, when = self._SLOT.unpack_from(self._view, self._at(index))
            if owner == hashed:
                return hashed, index, held, when
            if owner == 0:
                if oldest > -math.inf:
                    chosen, oldest = index, -math.inf
            elif when < oldest:
                chosen, oldest = index, when
        return hashed, chosen, burst, now


class SharedLimits:
    """Token buckets (rate limits and login failures) and upload counts shared by the forked
    workers of one supervisor: a shared memory map made before the fork, and a lock on it that
    the kernel drops when its holder dies (an fcntl record lock), so a worker killed mid-update
    cannot stall the rest. Upload requests in flight are counted per worker slot, and the
    supervisor zeroes a dead worker's count."""

    SETS = 16384
    FAILURE_SETS = 4096
    _COUNT = struct.Struct("=q")

    def __init__(self, workers: int) -> None:
        failures_at = SharedBuckets.size(self.SETS)
        self._uploads_at = failures_at + SharedBuckets.size(self.FAILURE_SETS)
        size = self._uploads_at + workers * self._COUNT.size
        self._workers = workers
        try:
            self._fd = os.memfd_create("registry-limits")
        except (AttributeError, OSError):  # not Linux: a file unlinked at once
            self._fd, path = tempfile.mkstemp(prefix="registry-limits-")
            os.unlink(path)
        os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)  # MAP_SHARED: one copy for every worker
        salt = os.urandom(16)
        self.buckets = SharedBuckets(self._map, 0, self.SETS, salt, self._locked)
        self.failures = SharedBuckets(self._map, failures_at, self.FAILURE_SETS, salt,
                                      self._locked)
        self.worker = 0  # this process's upload slot, set in each worker after the fork

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def take(self, key: str, rate: float, burst: float, now: float) -> float:
        return self.buckets.take(key, rate, burst, now)

    def _count_at(self, worker: int) -> int:
        return self._uploads_at + worker * self._COUNT.size

    def start_upload(self, cap: int) -> bool:
        with self._locked():
            counts = [self._COUNT.unpack_from(self._map, self._count_at(w))[0]
                      for w in range(self._workers)]
            if cap > 0 and sum(counts) >= cap:
                return False
            self._COUNT.pack_into(self._map, self._count_at(self.worker), counts[self.worker] + 1)
        return True

    def end_upload(self) -> None:
        with self._locked():
            at = self._count_at(self.worker)
            count = self._COUNT.unpack_from(self._map, at)[0]
            self._COUNT.pack_into(self._map, at, max(0, count - 1))

    def forget_worker(self, worker: int) -> None:
        """A dead worker's uploads are over (the supervisor calls this)."""
        with self._locked():
            self._COUNT.pack_into(self._map, self._count_at(worker), 0)


class RateLimiter:
    def __init__(self, settings: LimitsSettings, shared: SharedLimits | None = None) -> None:
        self.settings = settings
        self.state: LocalLimits | SharedLimits = shared or LocalLimits()

    def rate(self, api_class: str) -> float:
        configured = self.settings.rates.get(api_class)
        if configured is not None:
            return float(configured)
        return ECR_RATES.get(api_class, DEFAULT_RATE) * self.settings.scale

    @staticmethod
    def class_of(route: str | None, method: str) -> str | None:
        """The API class a data-plane request counts as (None: not limited)."""
        return DATA_PLANE.get((route, method)) if route is not None else None

    def check(self, api_class: str, who: str) -> None:
        """Take one request from the caller's bucket for the class; RateLimited if empty."""
        if not self.settings.enabled:
            return
        rate = self.rate(api_class)
        if rate <= 0:
            return
        burst = max(1.0, rate * self.settings.burst_seconds)
        tokens = self.state.take(f"{api_class}\n{who}", rate, burst, time.monotonic())
        if tokens < 1:
            wait = math.ceil((1 - tokens) / rate)
            raise RateLimited(f"rate exceeded for {api_class}: {rate:g} requests per second; "
                              f"retry in {wait} s", max(1, wait))

    def start_upload(self) -> None:
        """Count an upload request in flight; RateLimited past the cap."""
        cap = self.settings.max_concurrent_uploads
        if not self.state.start_upload(cap):
            raise RateLimited(f"too many uploads in progress on this server (at most {cap}); "
                              "retry shortly", 1)

    def end_upload(self) -> None:
        self.state.end_upload()
