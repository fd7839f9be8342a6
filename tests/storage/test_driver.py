"""The shared driver suite: the whole `Driver` contract, run against every driver.

Nothing here knows which driver it talks to. A bug specific to one driver is marked with the
`known_bug` fixture, which makes the test a strict xfail for that driver only.

An appended object is readable (`get`, `read`, `scan`, `move`) only once `seal` has closed it;
until then only `stat` (the size appended so far), `list`, `exists`, `delete` and further
appends are meaningful. Tests that append therefore seal before they read back.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import pytest

from storage.drivers import Driver
from storage.errors import DriverError, KeyBusy, KeyNotFound, OffsetMismatch

MiB = 1024 * 1024
MAX_CHUNK = 4 * MiB  # no driver may hand out a bigger chunk than this

KnownBug = Callable[[str, str], None]  # the `known_bug` fixture of conftest.py


# -- helpers -----------------------------------------------------------------------------------


async def stream(parts: Iterable[bytes], pause: float | None = None) -> AsyncIterator[bytes]:
    for part in parts:
        if pause is not None:
            await asyncio.sleep(pause)
        yield part


class ClientGone(Exception):
    """Stands for a client that disconnects in the middle of a request body."""


async def failing_stream(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    raise ClientGone("connection reset")


async def read_chunks(driver: Driver, key: str, start: int = 0,
                      end: int | None = None) -> list[bytes]:
    return [chunk async for chunk in driver.read(key, start, end)]


async def read_all(driver: Driver, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(await read_chunks(driver, key, start, end))


async def put_keys(driver: Driver, keys: Iterable[str]) -> None:
    await asyncio.gather(*(driver.put(key, key.encode()) for key in keys))


def pattern(size: int, seed: int = 0) -> bytes:
    """Bytes whose every position differs from its neighbours, so misplaced slices show."""
    block = bytes((i * 7 + seed) % 251 for i in range(251))
    return (block * (size // len(block) + 1))[:size]


def byte_order(keys: Iterable[str]) -> list[str]:
    return sorted(keys, key=lambda k: k.encode())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Observed:
    """An `observe` callback that hashes what it sees and records the chunk sizes."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.sizes: list[int] = []

    def __call__(self, chunk: bytes) -> None:
        self.hasher.update(chunk)
        self.sizes.append(len(chunk))

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def digest(self) -> str:
        return self.hasher.hexdigest()


# -- small objects -----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"x", bytes(range(256)), pattern(100_000)],
                         ids=["empty", "one-byte", "all-bytes", "100k"])
async def test_put_get_round_trip(driver: Driver, data: bytes) -> None:
    await driver.put("small/object", data)
    assert await driver.get("small/object") == data


async def test_put_creates_nested_folders(driver: Driver) -> None:
    await driver.put("deep/er/and/deeper/object", b"v")
    assert await driver.get("deep/er/and/deeper/object") == b"v"


async def test_put_overwrites(driver: Driver) -> None:
    await driver.put("small/object", b"first value, longer")
    await driver.put("small/object", b"second")
    assert await driver.get("small/object") == b"second"
    assert (await driver.stat("small/object")).size == len(b"second")


async def test_put_overwrites_atomically(driver: Driver) -> None:
    old, new = b"o" * (256 * 1024), b"n" * (256 * 1024)
    await driver.put("atomic/object", old)
    seen: set[bytes] = set()

    async def reader() -> None:
        for _ in range(40):
            seen.add(await driver.get("atomic/object"))
            await asyncio.sleep(0)

    await asyncio.gather(reader(), reader(),
                         *(driver.put("atomic/object", new if i % 2 else old) for i in range(12)))
    assert seen <= {old, new}, "a reader saw a partly written object"
    assert await driver.list("atomic/") == ["atomic/object"]


async def test_get_max_size(driver: Driver) -> None:
    await driver.put("small/ten", b"0123456789")
    assert await driver.get("small/ten", max_size=10) == b"0123456789"
    assert await driver.get("small/ten", max_size=11) == b"0123456789"
    with pytest.raises(DriverError) as caught:
        await driver.get("small/ten", max_size=9)
    assert not isinstance(caught.value, KeyNotFound)
    await driver.put("small/empty", b"")
    assert await driver.get("small/empty", max_size=0) == b""


async def test_put_if_absent(driver: Driver) -> None:
    assert await driver.put_if_absent("once/key", b"first") is True
    assert await driver.put_if_absent("once/key", b"second") is False
    assert await driver.get("once/key") == b"first"
    assert await driver.list("once/") == ["once/key"]


async def test_put_if_absent_concurrent_has_one_winner(driver: Driver) -> None:
    values = [f"value-{i}".encode() for i in range(8)]
    results = await asyncio.gather(*(driver.put_if_absent("race/key", v) for v in values))
    assert results.count(True) == 1
    assert await driver.get("race/key") == values[results.index(True)]
    assert await driver.list("race/") == ["race/key"]


