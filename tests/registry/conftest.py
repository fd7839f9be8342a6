"""Protocol-test fixtures: a client that refuses 5xx answers and a server-log check per test."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from tests.conftest import LiveRegistry

_SERVER_ERROR_LINE = re.compile(r'HTTP/1\.[01]" 5\d\d\b')


def _no_server_error(response: httpx.Response) -> None:
    if response.status_code >= 500:
        response.read()
        raise AssertionError(
            f"server error {response.status_code} for {response.request.method} "
            f"{response.request.url}: {response.text[:1000]!r}"
        )


def _summarise(log: str) -> str:
    """Each traceback reduced to the log line before it and its final exception line."""
    lines = log.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            out.append(lines[i - 1] if i else "")
            end = i + 1
            while end < len(lines) and lines[end].startswith((" ", "\t")):
                end += 1
            if end < len(lines):
                out.append(f"  -> {lines[end]}")
    return "\n".join(out[:40])


@pytest.fixture
def client(registry_server: LiveRegistry) -> Iterator[httpx.Client]:
    """Like the shared `client`, but any 5xx response fails the test immediately."""
    with httpx.Client(base_url=registry_server.url, timeout=60, follow_redirects=True,
                      event_hooks={"response": [_no_server_error]}) as c:
        yield c


@pytest.fixture(autouse=True)
def server_log_clean(registry_server: LiveRegistry) -> Iterator[None]:
    """Fail a test whose requests made the shared server log a traceback or a 5xx."""
    before = len(registry_server.log())
    yield
    new = registry_server.log()[before:]
    if "Traceback" in new:
        pytest.fail("server logged a traceback:\n" + _summarise(new), pytrace=False)
    bad = [line for line in new.splitlines() if _SERVER_ERROR_LINE.search(line)]
    if bad:
        pytest.fail("server answered 5xx:\n" + "\n".join(bad[:20]), pytrace=False)
