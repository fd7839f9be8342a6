"""The one table from the filesystem's OSErrors to storage errors a client can act on.

A full disk, a quota, a read-only mount or a directory the server's user may not write are
the operator's to fix, not the client's fault and not a crash: each becomes a retryable
`StorageUnavailable` naming what is wrong and what to do, with the path and the user.
"""

from __future__ import annotations

import errno
import os

from storage.errors import StorageFull, StorageNotWritable

FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
NOT_WRITABLE = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EPERM: "operation not permitted"}


def user() -> str:
    uid = os.getuid()
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def remedy(code: int | None, root: object) -> str:
    """What the operator does about an OSError numbered `code` under the storage root."""
    if code in FULL:
        return "free space or grow the volume"
    if code == errno.EROFS:
        return f"mount {root} read-write"
    if code in NOT_WRITABLE:
        return f"make {root} writable by that user (chown {os.getuid()} {root})"
    return "fix it"


def translate(exc: BaseException, root: object) -> BaseException:
    """The storage error for an OSError under the storage root `root`, else `exc` itself."""
    if not isinstance(exc, OSError) or exc.errno is None:
        return exc
    if exc.errno in FULL:
        return StorageFull(f"storage is full ({FULL[exc.errno]}) under {root}: "
                           f"{remedy(exc.errno, root)}; what is stored is unharmed and an "
                           "upload cut short can be resumed")
    if exc.errno in NOT_WRITABLE:
        where = exc.filename or root
        return StorageNotWritable(
            f"storage cannot be written ({NOT_WRITABLE[exc.errno]}) at {where} as {user()}: "
            f"{remedy(exc.errno, root)}")
    return exc