async def test_put_ordered_writes_each_as_put_or_put_if_absent(driver: Driver) -> None:
    await driver.put("ordered/taken", b"earlier")
    await driver.put("ordered/replaced", b"old")
    done = await driver.put_ordered([
        ("ordered/a/blob", b"bytes", False),
        ("ordered/replaced", b"new", False),
        ("ordered/taken", b"mine", True),
        ("ordered/fresh", b"created", True),
        ("ordered/empty", b"", False),
    ])
    assert done == [True, True, False, True, True]
    assert await driver.get("ordered/a/blob") == b"bytes"
    assert await driver.get("ordered/replaced") == b"new"
    assert await driver.get("ordered/taken") == b"earlier"  # if-absent lost: left as it was
    assert await driver.get("ordered/fresh") == b"created"
    assert await driver.get("ordered/empty") == b""
    assert await driver.list("ordered/") == ["ordered/a/blob", "ordered/empty", "ordered/fresh",
                                             "ordered/replaced", "ordered/taken"]


async def test_put_ordered_stops_at_a_failed_object(driver: Driver) -> None:
    """An object that cannot be stored (an invalid key) fails the call, and nothing after it
    becomes visible."""
    with pytest.raises(DriverError):
        await driver.put_ordered([("ordered/before", b"1", False), ("/ordered", b"2", False),
                                  ("ordered/after", b"3", False)])
    assert not await driver.exists("ordered/after")
    assert [k for k in await driver.list("ordered/") if k != "ordered/before"] == []


async def test_put_ordered_on_a_filesystem_is_all_or_nothing(driver: Driver) -> None:
    """The filesystem writes every object before it shows any: one that cannot be written
    (its folder is a file) leaves none of them visible and no temporary file behind."""
    if driver.name != "filesystem":
        pytest.skip("S3 puts one object after the other")
    await driver.put("ordered/file", b"a file, not a folder")
    with pytest.raises(OSError):
        await driver.put_ordered([("ordered/before", b"1", False),
                                  ("ordered/file/inside", b"2", False),
                                  ("ordered/after", b"3", False)])
    assert await driver.list("ordered/") == ["ordered/file"]
    root = driver.root  # type: ignore[attr-defined]
    assert [p for p in root.rglob("*") if p.name.startswith(".tmp-")] == []


@pytest.mark.parametrize("size", [0, 1, 1000])
async def test_stat(driver: Driver, size: int) -> None:
    before = time.time()
    await driver.put("stat/object", pattern(size))
    stat = await driver.stat("stat/object")
    assert stat.size == size
    assert isinstance(stat.modified, float)
    # Object stores keep whole seconds and their own clock: allow some slack either way.
    assert before - 60 <= stat.modified <= time.time() + 60


async def test_stat_many_answers_in_order_or_not_at_all(driver: Driver) -> None:
    await put_keys(driver, ["many/a", "many/bb", "many/ccc"])
    stats = await driver.stat_many(["many/ccc", "many/a", "many/bb"])
    assert [s.size for s in stats] == [len("many/ccc"), len("many/a"), len("many/bb")]
    assert await driver.stat_many([]) == []
    with pytest.raises(KeyNotFound):
        await driver.stat_many(["many/a", "many/absent", "many/bb"])
    with pytest.raises(KeyNotFound):
        await driver.stat_many(["many"])  # a folder is not an object


async def test_exists(driver: Driver) -> None:
    assert await driver.exists("ex/key") is False
    await driver.put("ex/key", b"v")
    assert await driver.exists("ex/key") is True
    await driver.delete("ex/key")
    assert await driver.exists("ex/key") is False


async def test_delete_is_idempotent(driver: Driver) -> None:
    await driver.delete("del/never-existed")
    await driver.put("del/key", b"v")
    await driver.put("del/other", b"w")
    await driver.delete("del/key")
    await driver.delete("del/key")
    with pytest.raises(KeyNotFound):
        await driver.get("del/key")
    assert await driver.list("del/") == ["del/other"]


async def test_delete_many_removes_exactly_the_keys_given(driver: Driver) -> None:
    keys = [f"many/{i:04d}" for i in range(1203)]  # more than one S3 DeleteObjects batch
    await put_keys(driver, [*keys, "many/kept", "other/0000"])
    await driver.delete_many([*keys, "many/never-existed"])
    assert await driver.list("many/") == ["many/kept"]
    assert await driver.list("other/") == ["other/0000"]
    await driver.delete_many([])


async def test_delete_prefix_removes_one_subtree(driver: Driver) -> None:
    await put_keys(driver, ["p/x/a", "p/x/b/c", "p/x/b/d/e", "p/x-y/z", "p/xy", "p/x.txt",
                            "p/w/x/a", "q/x/a"])
    await driver.delete_prefix("p/x/")
    assert await driver.list("p/") == ["p/w/x/a", "p/x-y/z", "p/x.txt", "p/xy"]
    assert await driver.list("p/x/") == []
    assert await driver.list("q/") == ["q/x/a"]
    await driver.delete_prefix("p/x/")  # already gone: not an error
    await driver.delete_prefix("never/was/")
    await driver.put("p/x/again", b"v")  # the folder can be reused
    assert await driver.list("p/x/") == ["p/x/again"]


