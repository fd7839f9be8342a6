"""Filesystem driver: keys are paths under a root directory.

Writes go to a hidden temporary file in the target directory, are fsynced, then renamed into
place, so a reader or a crash sees the old object or the new one. Appends take an exclusive
`flock` on the object for the whole request, which makes one appender per upload hold across
several processes sharing the directory.

Files are created 0600 and folders (the root too, when created here) 0700: password hashes,
sealed secrets and signing keys are among the objects, the driver cannot tell which, and only
the registry's own user (its workers, commands, replicas on the host) reads the tree.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import contextlib
import fcntl
import itertools
import os
import secrets
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from storage.drivers import fs_errors
from storage.drivers.base import Observer, Stat, probe_write
from storage.drivers.nowait import NoWait
from storage.drivers.threads import Threads
from storage.errors import DriverError, KeyBusy, KeyNotFound, OffsetMismatch, StorageUnavailable

READ_CHUNK = 1024 * 1024
WRITE_BATCH = 1024 * 1024
_TMP_PREFIX = ".tmp-"
FILE_MODE = 0o600
FOLDER_MODE = 0o700
SEALED_MODE = 0o400  # a completed upload: no appends (appenders check the write bit)
# Temporary names: unique across processes sharing the folder (pid plus a random nonce, as pids
# repeat across containers) without a random draw per write.
_TMP_NONCE = secrets.token_hex(4)
_tmp_numbers = itertools.count()


def _temp_name() -> str:
    return f"{_TMP_PREFIX}{os.getpid():x}-{_TMP_NONCE}-{next(_tmp_numbers):x}"


class FilesystemDriver:
    name = "filesystem"

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True,
                 max_threads: int = 32, metadata_threads: int = 4,
                 loop_reads: bool = True) -> None:
        self.root = Path(root).resolve()
        # Set when a write failed for want of space or permission (what went wrong); /readyz
        # is not ready until `probe_write` succeeds.
        self.write_failure: str | None = None
        try:
            _make_folders(self.root)
        except OSError as exc:
            raise self._translate(exc) from None
        self.fsync = fsync
        # The one thread boundary of this driver, in two lanes. Small calls (stat, a record's
        # read or write, put_ordered) take microseconds: a few threads do them all, and more
        # only fight over the GIL (manifest PUT x64, 2 cores: 3 threads 2.7-3.0 ms of CPU per
        # PUT, 32 threads 3.4-4.0). Calls that move blob data or may take long (streamed reads
        # and appends, seals and moves with their fsync, scans, listings, batch and recursive
        # deletes) get their own threads, so a slow one never queues the small ones.
        self._small = Threads(metadata_threads, "fs", self._translate)
        self._data = Threads(max_threads, "fs_data", self._translate)
        self._listings = _ListingCache()
        # Small reads the kernel can answer without waiting skip the threads (nowait.py).
        self._nowait = NoWait(self.root) if loop_reads else None
        self._root_slash = f"{self.root}/"

    def _translate(self, exc: BaseException) -> BaseException:
        translated = fs_errors.translate(exc, self.root)
        if isinstance(translated, StorageUnavailable):
            self.write_failure = translated.message
        return translated

    async def probe_write(self, key: str) -> str | None:
        """`base.probe_write`, forgetting the failure recorded before when it works."""
        problem = await probe_write(self, key)
        if problem is None:
            self.write_failure = None
        return problem

    def _path(self, key: str) -> Path:
        return self.root / _checked(key)

    # -- small objects -------------------------------------------------------------------------

    async def get(self, key: str, max_size: int | None = None) -> bytes:
        if self._nowait is not None:
            try:
                data = self._nowait.read(self._root_slash + _checked(key), max_size)
            except FileNotFoundError:
                raise KeyNotFound(key) from None
            if data is not None:
                return data
        return await self._small.run(self._get, key, max_size)

    def _get(self, key: str, max_size: int | None) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                data = f.read(-1 if max_size is None else max_size + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise KeyNotFound(key) from None
        if max_size is not None and len(data) > max_size:
            raise DriverError(f"{key} is larger than {max_size} bytes")
        return data

    async def put(self, key: str, data: bytes) -> None:
        await self._small.run(self._put, key, data, False)

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        return await self._small.run(self._put, key, data, True)

    def _put(self, key: str, data: bytes, exclusive: bool) -> bool:
        path = self._path(key)
        if exclusive and path.exists():
            return False
        return _publish(path, self._write_temp(path, data), exclusive)

    async def put_ordered(self, items: builtins.list[tuple[str, bytes, bool]]
                          ) -> builtins.list[bool]:
        """Every object written to its temporary file and fsynced at once (one thread each, so
        the journal commits them together), then renamed into place in order."""
        paths_ = [self._path(key) for key, _, _ in items]
        staged = await asyncio.gather(*(self._small.run(self._write_temp, path, data)
                                        for path, (_, data, _) in zip(paths_, items, strict=True)),
                                      return_exceptions=True)
        temps = [t for t in staged if isinstance(t, Path)]
        failed = [t for t in staged if not isinstance(t, Path)]
        if failed:
            await self._small.run(_unlink_all, temps)
            raise failed[0]
        return await self._small.run(self._publish_all, paths_, temps,
                               [exclusive for _, _, exclusive in items])

    @staticmethod
    def _publish_all(paths_: builtins.list[Path], temps: builtins.list[Path],
                     exclusive: builtins.list[bool]) -> builtins.list[bool]:
        done: builtins.list[bool] = []
        try:
            for path, tmp, excl in zip(paths_, temps, exclusive, strict=True):
                done.append(_publish(path, tmp, excl))
        finally:
            _unlink_all(temps[len(done):])
        return done

    def _write_temp(self, path: Path, data: bytes) -> Path:
        tmp = path.parent / _temp_name()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = os.open(tmp, flags, FILE_MODE)
        except FileNotFoundError:  # the first object in its folder
            _make_folders(path.parent)
            fd = os.open(tmp, flags, FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self.fsync and data:  # an empty file has no data to lose
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink(tmp)
            raise
        os.close(fd)
        return tmp

    async def stat(self, key: str) -> Stat:
        if self._nowait is not None:
            try:
                st = self._nowait.stat(self._root_slash + _checked(key))
            except FileNotFoundError:
                raise KeyNotFound(key) from None
            if st is not None:
                return _object_stat(key, st)
        return await self._small.run(self._stat, key)

    def _stat(self, key: str) -> Stat:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            raise KeyNotFound(key) from None
        return _object_stat(key, st)

    async def stat_many(self, keys: builtins.list[str]) -> builtins.list[Stat]:
        # In turn: a cached stat is immediate and the rest wait on the same few threads, so
        # tasks to run them at once would cost more than they save.
        return [await self.stat(key) for key in keys]

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except KeyNotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        await self._small.run(_unlink, self._path(key))

    async def delete_many(self, keys: builtins.list[str]) -> None:
        paths_ = [self._path(k) for k in keys]
        await self._data.run(_unlink_all, paths_)

    async def delete_prefix(self, prefix: str) -> None:
        await self._data.run(_rmtree, self._path(prefix.rstrip("/")))

    # -- listing -------------------------------------------------------------------------------

    async def list(
        self, prefix: str, start_after: str | None = None, limit: int | None = None
    ) -> builtins.list[str]:
        return await self._data.run(self._list, prefix, start_after, limit)

    def _list(self, prefix: str, start_after: str | None, limit: int | None) -> builtins.list[str]:
        if not prefix.endswith("/"):
            raise DriverError("list prefix must end with '/'")
        out: builtins.list[str] = []
        if limit is not None and limit <= 0:
            return out
        self._walk(self._path(prefix.rstrip("/")), prefix, start_after, limit, out)
        return out

    def _walk(self, directory: Path, key_prefix: str, start_after: str | None,
              limit: int | None, out: builtins.list[str]) -> bool:
        """Depth-first in whole-key byte order, starting (by bisection) at `start_after`.
        Returns True once `limit` keys are collected."""
        entries = self._listings.entries(directory)
        first = 0
        if start_after is not None and start_after.startswith(key_prefix):
            rel = start_after[len(key_prefix):]
            first = bisect.bisect_right(entries, rel)
            if first and entries[first - 1].endswith("/") and rel.startswith(entries[first - 1]):
                first -= 1  # start_after lies inside this folder: descend into it
        elif start_after is not None and start_after > key_prefix:
            return False  # the whole folder lies before start_after
        for entry in entries[first:]:
            key = key_prefix + entry
            if entry.endswith("/"):
                if self._walk(directory / entry[:-1], key, start_after, limit, out):
                    return True
            elif start_after is None or key > start_after:
                out.append(key)
                if limit is not None and len(out) >= limit:
                    return True
        return False

    # -- streams -------------------------------------------------------------------------------

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        nowait = self._nowait
        opened = self._open_read_nowait(key) if nowait is not None else None
        if opened is None:
            opened = await self._data.run(self._open_read, key)
        fd, size = opened
        try:
            end = size if end is None else end
            offset = start
            while offset < end:
                want = min(READ_CHUNK, end - offset)
                # What the page cache holds is copied here; the rest is read by a thread.
                chunk = nowait.read_at(fd, want, offset) if nowait is not None else None
                if chunk is None:
                    chunk = await self._data.run(os.pread, fd, want, offset)
                if not chunk:
                    break
                offset += len(chunk)
                yield chunk
        finally:
            os.close(fd)

    def _open_read_nowait(self, key: str) -> tuple[int, int] | None:
        """`_open_read` on the loop, or None when opening could wait."""
        assert self._nowait is not None
        try:
            fd = self._nowait.open(self._root_slash + _checked(key))
        except FileNotFoundError:
            raise KeyNotFound(key) from None
        return None if fd is None else _regular(fd, key)

    def _open_read(self, key: str) -> tuple[int, int]:
        """A descriptor of the object and its size; KeyNotFound unless a regular file."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise KeyNotFound(key) from None
        return _regular(fd, key)

    async def scan(self, key: str, observe: Observer) -> int:
        return await self._data.run(self._scan, key, observe)

    def _scan(self, key: str, observe: Observer) -> int:
        fd, _ = self._open_read(key)
        total = 0
        try:
            while chunk := os.read(fd, READ_CHUNK):
                observe(chunk)
                total += len(chunk)
        finally:
            os.close(fd)
        return total

    async def append(
        self, key: str, offset: int, chunks: AsyncIterable[bytes], observe: Observer | None = None
    ) -> int:
        fd = await self._data.run(self._open_append, key, offset)
        size = offset
        batch: list[bytes] = []
        batched = 0
        pending: asyncio.Future[int] | None = None
        failed = False
        try:
            try:
                async for chunk in chunks:
                    if not chunk:
                        continue
                    batch.append(chunk)
                    batched += len(chunk)
                    if batched >= WRITE_BATCH or len(batch) >= 256:
                        # Double buffering: receive the next batch while this one is written.
                        if pending is not None:
                            size += await pending
                        pending = self._data.run(_writev, fd, batch, observe)
                        batch, batched = [], 0
            finally:
                # Keep what was received before a disconnect: the client may resume from there.
                if pending is not None:
                    try:
                        size += await pending
                    except BaseException:
                        failed = True
                        raise
                if batch and not failed:
                    size += await self._data.run(_writev, fd, batch, observe)
        finally:
            await self._data.run(os.close, fd)
        return size

    def _open_append(self, key: str, offset: int) -> int:
        path = self._path(key)
        if offset == 0:
            _make_folders(path.parent)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        else:
            flags = os.O_WRONLY | os.O_APPEND
        try:
            fd = os.open(path, flags, FILE_MODE)
        except FileNotFoundError:
            raise KeyNotFound(key) from None
        except PermissionError:
            # A sealed (read-only) upload, when not running as root: no longer appendable.
            # Anything else (a folder this user may not write) is the operator's to fix.
            with contextlib.suppress(OSError):
                if offset and not os.stat(path).st_mode & stat.S_IWUSR:
                    raise KeyNotFound(key) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise KeyBusy(key) from None
        st = os.fstat(fd)
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is None or current.st_ino != st.st_ino:
            # Moved away (sealed for completion) between our open and our lock.
            os.close(fd)
            raise KeyNotFound(key)
        if not st.st_mode & stat.S_IWUSR:
            os.close(fd)
            raise KeyNotFound(key)  # sealed: no longer an upload in progress
        if st.st_size != offset:
            os.close(fd)
            raise OffsetMismatch(key, st.st_size)
        return fd

    async def seal(self, key: str, size: int) -> None:
        await self._data.run(self._seal, key, size)

    def _seal(self, key: str, size: int) -> None:
        fd, _ = self._open_read(key)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise KeyBusy(key) from None
            st = os.fstat(fd)
            if st.st_size != size:
                raise OffsetMismatch(key, st.st_size)
            # Appenders check the write bit under the same lock (root ignores modes on open).
            os.fchmod(fd, SEALED_MODE)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    async def move(self, src: str, dst: str) -> None:
        await self._data.run(self._move, src, dst)

    def _move(self, src: str, dst: str) -> None:
        src_path, dst_path = self._path(src), self._path(dst)
        fd, _ = self._open_read(src)
        try:
            # An appender holds this lock while it writes; never move an object mid-append.
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise KeyBusy(src) from None
            if self.fsync:
                os.fsync(fd)
            _make_folders(dst_path.parent)
            os.replace(src_path, dst_path)
        finally:
            os.close(fd)
        if self.fsync:
            _fsync_dir(dst_path.parent)

    async def redirect_url(self, key: str, expires_in: int) -> str | None:
        return None

    async def close(self) -> None:
        self._small.close()
        self._data.close()


