"""Failed logins are throttled per (user, source address) and, more loosely, per source address,
for all of a server's workers together; nobody can lock out a user from elsewhere.

Found (issue 19, part 2): the throttle keyed on the user alone and on the address alone, so 200
wrong passwords for one user from one address locked that user out everywhere and every other
user out from that address (everyone behind one NAT or load balancer), and with `--workers 2`
each worker kept its own count. Clients here really come from different addresses: every
127.0.0.0/8 address is this host's, so an httpx client bound to 127.0.0.2 is another source
than one bound to 127.0.0.3, as far as the server can tell.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.auth.conftest import (
    SERVICE,
    add_user,
    auth_env,
    basic,
    in_parallel,
    start_auth_registry,
)
from tests.conftest import LiveRegistry, start_registry
from tests.test_workers import TWO, wait_for_workers

ATTACKER, ELSEWHERE = "127.0.0.2", "127.0.0.3"
LIMIT, ADDRESS_LIMIT, WINDOW = 3, 8, 120


def from_address(live: LiveRegistry, address: str) -> httpx.Client:
    """A client whose connections come from `address` (any of 127.0.0.0/8)."""
    return httpx.Client(base_url=live.url, timeout=30,
                        transport=httpx.HTTPTransport(local_address=address))


def error_codes(response: httpx.Response) -> list[str]:
    return [error["code"] for error in response.json()["errors"]]


def until_refused(client: httpx.Client, user: str, attempts: int) -> list[int]:
    """Wrong passwords for `user` until one is not a 401; the statuses."""
    statuses = []
    for attempt in range(attempts):
        statuses.append(client.get("/v2/", headers=basic(user, f"guess-{attempt}")).status_code)
        if statuses[-1] != 401:
            break
    return statuses


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    data_dir = tmp_path_factory.mktemp("throttle") / "data"
    in_parallel(*(lambda name=name: add_user(data_dir, name, f"{name}-pw")
                  for name in ("dave", "eve", "ivy", "kim", "lou")))
    registry = start_auth_registry(data_dir, login_failures=LIMIT,
                                   login_address_failures=ADDRESS_LIMIT, login_window=WINDOW)
    yield registry
    registry.stop()


def test_a_users_failures_lock_out_only_that_user_from_that_address(live: LiveRegistry) -> None:
    with from_address(live, ATTACKER) as attacker, from_address(live, ELSEWHERE) as elsewhere:
        # dave logged in from the attacker's address just before: the minute's cache of his
        # password does not wave him through the lockout of that pair.
        assert attacker.get("/v2/", headers=basic("dave", "dave-pw")).status_code == 200
        assert until_refused(attacker, "dave", 10) == [401] * LIMIT + [429]
        refusal = attacker.get("/v2/", headers=basic("dave", "guess"))
        assert error_codes(refusal) == ["TOOMANYREQUESTS"], refusal.text
        # One more failure is allowed every WINDOW / LIMIT seconds.
        assert 1 <= int(refusal.headers["retry-after"]) <= WINDOW // LIMIT + 1, refusal.headers

        # The pair is locked out: the right password too, on the registry and both grants...
        for response in (
                attacker.get("/v2/", headers=basic("dave", "dave-pw")),
                attacker.get("/token", params={"service": SERVICE},
                             headers=basic("dave", "dave-pw")),
                attacker.post("/token", data={"grant_type": "password", "username": "dave",
                                              "password": "dave-pw"})):
            assert response.status_code == 429, (response.request.url, response.text)
            assert int(response.headers["retry-after"]) >= 1
        # ...but dave from an address that has not been failing is not refused...
        assert elsewhere.get("/v2/", headers=basic("dave", "dave-pw")).status_code == 200
        # ...nor is another user from the attacker's own address (it failed 3 times, not 8).
        assert attacker.get("/v2/", headers=basic("eve", "eve-pw")).status_code == 200
        # Anonymous access needs no login.
        assert attacker.get("/token", params={"service": SERVICE}).status_code == 200
    assert "Traceback" not in live.log()


def test_an_address_spraying_user_names_is_refused_but_not_other_addresses(
        live: LiveRegistry) -> None:
    """Wrong passwords for many names (known and unknown alike) from one address use up the
    address's looser allowance; then nobody logs in from there, and everybody elsewhere."""
    spray = "127.0.0.4"
    with from_address(live, spray) as sprayer, from_address(live, ELSEWHERE) as elsewhere:
        statuses = [sprayer.get("/v2/", headers=basic(f"user{n}", "guess")).status_code
                    for n in range(ADDRESS_LIMIT + 2)]
        assert statuses == [401] * ADDRESS_LIMIT + [429] * 2, statuses
        assert sprayer.get("/v2/", headers=basic("kim", "kim-pw")).status_code == 429
        assert elsewhere.get("/v2/", headers=basic("kim", "kim-pw")).status_code == 200