# -- missing keys ------------------------------------------------------------------------------

# Three ways for a key to be absent: nothing there; below an object ("obj" exists, "obj/child"
# is asked for); or a folder ("dir/child" exists, "dir" is asked for). On an object store a
# folder is not an object, so every driver must treat all three alike.
MISSING = {
    "absent": "nothing/here",
    "below-object": "obj/child",
    "folder": "dir",
}


async def _make_neighbours(driver: Driver) -> None:
    await driver.put("obj", b"an object")
    await driver.put("dir/child", b"a child")


async def _get(driver: Driver, key: str) -> object:
    return await driver.get(key)


async def _stat(driver: Driver, key: str) -> object:
    return await driver.stat(key)


async def _read(driver: Driver, key: str) -> object:
    return await read_all(driver, key)


async def _scan(driver: Driver, key: str) -> object:
    return await driver.scan(key, lambda chunk: None)


async def _move(driver: Driver, key: str) -> object:
    await driver.move(key, "moved/here")
    return None


async def _seal(driver: Driver, key: str) -> object:
    await driver.seal(key, 0)
    return None


MISSING_OPS: dict[str, Callable[[Driver, str], Awaitable[object]]] = {
    "get": _get, "stat": _stat, "read": _read, "scan": _scan, "move": _move, "seal": _seal,
}



@pytest.mark.parametrize("where", sorted(MISSING))
@pytest.mark.parametrize("op", sorted(MISSING_OPS))
async def test_missing_key_raises_key_not_found(driver: Driver, op: str, where: str,
                                                known_bug: KnownBug) -> None:
    await _make_neighbours(driver)
    key = MISSING[where]
    with pytest.raises(KeyNotFound) as caught:
        await MISSING_OPS[op](driver, key)
    assert caught.value.key == key
    assert await driver.exists("moved/here") is False
    assert await driver.get("obj") == b"an object"
    assert await driver.get("dir/child") == b"a child"


@pytest.mark.parametrize("where", sorted(MISSING))
async def test_missing_key_is_absent_for_exists_and_delete(driver: Driver, where: str) -> None:
    await _make_neighbours(driver)
    key = MISSING[where]
    assert await driver.exists(key) is False
    await driver.delete(key)
    assert await driver.get("obj") == b"an object"
    assert await driver.get("dir/child") == b"a child"


# -- listing -----------------------------------------------------------------------------------

# Byte order traps: '+' < '-' < '.' < '/' < '0' < 'A' < '_' < 'a' < 'é'. A folder sorts as its
# name plus '/', so "a/b" lies between "a.b" and "a0"; "ab/x" lies between "ab-c" and "abc".
# (A filesystem cannot hold "a" and "a/b" side by side, so "a" the object sits one level down.)
LIST_KEYS = [
    "l/A", "l/_x", "l/a-b", "l/a.b", "l/a/b", "l/a/c/d", "l/a/c/e", "l/a0", "l/a_b",
    "l/ab-c", "l/ab/x", "l/abc", "l/b", "l/é",
    "l/n/A", "l/n/_x", "l/n/a", "l/n/a-b", "l/n/a.b", "l/n/a0",
    "l/cat/a+repository", "l/cat/a-b+repository", "l/cat/a/b+repository",
    "l/cat/a_b+repository", "l/cat/ab+repository",
    "l/z/z/z/z",
]
# Siblings of the listed folder that share its name as a string prefix.
OUTSIDE_KEYS = ["k/1", "l-x/1", "l.x", "l0", "la/1", "m/1"]
LISTED = byte_order(LIST_KEYS)


async def test_list_is_recursive_in_whole_key_byte_order(driver: Driver) -> None:
    await put_keys(driver, LIST_KEYS + OUTSIDE_KEYS)
    assert await driver.list("l/") == LISTED
    assert await driver.list("l/n/") == byte_order(k for k in LIST_KEYS if k.startswith("l/n/"))
    assert await driver.list("l/a/") == ["l/a/b", "l/a/c/d", "l/a/c/e"]
    assert await driver.list("l/z/z/") == ["l/z/z/z/z"]


START_AFTER = {
    "empty": "",
    "before-everything": "l/",
    "before-prefix": "a",
    "a-key": "l/a-b",
    "not-a-key": "l/a.a",
    "folder-name": "l/a",
    "folder-slash": "l/a/",
    "inside-subtree": "l/a/c",
    "inside-subtree-key": "l/a/c/d",
    "after-subtree-last": "l/a/c/e",
    "deeper-than-keys": "l/a/c/d/zzz",
    "between-folders": "l/ab/",
    "catalog-marker": "l/cat/a+repository",
    "last-key": LISTED[-1],
    "after-everything": "l/~",
    "after-prefix": "m",
}


