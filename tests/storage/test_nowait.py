"""Small filesystem reads answered on the event loop (`storage/drivers/nowait.py`).

What a user depends on: the answer is exactly what is on disk now (a tag moved by another
process is seen by the very next read), a read the kernel cannot promise from memory still
works (through the threads), and reads that can be answered at once do not wait for a thread.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from storage.drivers.filesystem import FilesystemDriver
from storage.drivers.nowait import MAX_SIZE, NoWait, filesystem_type
from storage.errors import DriverError, KeyNotFound

T = TypeVar("T")


def without_suspending(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that must finish without ever waiting (no thread, no I/O wait): fails
    if it suspends."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the call waited (went to a thread)")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    if not NoWait(tmp_path).enabled:
        pytest.skip(f"no loop reads here: {NoWait(tmp_path).reason}")
    return tmp_path / "data"


def test_a_cached_small_read_and_stat_do_not_wait_for_a_thread(root: Path) -> None:
    async def main() -> None:
        driver = FilesystemDriver(root)
        await driver.put("repo/_tags/latest", b"sha256:" + b"a" * 64)
        await driver.get("repo/_tags/latest")  # by the thread, if not yet in memory
        assert without_suspending(driver.get("repo/_tags/latest")) == b"sha256:" + b"a" * 64
        assert without_suspending(driver.stat("repo/_tags/latest")).size == 71
        assert without_suspending(driver.exists("repo/_tags/latest")) is True
        await driver.close()

    asyncio.run(main())


def test_a_tag_moved_by_another_process_is_read_at_once(root: Path) -> None:
    """Nothing is cached: each read is the file as it is now, across processes sharing it."""
    async def main() -> None:
        driver = FilesystemDriver(root)
        await driver.put("repo/_tags/v1", b"old")
        await driver.get("repo/_tags/v1")
        for n in range(5):
            new = f"new-{n}".encode()
            # another registry process publishes as the driver does: a new file renamed in
            subprocess.run([sys.executable, "-c", (
                "import os,sys; p=sys.argv[1]; open(p+'.t','wb').write(sys.argv[2].encode());"
                " os.replace(p+'.t', p)"), str(root / "repo/_tags/v1"), new.decode()],
                check=True)
            assert await driver.get("repo/_tags/v1") == new
        os.unlink(root / "repo/_tags/v1")
        with pytest.raises(KeyNotFound):
            await driver.get("repo/_tags/v1")
        assert not await driver.exists("repo/_tags/v1")
        await driver.close()

    asyncio.run(main())


def test_what_the_loop_cannot_answer_is_still_answered(root: Path) -> None:
    """Large files, folders, missing keys and a max_size smaller than the file behave exactly
    as they do on the threads."""
    async def main() -> None:
        driver = FilesystemDriver(root)
        big = os.urandom(MAX_SIZE + 1)
        await driver.put("big", big)
        assert await driver.get("big") == big
        assert (await driver.stat("big")).size == len(big)
        await driver.put("folder/inside", b"x")
        with pytest.raises(KeyNotFound):
            await driver.get("folder")
        with pytest.raises(KeyNotFound):
            await driver.stat("folder")
        assert not await driver.exists("folder")
        with pytest.raises(KeyNotFound):
            await driver.get("never/written")
        with pytest.raises(DriverError):
            await driver.get("folder/inside", max_size=0)
        assert await driver.get("folder/inside", max_size=1) == b"x"
        await driver.close()

    asyncio.run(main())


def test_a_path_the_kernel_has_not_looked_up_is_left_to_the_threads(root: Path) -> None:
    nowait = NoWait(root.parent)
    (root / "a").mkdir(parents=True)
    (root / "a" / "f").write_bytes(b"hello")
    # never resolved by name: no entry, not even a negative one, in the lookup cache
    assert nowait.read(f"{root}/a/never-looked-up/f") is None
    assert nowait.read(f"{root}/a/f") == b"hello"


def test_network_and_unknown_filesystems_use_the_threads(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:35 / /srv/registry rw,relatime shared:20 - nfs4 server:/export rw,vers=4.2\n"
        "41 22 0:36 / /srv/with\\040space rw shared:21 - tmpfs tmpfs rw\n")
    assert filesystem_type(Path("/srv/registry/data"), mountinfo) == "nfs4"
    assert filesystem_type(Path("/srv/registryx"), mountinfo) == "ext4"
    assert filesystem_type(Path("/srv/with space/d"), mountinfo) == "tmpfs"
    assert filesystem_type(Path("/srv"), tmp_path / "absent") is None


def test_a_blob_in_memory_streams_without_waiting_for_a_thread(root: Path) -> None:
    """Chunks the page cache holds are copied on the loop; what it does not hold (here: a
    range past the end) still ends the stream as the threads would."""
    async def main() -> None:
        driver = FilesystemDriver(root)
        data = os.urandom(3 * 1024 * 1024 + 5)
        await driver.put("blob", data)
        assert b"".join([c async for c in driver.read("blob")]) == data  # now in memory
        stream = driver.read("blob", 10, 2 * 1024 * 1024 + 10)
        first = without_suspending(stream.__anext__())
        assert first == data[10:10 + 1024 * 1024]
        rest = b"".join([c async for c in stream])
        assert first + rest == data[10:2 * 1024 * 1024 + 10]
        assert [c async for c in driver.read("blob", len(data), len(data))] == []
        with pytest.raises(KeyNotFound):
            [c async for c in driver.read("folder-or-nothing")]
        await driver.close()

    asyncio.run(main())