def _checked(key: str) -> str:
    if not key or key[0] == "/" or ".." in key.split("/"):
        raise DriverError(f"invalid key {key!r}")
    return key


def _regular(fd: int, key: str) -> tuple[int, int]:
    """(fd, size) of an open regular file; a folder is closed and not an object."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise KeyNotFound(key)
    return fd, st.st_size


def _object_stat(key: str, st: os.stat_result) -> Stat:
    if not stat.S_ISREG(st.st_mode):
        raise KeyNotFound(key)  # a folder is not an object
    return Stat(size=st.st_size, modified=st.st_mtime)


def _writev(fd: int, batch: list[bytes], observe: Observer | None) -> int:
    total = 0
    for chunk in batch:
        if observe is not None:
            observe(chunk)
        total += len(chunk)
    buffers: list[bytes | memoryview] = list(batch)
    remaining = total
    while remaining:
        written = os.writev(fd, buffers)
        remaining -= written
        while buffers and written >= len(buffers[0]):
            written -= len(buffers[0])
            buffers.pop(0)
        if written:
            buffers[0] = memoryview(buffers[0])[written:]
    return total


def _make_folders(path: Path) -> None:
    """A folder and its missing parents, each FOLDER_MODE (os.makedirs: the default mode)."""
    try:
        os.mkdir(path, FOLDER_MODE)
    except FileExistsError:
        return
    except FileNotFoundError:
        _make_folders(path.parent)
        with contextlib.suppress(FileExistsError):  # made meanwhile by another writer
            os.mkdir(path, FOLDER_MODE)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(path: Path, tmp: Path, exclusive: bool) -> bool:
    """Move a written temporary file into place (create-if-absent when `exclusive`)."""
    if not exclusive:
        os.replace(tmp, path)
        return True
    try:
        os.link(tmp, path)  # atomic create-if-absent
    except FileExistsError:
        return False
    finally:
        _unlink(tmp)
    return True


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
        os.unlink(path)


def _unlink_all(paths_: list[Path]) -> None:
    for path in paths_:
        _unlink(path)


def _rmtree(path: Path) -> None:
    try:
        entries = list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _rmtree(Path(entry.path))
        else:
            _unlink(Path(entry.path))
    with contextlib.suppress(OSError):
        os.rmdir(path)


class _ListingCache:
    """Sorted directory listings, reused while the directory's mtime is unchanged.

    Correct across processes: any entry added or removed by anyone changes the directory's
    mtime. Because mtimes come from a coarse clock, a listing is only reused when the directory
    had not changed for `_SETTLED` seconds before it was read (the "racy timestamp" rule), so a
    change in the same clock tick as the listing can never hide behind an equal mtime.
    Folders sort as `name/`, which puts them where their keys belong in whole-key order."""

    _SETTLED = 2.0
    _MAX_ENTRIES = 500_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[Path, tuple[int, int, list[str]]] = OrderedDict()
        self._size = 0

    def entries(self, directory: Path) -> list[str]:
        try:
            st = os.stat(directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        with self._lock:
            cached = self._items.get(directory)
            if cached is not None and cached[0] == st.st_mtime_ns and cached[1] == st.st_ino:
                self._items.move_to_end(directory)
                return cached[2]
        listed_at = time.time_ns()
        try:
            with os.scandir(directory) as it:
                entries = [
                    (e.name + "/" if e.is_dir(follow_symlinks=False) else e.name)
                    for e in it if not e.name.startswith(".")
                ]
        except (FileNotFoundError, NotADirectoryError):
            return []
        entries.sort()
        if listed_at - st.st_mtime_ns > self._SETTLED * 1e9:
            self._store(directory, (st.st_mtime_ns, st.st_ino, entries))
        return entries

    def _store(self, directory: Path, item: tuple[int, int, list[str]]) -> None:
        with self._lock:
            old = self._items.pop(directory, None)
            if old is not None:
                self._size -= len(old[2])
            self._items[directory] = item
            self._size += len(item[2])
            while self._size > self._MAX_ENTRIES and self._items:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped[2])