@pytest.mark.parametrize("start_after", START_AFTER.values(), ids=START_AFTER.keys())
async def test_list_start_after_is_strict(driver: Driver, start_after: str) -> None:
    await put_keys(driver, LIST_KEYS + OUTSIDE_KEYS)
    expected = [k for k in LISTED if k.encode() > start_after.encode()]
    assert await driver.list("l/", start_after=start_after) == expected
    assert await driver.list("l/", start_after=start_after, limit=3) == expected[:3]


@pytest.mark.parametrize("limit", [1, 2, 5, len(LIST_KEYS) - 1, len(LIST_KEYS), 1000])
async def test_list_limit(driver: Driver, limit: int) -> None:
    await put_keys(driver, LIST_KEYS + OUTSIDE_KEYS)
    assert await driver.list("l/", limit=limit) == LISTED[:limit]


async def test_list_limit_zero_is_empty(driver: Driver) -> None:
    await put_keys(driver, LIST_KEYS)
    assert await driver.list("l/", limit=0) == []


async def test_list_empty_and_missing_prefixes(driver: Driver) -> None:
    assert await driver.list("nothing/") == []
    assert await driver.list("nothing/deeper/") == []
    await driver.put("gone/a/b", b"v")
    await driver.put("file", b"v")
    await driver.delete("gone/a/b")
    assert await driver.list("gone/") == []
    assert await driver.list("gone/a/") == []
    assert await driver.list("file/") == []


def _paging_keys() -> list[str]:
    keys = []
    for i in range(250):
        shape = i % 3
        if shape == 0:
            keys.append(f"pg/{i % 7}/{i:03d}")
        elif shape == 1:
            keys.append(f"pg/{i % 7}-{i:03d}")
        else:
            keys.append(f"pg/{i % 7}/{i % 2}/{i:03d}")
    return keys


async def test_paging_with_start_after_visits_every_key_once(driver: Driver) -> None:
    keys = _paging_keys()
    await put_keys(driver, keys)
    seen: list[str] = []
    last: str | None = None
    for _ in range(len(keys)):
        page = await driver.list("pg/", start_after=last, limit=7)
        assert len(page) <= 7
        if not page:
            break
        seen.extend(page)
        last = page[-1]
    assert seen == byte_order(keys)


# -- streams -----------------------------------------------------------------------------------

RANGED_SIZE = 3 * MiB + 123
RANGES = {
    "whole": (0, None),
    "whole-explicit": (0, RANGED_SIZE),
    "from-1": (1, None),
    "small-middle": (10, 20),
    "across-MiB-boundaries": (MiB - 3, 2 * MiB + 5),
    "last-byte": (RANGED_SIZE - 1, None),
    "last-byte-explicit": (RANGED_SIZE - 1, RANGED_SIZE),
    "at-end": (RANGED_SIZE, None),
    "empty": (5, 5),
    "end-past-size": (10, RANGED_SIZE + 1000),
}


@pytest.mark.parametrize("start_end", RANGES.values(), ids=RANGES.keys())
async def test_read_range(driver: Driver, start_end: tuple[int, int | None],
                          known_bug: KnownBug) -> None:
    start, end = start_end
    data = pattern(RANGED_SIZE)
    await driver.append("ranged/object", 0, stream([data[i:i + MiB]
                                                    for i in range(0, len(data), MiB)]))
    await driver.seal("ranged/object", RANGED_SIZE)
    chunks = await read_chunks(driver, "ranged/object", start, end)
    assert all(len(chunk) <= MAX_CHUNK for chunk in chunks)
    assert b"".join(chunks) == data[start:end]


async def _write_big(driver: Driver, key: str, size: int) -> bytes:
    data = pattern(size, seed=3)
    assert await driver.append(key, 0, stream(data[i:i + MiB] for i in range(0, size, MiB))) \
        == size
    await driver.seal(key, size)
    return data


async def test_read_streams_large_objects_in_bounded_chunks(driver: Driver) -> None:
    data = await _write_big(driver, "big/object", 9 * MiB + 7)
    chunks = await read_chunks(driver, "big/object")
    assert max(len(chunk) for chunk in chunks) <= MAX_CHUNK
    assert b"".join(chunks) == data


@pytest.mark.parametrize("size", [0, 1, 1000, 9 * MiB + 7])
async def test_scan_feeds_every_byte(driver: Driver, size: int) -> None:
    data = pattern(size, seed=5)
    if size > MiB:
        await driver.append("scan/object", 0, stream(data[i:i + MiB]
                                                     for i in range(0, size, MiB)))
        await driver.seal("scan/object", size)
    else:
        await driver.put("scan/object", data)
    observed = Observed()
    assert await driver.scan("scan/object", observed) == size
    assert observed.total == size
    assert observed.digest == sha256(data)
    assert all(n <= MAX_CHUNK for n in observed.sizes)


# -- append ------------------------------------------------------------------------------------


