"""In-process caches, all bounded: content by digest (never stale), and what pulls may take
from memory (`PullCache`: exact, or stale for at most `repositories.tag_cache_seconds`)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Generic, TypeVar

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
        self._tags: _Remembered[tuple[str, str], Digest] = _Remembered(capacity)
        self._seen: _Remembered[tuple[str, Digest], bool] = _Remembered(capacity)
        self._blobs: _Remembered[tuple[str, Digest], int] = _Remembered(capacity)  # sizes
        # When this process deleted a repository: nothing read before then is kept.
        self._deleted: Lru[str, float] = Lru(1024)

    def tag(self, name: str, tag: str, now: float) -> Digest | None:
        return self._tags.fresh((name, tag), now, self.ttl)

    def keep_tag(self, name: str, tag: str, digest: Digest, started: float) -> None:
        self._keep(self._tags, (name, tag), digest, started)

    def seen(self, name: str, digest: Digest, now: float) -> bool:
        """The revision was read within `ttl` (by digest, its existence is the answer)."""
        return self._seen.fresh((name, digest), now, self.ttl) is not None

    def keep_seen(self, name: str, digest: Digest, started: float) -> None:
        self._keep(self._seen, (name, digest), True, started)

    def blob(self, name: str, digest: Digest, now: float) -> int | None:
        """The size of a blob linked to the repository within `ttl`, or None."""
        return self._blobs.fresh((name, digest), now, self.ttl)

    def keep_blob(self, name: str, digest: Digest, size: int, started: float) -> None:
        self._keep(self._blobs, (name, digest), size, started)

    def _keep(self, entries: _Remembered[tuple[str, Any], V], key: tuple[str, Any], value: V,
              started: float) -> None:
        """Remember what a read begun at `started` found, unless this process changed it (or
        deleted its repository) since."""
        deleted = self._deleted.get(key[0])
        if self.ttl and (deleted is None or deleted < started):
            entries.keep(key, value, started)

    def forget_blob(self, name: str, digest: Digest) -> None:
        """This process unlinked it: the next pull looks at storage."""
        self._blobs.changed((name, digest))

    def forget_repository(self, name: str) -> None:
        """This process deleted the repository: nothing of it is answered from memory."""
        if not self.ttl:
            return
        self._deleted.put(name, time.monotonic())
        for entries in (self._tags, self._seen, self._blobs):
            entries.drop_where(lambda key: key[0] == name)

    def forget(self, name: str, tags: Iterable[str] = (), digest: Digest | None = None) -> None:
        """This process changed these in storage: the next pull reads them again."""
        for tag in tags:
            self._tags.changed((name, tag))
        if digest is not None:
            self.revisions.drop((name, digest))
            self._seen.changed((name, digest))


class _Remembered(Lru[K, tuple[float, V | None]]):
    """What a read found, with when the read began; or a tombstone (None) with when this
    process changed it, so that a read begun before the change keeps nothing."""

    def fresh(self, key: K, now: float, ttl: float) -> V | None:
        entry = self.get(key)
        if entry is None or entry[1] is None or now - entry[0] >= ttl:
            return None
        return entry[1]

    def keep(self, key: K, value: V, started: float) -> None:
        entry = self.get(key)
        if entry is None or entry[1] is not None or entry[0] < started:
            self.put(key, (started, value))

    def changed(self, key: K) -> None:
        self.put(key, (time.monotonic(), None))
