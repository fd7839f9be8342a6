"""Fixtures for the shared driver suite: every test in `test_driver.py` runs once per driver.

Adding a driver is one entry in `DRIVER_FACTORIES`. A factory is a coroutine that receives the
test's `pytest.FixtureRequest`, so it can pull whatever it needs from other fixtures
(`tmp_path` for the filesystem; for S3 the session's endpoint, moto or RGW, one bucket there
for the suite and a fresh prefix per test) and may await set-up on the test's event loop.

There is no async pytest plugin: `async def` tests in this folder run through
`pytest_pyfunc_call` below on the same `asyncio.Runner` that created the driver, because a
driver may bind loop-affine objects (semaphores, HTTP sessions) when it is created.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.drivers import Driver
from storage.drivers.filesystem import FilesystemDriver
from tests.conftest import S3_BACKENDS, s3_endpoint

DriverFactory = Callable[[pytest.FixtureRequest], Coroutine[Any, Any, Driver]]
KnownBug = Callable[[str, str], None]

# Generous: the slowest test streams a few MiB; a deadlocked driver should fail, not hang.
ASYNC_TEST_TIMEOUT = 120.0


async def filesystem_driver(request: pytest.FixtureRequest) -> Driver:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return FilesystemDriver(tmp_path / "filesystem")


async def filesystem_threads_driver(request: pytest.FixtureRequest) -> Driver:
    """Every call on the threads: the path small reads take when the kernel cannot promise to
    answer from memory (`storage/drivers/nowait.py`)."""
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return FilesystemDriver(tmp_path / "filesystem", loop_reads=False)


S3_PART_SIZE = 5 * 1024 * 1024  # S3's minimum: parts fill with MB-sized test data


@pytest.fixture(scope="session")
def s3_buckets() -> dict[str, str]:
    """The suite's bucket on each S3 endpoint, by URL, made when first needed."""
    return {}


def s3_options(request: pytest.FixtureRequest, backend: str = "s3") -> dict[str, Any]:
    """S3Driver arguments for a fresh, empty prefix in the suite's bucket on the endpoint of
    `backend` (one bucket per endpoint for the whole session)."""
    endpoint = s3_endpoint(backend, request)
    buckets: dict[str, str] = request.getfixturevalue("s3_buckets")
    if endpoint.url not in buckets:
        buckets[endpoint.url] = endpoint.create_bucket()
    return {
        "bucket": buckets[endpoint.url],
        "prefix": f"t-{uuid.uuid4().hex[:16]}",
        "endpoint_url": endpoint.url,
        "region": endpoint.region,
        "addressing_style": "path",
        "part_size": S3_PART_SIZE,
        "access_key_id": endpoint.access_key_id,
        "secret_access_key": endpoint.secret_access_key,
    }


def s3_driver(backend: str) -> DriverFactory:
    async def make(request: pytest.FixtureRequest) -> Driver:
        from storage.drivers.s3 import S3Driver

        return S3Driver(**s3_options(request, backend))

    return make


DRIVER_FACTORIES: dict[str, DriverFactory] = {
    "filesystem": filesystem_driver,
    "filesystem-threads": filesystem_threads_driver,
    **{backend: s3_driver(backend) for backend in S3_BACKENDS},
}


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    """One event loop per test, shared by the driver fixture and the async test body."""
    with asyncio.Runner() as loop_runner:
        yield loop_runner


@pytest.fixture(params=sorted(DRIVER_FACTORIES))
def driver(request: pytest.FixtureRequest, runner: asyncio.Runner) -> Iterator[Driver]:
    instance = runner.run(DRIVER_FACTORIES[request.param](request))
    try:
        yield instance
    finally:
        runner.run(instance.close())


@pytest.fixture
def known_bug(request: pytest.FixtureRequest, driver: Driver) -> KnownBug:
    """`known_bug("filesystem", "why")` marks the running test a strict xfail for that driver
    only, so a bug in one driver does not turn into an unexpected pass for the others."""

    def mark(driver_name: str, reason: str) -> None:
        if driver.name == driver_name:
            request.applymarker(pytest.mark.xfail(reason=reason, strict=True))

    return mark


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run `async def` tests of this folder on the test's runner, with a timeout."""
    test = pyfuncitem.obj
    if not inspect.iscoroutinefunction(test):
        return None
    names = inspect.signature(test).parameters
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    loop_runner = pyfuncitem.funcargs.get("runner")
    if isinstance(loop_runner, asyncio.Runner):
        loop_runner.run(asyncio.wait_for(test(**kwargs), ASYNC_TEST_TIMEOUT))
    else:
        with asyncio.Runner() as fresh:
            fresh.run(asyncio.wait_for(test(**kwargs), ASYNC_TEST_TIMEOUT))
    return True