async def test_append_creates_then_extends(driver: Driver) -> None:
    assert await driver.exists("up/data") is False
    assert await driver.append("up/data", 0, stream([b"hello"])) == 5
    assert (await driver.stat("up/data")).size == 5
    assert await driver.exists("up/data") is True
    assert await driver.list("up/") == ["up/data"]
    assert await driver.append("up/data", 5, stream([b" ", b"world"])) == 11
    assert (await driver.stat("up/data")).size == 11
    await driver.seal("up/data", 11)
    assert await driver.get("up/data") == b"hello world"
    assert (await driver.stat("up/data")).size == 11
    assert await driver.list("up/") == ["up/data"]


@pytest.mark.parametrize("offset", [0, 3, 10, 12, 100])
async def test_append_at_wrong_offset(driver: Driver, offset: int) -> None:
    await driver.append("up/data", 0, stream([b"hello world"]))
    with pytest.raises(OffsetMismatch) as caught:
        await driver.append("up/data", offset, stream([b"garbage"]))
    assert caught.value.size == 11
    assert (await driver.stat("up/data")).size == 11
    # The failed attempt released the key: the right offset works at once.
    assert await driver.append("up/data", 11, stream([b"!"])) == 12
    await driver.seal("up/data", 12)
    assert await driver.get("up/data") == b"hello world!"


async def test_append_to_missing_key_at_nonzero_offset(driver: Driver) -> None:
    with pytest.raises((KeyNotFound, OffsetMismatch)):
        await driver.append("up/missing", 5, stream([b"data"]))
    assert await driver.exists("up/missing") is False


@pytest.mark.parametrize(("count", "size"), [(1, 10), (3000, 7), (5, 2 * MiB + 1)],
                         ids=["one-small", "3000x7-bytes", "5x2MiB"])
async def test_append_observe_sees_exactly_the_bytes_written(driver: Driver, count: int,
                                                             size: int) -> None:
    parts = [pattern(size, seed=i) for i in range(count)]
    data = b"".join(parts)
    observed = Observed()
    assert await driver.append("up/data", 0, stream(parts), observed) == len(data)
    assert observed.total == len(data)
    assert observed.digest == sha256(data)
    assert (await driver.stat("up/data")).size == len(data)
    await driver.seal("up/data", len(data))
    assert sha256(await read_all(driver, "up/data")) == sha256(data)


async def test_append_observe_across_several_requests(driver: Driver) -> None:
    observed = Observed()
    parts = [pattern(1000 + i, seed=i) for i in range(6)]
    offset = 0
    for part in parts:
        offset = await driver.append("up/data", offset, stream([part[:400], part[400:]]),
                                     observed)
    data = b"".join(parts)
    assert offset == len(data)
    assert observed.digest == sha256(data)
    await driver.seal("up/data", offset)
    assert await driver.get("up/data") == data


async def test_append_skips_empty_chunks(driver: Driver) -> None:
    assert await driver.append("up/data", 0, stream([b"", b"ab", b"", b"c", b""])) == 3
    assert await driver.append("up/data", 3, stream([b"", b""])) == 3
    await driver.seal("up/data", 3)
    assert await driver.get("up/data") == b"abc"


@pytest.mark.parametrize(("count", "size"), [(5, 1000), (40, 64 * 1024), (3, 2 * MiB)],
                         ids=["small", "several-MiB-in-64KiB", "2MiB-chunks"])
async def test_append_keeps_bytes_received_before_a_failure(driver: Driver, count: int,
                                                            size: int) -> None:
    await driver.append("up/data", 0, stream([b"head"]))
    parts = [pattern(size, seed=i) for i in range(count)]
    received = b"head" + b"".join(parts)
    observed = Observed()
    with pytest.raises(ClientGone):
        await driver.append("up/data", 4, failing_stream(parts), observed)
    assert (await driver.stat("up/data")).size == len(received)
    assert observed.digest == sha256(received[4:])
    # The client resumes where the stored bytes end.
    assert await driver.append("up/data", len(received), stream([b"tail"])) == len(received) + 4
    await driver.seal("up/data", len(received) + 4)
    assert sha256(await read_all(driver, "up/data")) == sha256(received + b"tail")


@pytest.mark.parametrize("initial", [b"", b"start"], ids=["creating", "extending"])
async def test_concurrent_appends_never_interleave(driver: Driver, initial: bytes) -> None:
    """A free-running race; `test_racing_appender_cannot_spoil_the_winner` replays the
    interesting interleaving deterministically."""
    if initial:
        await driver.append("up/data", 0, stream([initial]))
    payloads = [b"a" * 1024, b"b" * 1024]

    async def writer(fill: bytes) -> int:
        return await driver.append("up/data", len(initial), stream([fill] * 40, pause=0.001))

    results = await asyncio.gather(*(writer(p) for p in payloads), return_exceptions=True)
    winners = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, KeyBusy | OffsetMismatch):
            raise result
    assert len(winners) >= 1
    size = (await driver.stat("up/data")).size
    await driver.seal("up/data", size)
    final = await driver.get("up/data")
    for i in winners:
        assert results[i] == len(initial) + 40 * 1024
        assert final == initial + payloads[i] * 40, "appends interleaved or both applied"