def test_unknown_users_and_wrong_passwords_fail_alike(live: LiveRegistry) -> None:
    """Same status, body and headers, and the same time (scrypt is spent for unknown users,
    and the delay depends on the pair's failures, not on whether the user exists). Each
    attempt comes from an address of its own, so every one is a first failure."""
    answers: dict[str, list[httpx.Response]] = {"known": [], "unknown": []}
    times: dict[str, list[float]] = {"known": [], "unknown": []}
    for n in range(6):
        for kind, user in (("known", "lou"), ("unknown", "nobody-here")):
            with from_address(live, f"127.0.{10 + (kind == 'known')}.{n + 1}") as client:
                client.get("/token", params={"service": SERVICE})  # connect outside the timing
                started = time.perf_counter()
                answers[kind].append(client.get("/v2/", headers=basic(user, "wrong")))
                times[kind].append(time.perf_counter() - started)

    def shape(response: httpx.Response) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
        headers = sorted((k, v) for k, v in response.headers.items()
                         if k not in ("date", "x-request-id"))
        return response.status_code, response.content, tuple(headers)

    shapes = {shape(response) for kind in answers for response in answers[kind]}
    assert len(shapes) == 1 and next(iter(shapes))[0] == 401, shapes
    known, unknown = statistics.median(times["known"]), statistics.median(times["unknown"])
    assert 0.6 < known / unknown < 1.6, times


def test_a_client_cannot_choose_its_address_without_a_trusted_proxy(live: LiveRegistry) -> None:
    """`server.trusted_proxies` is empty by default: X-Forwarded-For is nobody's word, not even
    a local process's (uvicorn's own default believes 127.0.0.1)."""
    with from_address(live, "127.0.0.1") as client:
        statuses = [client.get("/v2/", headers={**basic("eve", f"guess-{n}"),
                                                 "X-Forwarded-For": f"10.0.0.{n}"}).status_code
                    for n in range(LIMIT + 1)]
        assert statuses == [401] * LIMIT + [429], statuses
        refused = client.get("/v2/", headers={**basic("eve", "eve-pw"),
                                              "X-Forwarded-For": "10.9.9.9"})
        assert refused.status_code == 429, refused.text


def test_behind_a_trusted_proxy_the_forwarded_client_counts(tmp_path: Path) -> None:
    """A load balancer named in `server.trusted_proxies`: the client it forwards for is the
    source, so users behind it do not share one lockout; a client that puts an address of its
    choosing in front of the chain gains nothing (the proxy appends the real one)."""
    data_dir = tmp_path / "data"
    add_user(data_dir, "dave", "dave-pw")
    proxy = "127.0.0.6"
    live = start_registry(data_dir, env={
        **auth_env(login_failures=LIMIT, login_window=WINDOW),
        "REGISTRY_SERVER_TRUSTED_PROXIES": f"{proxy}/32,192.0.2.0/24"})
    try:
        with from_address(live, proxy) as balancer:
            def login(password: str, forwarded: str) -> int:
                return balancer.get("/v2/", headers={**basic("dave", password),
                                                     "X-Forwarded-For": forwarded}).status_code

            assert [login("guess", "198.51.100.7") for _ in range(LIMIT + 1)] == (
                [401] * LIMIT + [429])
            assert login("dave-pw", "198.51.100.7") == 429
            assert login("dave-pw", "203.0.113.9") == 200
            # The attacker's own claim, then its real address as the proxies appended it.
            assert login("dave-pw", "203.0.113.9, 198.51.100.7") == 429
            assert login("dave-pw", "203.0.113.9, 198.51.100.7, 192.0.2.1") == 429
        # Straight from an untrusted address, the header is ignored.
        with from_address(live, "127.0.0.7") as direct:
            assert direct.get("/v2/", headers={**basic("dave", "dave-pw"),
                                               "X-Forwarded-For": "198.51.100.7"}
                              ).status_code == 200
    finally:
        live.stop()


def test_the_throttle_holds_for_all_workers_together(tmp_path: Path) -> None:
    """With `server.workers = 2` the failures are counted in the memory the workers share:
    guesses spread over both workers (a connection each) get the limit, not twice it."""
    data_dir = tmp_path / "data"
    add_user(data_dir, "dave", "dave-pw")
    live = start_registry(data_dir, env={**auth_env(login_failures=5, login_window=WINDOW),
                                         **TWO})
    try:
        wait_for_workers(live.process.pid, 2)
        statuses = [httpx.get(live.url + "/v2/", headers=basic("dave", f"guess-{n}"),
                              timeout=30).status_code for n in range(20)]
        assert statuses == [401] * 5 + [429] * 15, statuses
        assert "Traceback" not in live.log()
    finally:
        live.stop()
