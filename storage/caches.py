"""In-process caches, all bounded: content by digest (never stale), and what pulls may take
from memory (`PullCache`: exact, or stale for at most `repositories.tag_cache_seconds`)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

from storage.content.digest import Digest

PULLS_REMEMBERED = 65536  # entries of each of a PullCache's maps
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

    def drop_where(self, doomed: Callable[[K], bool]) -> None:
        for key in [k for k in self._items if doomed(k)]:
            del self._items[key]


class PullCache:
    """What a pull may take from memory instead of storage, per process.

    - A revision's facts (media type, push time) by (repository, digest): for a read by tag
      always (the tag just read proves the revision exists: a delete removes tags first and GC
      spares tagged revisions).
    - With `ttl` seconds: what a tag pointed at, that a revision existed, and that a blob was
      linked to a repository (with its size), when storage was last read, trusted that long.
      This process's own changes leave tombstones, so a read that began before a change keeps
      nothing; other processes' changes wait for `ttl`.
    """

    def __init__(self, ttl: float, capacity: int) -> None:
        self.ttl = ttl
        self.revisions: Lru[tuple[str, Digest], tuple[str, float]] = Lru(capacity)
        # (when read or changed, what was found: a digest, True; None/False: a tombstone)
        self._tags: Lru[tuple[str, str], tuple[float, Digest | None]] = Lru(capacity)
        self._seen: Lru[tuple[str, Digest], tuple[float, bool]] = Lru(capacity)
        # A blob linked to a repository, with its size (-1: a tombstone).
        self._blobs: Lru[tuple[str, Digest], tuple[float, int]] = Lru(capacity)
        # When this process deleted a repository: nothing read before then is kept.
        self._deleted: Lru[str, float] = Lru(1024)

    def tag(self, name: str, tag: str, now: float) -> Digest | None:
        entry = self._tags.get((name, tag))
        if entry is None or entry[1] is None or now - entry[0] >= self.ttl:
            return None
        return entry[1]

    def _kept_since(self, name: str, started: float) -> bool:
        deleted = self._deleted.get(name)
        return deleted is None or deleted < started

    def keep_tag(self, name: str, tag: str, digest: Digest, started: float) -> None:
        if self.ttl and _unchanged_since(self._tags.get((name, tag)), started) \
                and self._kept_since(name, started):
            self._tags.put((name, tag), (started, digest))

    def seen(self, name: str, digest: Digest, now: float) -> bool:
        """The revision was read within `ttl` (by digest, its existence is the answer)."""
        entry = self._seen.get((name, digest))
        return entry is not None and entry[1] and now - entry[0] < self.ttl

    def keep_seen(self, name: str, digest: Digest, started: float) -> None:
        if self.ttl and _unchanged_since(self._seen.get((name, digest)), started) \
                and self._kept_since(name, started):
            self._seen.put((name, digest), (started, True))

    def blob(self, name: str, digest: Digest, now: float) -> int | None:
        """The size of a blob linked to the repository within `ttl`, or None."""
        entry = self._blobs.get((name, digest))
        if entry is None or entry[1] < 0 or now - entry[0] >= self.ttl:
            return None
        return entry[1]

    def keep_blob(self, name: str, digest: Digest, size: int, started: float) -> None:
        entry = self._blobs.get((name, digest))
        if self.ttl and (entry is None or entry[1] >= 0 or entry[0] < started) \
                and self._kept_since(name, started):
            self._blobs.put((name, digest), (started, size))

    def forget_blob(self, name: str, digest: Digest) -> None:
        """This process unlinked it: the next pull looks at storage."""
        self._blobs.put((name, digest), (time.monotonic(), -1))

    def forget_repository(self, name: str) -> None:
        """This process deleted the repository: nothing of it is answered from memory."""
        if not self.ttl:
            return
        self._deleted.put(name, time.monotonic())
        for entries in (self._tags, self._seen, self._blobs):
            entries.drop_where(lambda key: key[0] == name)

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