async def test_deletes_of_one_key_at_once_all_succeed(driver: Driver) -> None:
    """Replicas that find the same lapsed lease delete it at the same moment: a delete whose
    key another request removed meanwhile has done its job."""
    for round_ in range(5):
        await driver.put("leases/job", b"x")
        await asyncio.gather(*(driver.delete("leases/job") for _ in range(8)))
        assert not await driver.exists("leases/job"), round_


async def test_first_appends_of_a_new_driver_at_once_all_succeed(driver: Driver) -> None:
    """Uploads to different keys at the same moment, the first this driver instance makes
    (on S3: its first conditional replaces, while it may still be learning how the store
    compares ETags): none is refused, each holds its bytes."""
    datas = [pattern(1000 + i, seed=i) for i in range(8)]
    sizes = await asyncio.gather(*(driver.append(f"up/first-{i}", 0, stream([data[:500]]))
                                   for i, data in enumerate(datas)))
    assert sizes == [500] * len(datas)
    sizes = await asyncio.gather(*(driver.append(f"up/first-{i}", 500, stream([data[500:]]))
                                   for i, data in enumerate(datas)))
    assert sizes == [len(data) for data in datas]
    for i, data in enumerate(datas):
        await driver.seal(f"up/first-{i}", len(data))
        assert await driver.get(f"up/first-{i}") == data


@pytest.mark.parametrize("initial", [b"", b"start"], ids=["creating", "extending"])
async def test_racing_appender_cannot_spoil_the_winner(driver: Driver, initial: bytes,
                                                       known_bug: KnownBug) -> None:
    """Appender B starts at the current size and is still receiving when appender A, from the
    same offset, runs to completion; then B's body ends. One of them is refused (KeyBusy, or
    OffsetMismatch naming the winner's size), and the object holds exactly the winner's bytes
    and stays usable."""
    if initial:
        await driver.append("up/data", 0, stream([initial]))
    offset = len(initial)
    a_bytes, b_bytes = pattern(20_000, seed=1), pattern(20_000, seed=2)
    b_receiving = asyncio.Event()
    a_finished = asyncio.Event()

    async def b_body() -> AsyncIterator[bytes]:
        b_receiving.set()
        yield b_bytes[:10_000]
        await a_finished.wait()
        yield b_bytes[10_000:]

    b_task = asyncio.ensure_future(driver.append("up/data", offset, b_body()))
    await b_receiving.wait()
    await asyncio.sleep(0.05)
    try:
        a_result: int | BaseException = await driver.append("up/data", offset,
                                                            stream([a_bytes]))
    except (KeyBusy, OffsetMismatch) as exc:
        a_result = exc
    a_finished.set()
    try:
        b_result: int | BaseException = await b_task
    except (KeyBusy, OffsetMismatch) as exc:
        b_result = exc
    results = {"a": a_result, "b": b_result}
    winners = [name for name, result in results.items() if isinstance(result, int)]
    assert len(winners) == 1, results
    winner = a_bytes if winners == ["a"] else b_bytes
    assert results[winners[0]] == offset + len(winner)
    assert (await driver.stat("up/data")).size == offset + len(winner)
    if winners == ["a"]:  # B found out only when its body ended: it is told where to resume
        assert isinstance(results["b"], OffsetMismatch), results
        assert results["b"].size == offset + len(winner), results
    # The object goes on: one more append, then seal and read back.
    assert await driver.append("up/data", offset + len(winner), stream([b"!"])) == \
        offset + len(winner) + 1
    await driver.seal("up/data", offset + len(winner) + 1)
    assert await driver.get("up/data") == initial + winner + b"!"


async def test_stat_during_appends_reports_the_appended_size(driver: Driver) -> None:
    """Between requests `stat` is exactly the size appended so far; during a request it is
    never below the offset the request started at, nor above what it has received."""
    seen: list[tuple[int, int, int]] = []  # (request offset, bytes received so far, stat size)

    async def watched(offset: int, parts: list[bytes]) -> AsyncIterator[bytes]:
        received = 0
        for part in parts:
            seen.append((offset, received, (await driver.stat("up/data")).size))
            yield part
            received += len(part)
            await asyncio.sleep(0)
        seen.append((offset, received, (await driver.stat("up/data")).size))

    offset = 0
    for request in range(3):
        parts = [pattern(300 * 1024 + i, seed=request) for i in range(4)]
        offset = await driver.append("up/data", offset, watched(offset, parts))
        assert (await driver.stat("up/data")).size == offset
        assert await driver.exists("up/data") is True
    assert offset == sum(3 * (300 * 1024 + i) for i in range(4))
    # The first stat of the first request comes after the object was created (empty).
    assert seen[0] == (0, 0, 0)
    for start, received, size in seen:
        assert start <= size <= start + received, seen
    await driver.seal("up/data", offset)
    assert (await driver.stat("up/data")).size == offset


