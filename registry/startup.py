"""Checks made before the server binds its port: what would otherwise surface as a traceback,
or as a server that starts "ready" and then fails every write, is one line on stderr.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from registry.settings import Settings
from storage.drivers import fs_errors


def storage_problem(settings: Settings) -> str | None:
    """Why the storage cannot be used, in one line naming the path and the user; None when it
    can. For the filesystem: the data directory is made if missing, and a small file is written
    and removed in it. S3 is reached only once the app starts (its client reports there)."""
    if settings.storage.driver != "filesystem":
        return None
    root = Path(settings.storage.filesystem.root).absolute()
    who = fs_errors.user()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return f"cannot use {root} as the data directory: it is not a directory"
    except NotADirectoryError:
        return f"cannot create the data directory {root}: a part of that path is a file"
    except OSError as exc:
        return f"cannot create the data directory {root} as {who}: {_reason(exc)}"
    if not root.is_dir():
        return f"cannot use {root} as the data directory: it is not a directory"
    probe = root / f".write-probe-{socket.gethostname()}-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        return (f"cannot write to the data directory {root} as {who}: {_reason(exc)}; "
                f"{fs_errors.remedy(exc.errno, root)}")
    return None


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno).lower() if exc.errno else str(exc)
