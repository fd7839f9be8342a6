"""Check registry, run context and assertion helpers.

A check is a function decorated with `@check(workflow, name)`. It fails by raising `Failed`
(or through soft `ctx.soft(...)` problems collected while it runs), is skipped by raising
`Skipped`, and passes otherwise. Checks hand values to later checks with `ctx.put(key, value)`
(declared in `provides=`); a later `ctx.get(key)` turns a missing value into a failure (or a
skip, when the providing check was skipped) naming the step it depended on. Shared setup is a
lazily run, cached `@fixture`; a failing fixture fails every check that needs it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from .client import RegistryClient, body_text

WORKFLOWS = ("pull", "push", "discovery", "management", "referrers")


class Failed(Exception):
    """The check (or a setup step) failed; the message is the reason."""


class Skipped(Exception):
    """The registry declined an optional feature; the message says which and how."""


CheckFunc = Callable[["Context"], None]
FixtureFunc = Callable[["Context"], Any]


@dataclass(frozen=True)
class Check:
    workflow: str
    name: str
    func: CheckFunc
    provides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    status: str  # "PASS", "FAIL" or "SKIP"
    reason: str = ""


CHECKS: list[Check] = []
FIXTURES: dict[str, FixtureFunc] = {}


def check(workflow: str, name: str, *,
          provides: tuple[str, ...] = ()) -> Callable[[CheckFunc], CheckFunc]:
    if workflow not in WORKFLOWS:
        raise ValueError(f"unknown workflow {workflow!r}")

    def register(func: CheckFunc) -> CheckFunc:
        if any(c.name == name for c in CHECKS):
            raise ValueError(f"duplicate check name {name!r}")
        CHECKS.append(Check(workflow, name, func, provides))
        return func

    return register


def fixture(name: str) -> Callable[[FixtureFunc], FixtureFunc]:
    def register(func: FixtureFunc) -> FixtureFunc:
        FIXTURES[name] = func
        return func

    return register


@dataclass
class Context:
    client: RegistryClient
    namespace: str
    crossmount: str
    values: dict[str, Any] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    providers: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    pushed_manifests: list[tuple[str, str]] = field(default_factory=list)
    pushed_blobs: list[tuple[str, str]] = field(default_factory=list)
    _fixtures: dict[str, Any] = field(default_factory=dict)
    _fixture_errors: dict[str, BaseException] = field(default_factory=dict)

    # ---- values handed between checks and fixtures ----

    def put(self, key: str, value: Any) -> None:
        self.values[key] = value

    def get(self, key: str) -> Any:
        if key in self.values:
            return self.values[key]
        provider = self.providers.get(key, key)
        outcome = self.outcomes.get(provider)
        if outcome is not None and outcome.status == "SKIP":
            raise Skipped(outcome.reason)
        if outcome is None:
            raise Failed(f"depends on step {provider!r}, which did not run")
        raise Failed(f"depends on step {provider!r}, which failed")

    def fixture(self, name: str) -> Any:
        if name in self._fixtures:
            return self._fixtures[name]
        if name not in self._fixture_errors:
            try:
                self._fixtures[name] = FIXTURES[name](self)
                return self._fixtures[name]
            except (Failed, Skipped, httpx.HTTPError) as exc:
                self._fixture_errors[name] = exc
        error = self._fixture_errors[name]
        if isinstance(error, Skipped):
            raise Skipped(str(error))
        raise Failed(f"setup step {name!r} failed: {describe(error)}")

    # ---- HTTP ----

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        return self.client.request(method, path_or_url, headers=headers, content=content)

    def location(self, resp: httpx.Response) -> str:
        """The response's Location header resolved against the request URL."""
        value = self.require_header(resp, "Location")
        return str(resp.url.join(value))

    # ---- assertions ----

    def soft(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return ok

    def expect_status(self, resp: httpx.Response, *codes: int) -> int:
        if resp.status_code not in codes:
            wanted = " or ".join(str(c) for c in codes)
            raise Failed(
                f"{resp.request.method} {resp.url.path}: expected status {wanted}, "
                f"got {resp.status_code}{error_suffix(resp)}"
            )
        return resp.status_code

    def require_header(self, resp: httpx.Response, name: str) -> str:
        value: str | None = resp.headers.get(name)
        if value is None:
            raise Failed(f"{resp.request.method} {resp.url.path}: header {name} missing")
        return value

    def expect_header(self, resp: httpx.Response, name: str, expected: str) -> None:
        value = resp.headers.get(name)
        where = f"{resp.request.method} {resp.url.path}"
        if value is None:
            self.problems.append(f"{where}: header {name} missing (expected {expected!r})")
        elif value.strip() != expected:
            self.problems.append(f"{where}: header {name} is {value!r}, expected {expected!r}")

    def expect_content_type(self, resp: httpx.Response, expected: str) -> None:
        value = resp.headers.get("Content-Type")
        base = (value or "").split(";")[0].strip().lower()
        if base != expected.lower():
            self.problems.append(
                f"{resp.request.method} {resp.url.path}: Content-Type is {value!r}, "
                f"expected {expected!r}"
            )

    def json_body(self, resp: httpx.Response) -> Any:
        try:
            return resp.json()
        except ValueError:
            raise Failed(f"{resp.request.method} {resp.url.path}: body is not JSON: "
                         f"{body_text(resp.content)!r}") from None


def describe(exc: BaseException) -> str:
    if isinstance(exc, (Failed, Skipped)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def error_codes(resp: httpx.Response) -> list[str]:
    """The `code`s of an OCI error body, or [] when the body is not one."""
    try:
        body = json.loads(resp.content)
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return []
    return [str(e["code"]) for e in errors
            if isinstance(e, dict) and isinstance(e.get("code"), str)]


def error_suffix(resp: httpx.Response) -> str:
    codes = error_codes(resp)
    if codes:
        return f" ({', '.join(codes)})"
    snippet = body_text(resp.content)
    return f" (body: {snippet[:120]})" if snippet else ""
