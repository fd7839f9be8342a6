"""The storage layer's thread boundary (`storage.drivers.threads.Threads`)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from storage.drivers.filesystem import FilesystemDriver
from storage.drivers.threads import Threads


async def test_result_and_the_thread_it_ran_on() -> None:
    threads = Threads(4, "t")
    try:
        name = await threads.run(lambda: threading.current_thread().name)
        assert name.startswith("t_") and name != threading.current_thread().name
        assert await threads.run(divmod, 17, 5) == (3, 2)
    finally:
        threads.close()


async def test_exceptions_reach_the_caller() -> None:
    threads = Threads(2, "t")
    try:
        with pytest.raises(FileNotFoundError):
            await threads.run(open, "/nonexistent/file")

        def stop() -> None:
            raise StopIteration  # a future cannot hold one: it must not hang the caller

        with pytest.raises(RuntimeError, match="StopIteration"):
            await threads.run(stop)
        assert await threads.run(len, "after") == 5  # the thread survived both
    finally:
        threads.close()


async def test_calls_run_in_parallel_up_to_max_threads() -> None:
    threads = Threads(3, "t")
    lock = threading.Lock()
    running = peak = 0

    def hold() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(threads.run(hold) for _ in range(9)))
        elapsed = time.perf_counter() - started
        assert peak == 3  # all three threads used, never a fourth
        assert len(threads._threads) == 3
        assert elapsed >= 0.15  # nine calls of 50 ms on three threads: three rounds at least
    finally:
        threads.close()


async def test_idle_threads_are_reused() -> None:
    threads = Threads(8, "t")
    try:
        for _ in range(50):
            await threads.run(time.sleep, 0)
        assert len(threads._threads) == 1
    finally:
        threads.close()


async def test_a_cancelled_caller_does_not_break_the_thread() -> None:
    threads = Threads(1, "t")
    release = threading.Event()
    finished = threading.Event()

    def slow() -> str:
        release.wait(5)
        finished.set()
        return "late"

    try:
        task = asyncio.ensure_future(threads.run(slow))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        assert await threads.run(lambda: "next") == "next"  # ran after slow() on the one thread
        assert finished.is_set()
    finally:
        threads.close()


async def test_close_cancels_calls_not_started() -> None:
    threads = Threads(1, "t")
    release = threading.Event()
    running = threads.run(release.wait, 5)
    queued = threads.run(lambda: "never")
    await asyncio.sleep(0.01)
    threads.close()
    release.set()
    assert await running is True  # the call in progress ends normally
    with pytest.raises(asyncio.CancelledError):
        await queued
    with pytest.raises(RuntimeError, match="closed"):
        threads.run(len, "x")
    for thread in threads._threads:
        thread.join(2)
        assert not thread.is_alive()


def test_max_threads_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Threads(0, "t")


async def test_filesystem_small_calls_do_not_queue_behind_blob_data(tmp_path: Path) -> None:
    """The filesystem driver's two lanes: with every data thread busy (here one, held), records
    are still read and written. Loop reads off: with them, a blob in the page cache needs no
    data thread at all (tests/storage/test_nowait.py)."""
    driver = FilesystemDriver(tmp_path, max_threads=1, metadata_threads=1, loop_reads=False)
    release = threading.Event()
    try:
        await driver.put("blobs/a", b"x" * 1000)
        held = driver._data.run(release.wait, 10)  # the only data thread
        reading = asyncio.ensure_future(driver.read("blobs/a").__anext__())
        await driver.put("records/r", b"{}")
        assert await asyncio.wait_for(driver.get("records/r"), 2) == b"{}"
        assert (await asyncio.wait_for(driver.stat("blobs/a"), 2)).size == 1000
        assert not reading.done()  # the blob read waits for the data thread
        release.set()
        assert await held is True
        assert await asyncio.wait_for(reading, 2) == b"x" * 1000
    finally:
        release.set()
        await driver.close()


async def test_settings_size_the_filesystem_lanes(tmp_path: Path) -> None:
    """`[storage.filesystem] metadata_threads` sizes the small-call lane, `storage.max_threads`
    the data lane (as the server builds its driver)."""
    from registry.app import build_driver
    from registry.settings import load_settings

    settings = load_settings(environ={"REGISTRY_STORAGE_FILESYSTEM_METADATA_THREADS": "2",
                                      "REGISTRY_STORAGE_MAX_THREADS": "5"},
                             overrides={"storage.filesystem.root": str(tmp_path)})
    driver = build_driver(settings)
    try:
        assert isinstance(driver, FilesystemDriver)
        assert (driver._small.max_threads, driver._data.max_threads) == (2, 5)
    finally:
        await driver.close()