async def test_seal_then_append_is_refused(driver: Driver) -> None:
    assert await driver.append("up/data", 0, stream([b"hello"])) == 5
    await driver.seal("up/data", 5)
    for offset in (5, 0, 3):
        with pytest.raises(KeyNotFound):
            await driver.append("up/data", offset, stream([b"more"]))
    assert await driver.get("up/data") == b"hello"
    assert (await driver.stat("up/data")).size == 5
    assert await read_all(driver, "up/data") == b"hello"


@pytest.mark.parametrize("wrong", [0, 10, 12, 1000])
async def test_seal_with_wrong_size_changes_nothing(driver: Driver, wrong: int) -> None:
    assert await driver.append("up/data", 0, stream([b"hello ", b"world"])) == 11
    with pytest.raises(OffsetMismatch) as caught:
        await driver.seal("up/data", wrong)
    assert caught.value.size == 11
    assert (await driver.stat("up/data")).size == 11
    # Still an object being appended to, holding the same bytes.
    assert await driver.append("up/data", 11, stream([b"!"])) == 12
    await driver.seal("up/data", 12)
    assert await driver.get("up/data") == b"hello world!"


async def test_seal_is_idempotent(driver: Driver) -> None:
    data = pattern(70_000)
    assert await driver.append("up/data", 0, stream([data[:30_000], data[30_000:]])) == len(data)
    await driver.seal("up/data", len(data))
    await driver.seal("up/data", len(data))
    with pytest.raises(OffsetMismatch) as caught:
        await driver.seal("up/data", len(data) + 1)  # sealed, but not at that size
    assert caught.value.size == len(data)
    assert await driver.get("up/data") == data
    assert (await driver.stat("up/data")).size == len(data)
    assert await driver.list("up/") == ["up/data"]


@pytest.mark.parametrize("chunks", [[], [b"", b""]], ids=["no-chunks", "empty-chunks"])
async def test_seal_empty_appended_object(driver: Driver, chunks: list[bytes]) -> None:
    observed = Observed()
    assert await driver.append("up/empty", 0, stream(chunks), observed) == 0
    assert observed.total == 0
    assert (await driver.stat("up/empty")).size == 0
    assert await driver.list("up/") == ["up/empty"]
    await driver.seal("up/empty", 0)
    assert await driver.get("up/empty") == b""
    assert await read_all(driver, "up/empty") == b""
    assert await driver.scan("up/empty", Observed()) == 0
    assert (await driver.stat("up/empty")).size == 0
    with pytest.raises(KeyNotFound):
        await driver.append("up/empty", 0, stream([b"x"]))
    await driver.move("up/empty", "done/empty")
    assert await driver.get("done/empty") == b""
    assert await driver.list("up/") == []


# Request sizes around the 5 MiB part size the S3 driver is given here (S3's minimum): requests
# that end inside a part, exactly on a part boundary, and one that spans more than a part.
REQUESTS = {
    "3+4+6MiB": [3 * MiB, 4 * MiB, 6 * MiB],
    "on-part-boundaries": [5 * MiB, 5 * MiB, 1],
    "1+11MiB+1": [1, 11 * MiB, 1],
}


@pytest.mark.parametrize("sizes", REQUESTS.values(), ids=REQUESTS.keys())
async def test_append_in_several_requests_across_parts(driver: Driver,
                                                       sizes: list[int]) -> None:
    """Each request resumes from the size the previous one returned; the bytes arrive in
    pieces of odd sizes, as from a network, and the sealed object holds exactly them."""
    data = pattern(sum(sizes), seed=11)
    piece = 256 * 1024 + 3
    observed = Observed()
    offset = 0
    for size in sizes:
        body = data[offset:offset + size]
        pieces = [body[i:i + piece] for i in range(0, len(body), piece)]
        returned = await driver.append("up/data", offset, stream(pieces), observed)
        assert returned == offset + size
        offset = returned
        assert (await driver.stat("up/data")).size == offset
    assert offset == len(data)
    assert observed.total == len(data)
    assert observed.digest == sha256(data)
    await driver.seal("up/data", offset)
    chunks = await read_chunks(driver, "up/data")
    assert all(len(chunk) <= MAX_CHUNK for chunk in chunks)
    assert sha256(b"".join(chunks)) == sha256(data)
    rescanned = Observed()
    assert await driver.scan("up/data", rescanned) == len(data)
    assert rescanned.digest == sha256(data)
    # A range that straddles the first part boundary.
    start, end = 5 * MiB - 7, min(5 * MiB + 9, len(data))
    assert await read_all(driver, "up/data", start, end) == data[start:end]


