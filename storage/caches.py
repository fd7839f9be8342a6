"""In-process caches of what storage holds that cannot go stale: content by digest, and facts
read by a path that proves them still true (see `ManifestStore.get`). Both bounded."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
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
