"""Small filesystem reads on the event loop, when the kernel promises they cannot block.

A storage thread hop costs about 190 µs of wall time on these machines, while reading a tag
link that is already in memory costs 2 µs. Linux can say in advance whether a read would wait:
`openat2` with `RESOLVE_CACHED` (Linux 5.12) opens only when every path component is in the
dentry cache and answers EAGAIN when the lookup would need I/O; `preadv2` with `RWF_NOWAIT`
(Linux 4.14) reads only data already in the page cache, EAGAIN otherwise. Together they let a
driver answer a small read at once when nothing can block and fall back to its threads when
something could. Nothing is cached here: every call reads the file as it is now, so a tag
moved by another process sharing the directory is seen at once.

Used only on local filesystems (a network filesystem's open may talk to its server whatever
the lookup cache says) and only where the kernel has `openat2` (a seccomp profile that refuses
it disables the fast path for good).
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from pathlib import Path

# Filesystems whose open and cached read never leave the machine.
LOCAL_FILESYSTEMS = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs", "ramfs",
    "bcachefs", "jfs", "reiserfs",
})
# Larger objects are read by the threads: a read of this size is still microseconds when
# cached, and a record or a manifest is almost always far smaller.
MAX_SIZE = 64 * 1024

_SYS_OPENAT2 = 437  # the same number on every architecture (added after the unified table)
_AT_FDCWD = -100
_RESOLVE_CACHED = 0x20
_WOULD_BLOCK = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})
_ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR})


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


class NoWait:
    """`read(path)` and `stat(path)` answer from memory or return None (use a thread).
    An absent file raises FileNotFoundError: a cached negative lookup is authoritative."""

    def __init__(self, root: Path) -> None:
        self.enabled = False
        self.reason = "not tried"
        fstype = filesystem_type(root)
        if fstype not in LOCAL_FILESYSTEMS:
            self.reason = f"{fstype or 'unknown'} filesystem"
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            self._syscall = libc.syscall
        except (OSError, AttributeError):
            self.reason = "no syscall()"
            return
        self._syscall.restype = ctypes.c_long
        self._syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p,
                                  ctypes.c_void_p, ctypes.c_size_t]
        self._read_how = _OpenHow(os.O_RDONLY | os.O_CLOEXEC, 0, _RESOLVE_CACHED)
        self._path_how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, _RESOLVE_CACHED)
        self._how_size = ctypes.sizeof(_OpenHow)
        # One buffer for every read: they run one at a time, on the thread of the first
        # (the event loop's); a call from any other thread is left to the threads.
        self._buffer = bytearray(MAX_SIZE + 1)
        self._owner: int | None = None
        self.enabled = True
        # The root itself is always cached right after it was made: a refusal here is the
        # kernel (too old) or a seccomp profile, not the cache.
        try:
            fd = self._open(bytes(root), self._path_how)
        except OSError as exc:
            self.enabled = False
            self.reason = f"openat2: {os.strerror(exc.errno or 0)}"
            return
        if fd is None:
            self.enabled = False
            self.reason = "openat2 not usable"
            return
        os.close(fd)
        self.reason = ""

    def _open(self, path: bytes, how: _OpenHow) -> int | None:
        fd = self._syscall(_SYS_OPENAT2, _AT_FDCWD, path, ctypes.byref(how), self._how_size)
        if fd >= 0:
            return int(fd)
        code = ctypes.get_errno()
        if code in _ABSENT:
            raise FileNotFoundError(code, os.strerror(code))
        if code in _WOULD_BLOCK:
            return None
        if code in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG):
            self.enabled = False  # this kernel or its sandbox will never allow it
        return None

    def read(self, path: str, max_size: int | None = None) -> bytes | None:
        """The whole file if it is regular, at most MAX_SIZE (and max_size) bytes and wholly in
        memory; None when a thread should read it."""
        if not self.enabled:
            return None
        if self._owner != threading.get_ident():
            if self._owner is not None:
                return None
            self._owner = threading.get_ident()
        fd = self._open(os.fsencode(path), self._read_how)
        if fd is None:
            return None
        try:
            # No fstat: a read that fills the buffer is left to the thread, and a folder
            # refuses the read (EISDIR).
            buffer = self._buffer
            try:
                n = os.preadv(fd, [buffer], 0, os.RWF_NOWAIT)
            except OSError:
                return None  # not in memory (EAGAIN), a folder, or not supported here
            if n >= len(buffer) or (max_size is not None and n > max_size):
                return None
            return bytes(buffer[:n])
        finally:
            os.close(fd)

    def open(self, path: str) -> int | None:
        """A read-only descriptor of `path` when opening it cannot block, else None; the
        caller closes it."""
        if not self.enabled:
            return None
        return self._open(os.fsencode(path), self._read_how)

    def read_at(self, fd: int, size: int, offset: int) -> bytes | None:
        """Up to `size` bytes at `offset` of what is in memory (fewer when only the start
        is), b"" at the end of the file; None when none of it is in memory."""
        if not self.enabled:
            return None
        buffer = bytearray(size)
        try:
            n = os.preadv(fd, [buffer], offset, os.RWF_NOWAIT)
        except OSError:
            return None
        if n == size:
            return bytes(buffer)
        if n == 0 and size > 0:
            # the end of the file, or nothing cached (RWF_NOWAIT says EAGAIN for that, but
            # let the thread decide)
            return None
        return bytes(memoryview(buffer)[:n])

    def stat(self, path: str) -> os.stat_result | None:
        if not self.enabled:
            return None
        fd = self._open(os.fsencode(path), self._path_how)
        if fd is None:
            return None
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)


def filesystem_type(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The type of the filesystem `path` is on, from the longest mount point above it."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right:
            continue
        mount = _unescape(fields[4])
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, best_type = mount, right.split()[0]
    return best_type


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in a mount point as octal escapes
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field
