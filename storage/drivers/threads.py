"""The threads a driver runs its blocking calls on: the storage layer's one thread boundary.

`Threads.run(fn, *args)` returns an asyncio future of `fn(*args)` run on a worker thread.
It does what `loop.run_in_executor` on a `ThreadPoolExecutor` does, for less: the worker
hands the result straight to the asyncio future with `call_soon_threadsafe`, with no
`concurrent.futures.Future` (a lock and a condition per call) in between. Storage calls are
mostly a few microseconds of system call, so the hand-off is most of their cost: measured on
uvloop, 2 cores, an `os.stat` awaited one at a time cost 68 µs of CPU through the executor and
50 µs here; eight at once (`asyncio.gather`), 38 µs and 14 µs each.

Threads start when a call finds none idle, up to `max_threads`, and then stay. A call whose
awaiting task was cancelled still runs to its end (as with an executor); its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


class Threads:
    def __init__(self, max_threads: int, name: str,
                 translate: Callable[[BaseException], BaseException] | None = None) -> None:
        if max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        self.max_threads = max_threads
        self.name = name
        # The driver's table from its exceptions to storage errors, applied in the thread.
        self.translate = translate
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # one token per thread waiting for work
        self._threads: list[threading.Thread] = []
        self._numbers = itertools.count()
        self._closed = False

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._closed:
            raise RuntimeError(f"{self.name} threads are closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, fn, args))
        if not self._idle.acquire(blocking=False) and len(self._threads) < self.max_threads:
            thread = threading.Thread(target=self._work, daemon=True,
                                      name=f"{self.name}_{next(self._numbers)}")
            self._threads.append(thread)
            thread.start()
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            loop, future, fn, args = item
            result, exc = _outcome(fn, args)
            if exc is not None and self.translate is not None:
                exc = self.translate(exc)
            del item, fn, args
            # Idle before the caller hears of it: the caller's next call then finds this thread
            # instead of starting another one.
            self._idle.release()
            _call(loop, _settle, future, result, exc)
            del future, result, exc  # nothing held while waiting for more

    def close(self) -> None:
        """Calls not yet started are cancelled; threads end after the call they are in."""
        self._closed = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                loop, future, _, _ = item
                _call(loop, future.cancel)
        for _ in self._threads:
            self._queue.put(None)


def _outcome(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, BaseException | None]:
    try:
        return fn(*args), None
    except BaseException as exc:  # delivered to the awaiting task, like an executor
        return None, exc


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled
        return
    if exc is None:
        future.set_result(result)
    elif isinstance(exc, StopIteration):  # a future cannot carry one
        future.set_exception(RuntimeError(f"storage call raised {exc!r}"))
    else:
        future.set_exception(exc)


def _call(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
        loop.call_soon_threadsafe(fn, *args)