async def test_delete_prefix_drops_an_object_being_appended(driver: Driver) -> None:
    """Cancelling an upload removes its folder, whatever state the append is in."""
    await driver.put("uploads/u1/info", b"{}")
    await driver.append("uploads/u1/data", 0, stream([pattern(6 * MiB + 5)]))
    await driver.put("uploads/u2/info", b"{}")
    await driver.delete_prefix("uploads/u1/")
    assert await driver.list("uploads/") == ["uploads/u2/info"]
    assert await driver.exists("uploads/u1/data") is False
    with pytest.raises((KeyNotFound, OffsetMismatch)):
        await driver.append("uploads/u1/data", 6 * MiB + 5, stream([b"more"]))
    # The key starts over as a new object.
    assert await driver.append("uploads/u1/data", 0, stream([b"again"])) == 5
    await driver.seal("uploads/u1/data", 5)
    assert await driver.get("uploads/u1/data") == b"again"


async def test_seal_during_a_running_append(driver: Driver) -> None:
    """`seal` while another request appends: refused (KeyBusy), or the running append fails.
    Either way the sealed object is exactly `size` bytes of what was appended, never a mix."""
    first = pattern(100_000, seed=1)
    assert await driver.append("up/data", 0, stream([first])) == len(first)
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield pattern(50_000, seed=2)
        started.set()
        await release.wait()
        yield pattern(50_000, seed=3)

    appender = asyncio.ensure_future(driver.append("up/data", len(first), slow_body()))
    await started.wait()
    await asyncio.sleep(0.05)
    try:
        await driver.seal("up/data", len(first))
    except KeyBusy:
        sealed = False
    else:
        sealed = True
    release.set()
    try:
        appended: int | BaseException = await appender
    except (KeyBusy, KeyNotFound, OffsetMismatch) as exc:
        appended = exc
    if sealed:
        assert isinstance(appended, BaseException), "an append succeeded on a sealed object"
        assert await driver.get("up/data") == first
    else:
        assert appended == len(first) + 100_000
        await driver.seal("up/data", len(first) + 100_000)
        assert await driver.get("up/data") == first + pattern(50_000, seed=2) + \
            pattern(50_000, seed=3)


# -- move and the rest -------------------------------------------------------------------------


async def test_move_replaces_destination(driver: Driver) -> None:
    await driver.put("mv/src", b"new content")
    await driver.put("mv/dst", b"old content, longer")
    await driver.move("mv/src", "mv/dst")
    assert await driver.get("mv/dst") == b"new content"
    assert await driver.exists("mv/src") is False
    with pytest.raises(KeyNotFound):
        await driver.get("mv/src")
    assert await driver.list("mv/") == ["mv/dst"]


async def test_move_into_new_folders(driver: Driver) -> None:
    data = await _write_big(driver, "mv/upload/data", 2 * MiB + 1)
    await driver.move("mv/upload/data", "blobs/sha256/ab/abcdef")
    assert (await driver.stat("blobs/sha256/ab/abcdef")).size == len(data)
    assert sha256(await read_all(driver, "blobs/sha256/ab/abcdef")) == sha256(data)
    assert await driver.list("mv/") == []


async def test_move_is_atomic_for_readers(driver: Driver) -> None:
    old, new = b"o" * (256 * 1024), b"n" * (256 * 1024)
    await driver.put("mv/dst", old)
    await driver.put("mv/src", new)
    seen: set[bytes] = set()

    async def reader() -> None:
        for _ in range(20):
            seen.add(await driver.get("mv/dst"))
            await asyncio.sleep(0)

    await asyncio.gather(reader(), driver.move("mv/src", "mv/dst"), reader())
    assert seen <= {old, new}
    assert await driver.get("mv/dst") == new


async def test_redirect_url(driver: Driver) -> None:
    await driver.put("blobs/object", b"v")
    url = await driver.redirect_url("blobs/object", 60)
    assert url is None or (isinstance(url, str) and url.startswith(("http://", "https://")))


async def test_temporary_files_never_listed(driver: Driver) -> None:
    await driver.put("t/put", b"1")
    await driver.put("t/put", b"2")
    await asyncio.gather(*(driver.put("t/busy", bytes([i])) for i in range(10)))
    await driver.put_if_absent("t/once", b"1")
    await driver.put_if_absent("t/once", b"2")
    await asyncio.gather(*(driver.put_if_absent("t/race", bytes([i])) for i in range(10)))
    await driver.append("t/up", 0, stream([b"a", b"b"]))
    with pytest.raises(ClientGone):
        await driver.append("t/up", 2, failing_stream([b"c"]))
    await driver.put("t/src", b"s")
    await driver.move("t/src", "t/moved")
    await driver.put("t/deep/er/key", b"d")
    expected = ["t/busy", "t/deep/er/key", "t/moved", "t/once", "t/put", "t/race", "t/up"]
    assert await driver.list("t/") == expected  # "t/up" is still being appended to
    assert await driver.list("t/", start_after="t/") == expected
    await driver.seal("t/up", 3)
    assert await driver.list("t/") == expected
    assert await driver.list("t/", start_after="t/busy", limit=2) == expected[1:3]
