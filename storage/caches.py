"""In-process caches, all bounded: content by digest (never stale), and what pulls may take
from memory (`PullCache`: exact, or stale for at most `repositories.tag_cache_seconds`)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

from storage.content.digest import Digest

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteCache:
    """LRU of immutable bytes, bounded by total size."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._items: OrderedDict[Digest, bytes] = OrderedDict()

    def get(self, digest: Digest) -> bytes | None:
        raw = self._items.get(digest)
        if raw is not None:
            self._items.move_to_end(digest)
        return raw

    def put(self, digest: Digest, raw: bytes) -> None:
        if len(raw) > self.capacity // 8 or digest in self._items:
            return
        self._items[digest] = raw
        self.used += len(raw)
        while self.used > self.capacity:
            _, old = self._items.popitem(last=False)
            self.used -= len(old)


class Lru(Generic[K, V]):
    """LRU bounded by the number of entries."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def drop(self, key: K) -> None:
        self._items.pop(key, None)


class PullCache:
    """What a pull may take from memory instead of storage, per process.

    - A revision's facts (media type, push time) by (repository, digest): for a read by tag
      always (the tag just read proves the revision exists: a delete removes tags first and GC
      spares tagged revisions).
    - With `ttl` seconds: what a tag pointed at, and that a revision existed, when storage was
      last read, trusted that long. This process's own changes leave tombstones, so a read
      that began before a change keeps nothing; other processes' changes wait for `ttl`.
    """

    def __init__(self, ttl: float, capacity: int) -> None:
        self.ttl = ttl
        self.revisions: Lru[tuple[str, Digest], tuple[str, float]] = Lru(capacity)
        # (when read or changed, what was found: a digest, True; None/False: a tombstone)
        self._tags: Lru[tuple[str, str], tuple[float, Digest | None]] = Lru(capacity)
        self._seen: Lru[tuple[str, Digest], tuple[float, bool]] = Lru(capacity)

    def tag(self, name: str, tag: str, now: float) -> Digest | None:
        entry = self._tags.get((name, tag))
        if entry is None or entry[1] is None or now - entry[0] >= self.ttl:
            return None
        return entry[1]

    def keep_tag(self, name: str, tag: str, digest: Digest, started: float) -> None:
        if self.ttl and _unchanged_since(self._tags.get((name, tag)), started):
            self._tags.put((name, tag), (started, digest))

    def seen(self, name: str, digest: Digest, now: float) -> bool:
        """The revision was read within `ttl` (by digest, its existence is the answer)."""
        entry = self._seen.get((name, digest))
        return entry is not None and entry[1] and now - entry[0] < self.ttl

    def keep_seen(self, name: str, digest: Digest, started: float) -> None:
        if self.ttl and _unchanged_since(self._seen.get((name, digest)), started):
            self._seen.put((name, digest), (started, True))

    def forget(self, name: str, tags: Iterable[str] = (), digest: Digest | None = None,
               now: float | None = None) -> None:
        """This process changed these in storage: the next pull reads them again."""
        now = time.monotonic() if now is None else now
        for tag in tags:
            self._tags.put((name, tag), (now, None))
        if digest is not None:
            self.revisions.drop((name, digest))
            self._seen.put((name, digest), (now, False))


def _unchanged_since(entry: tuple[float, object] | None, started: float) -> bool:
    """No tombstone (this process's change) newer than `started`: what a read begun then
    found may be kept."""
    return entry is None or entry[1] not in (None, False) or entry[0] < started
