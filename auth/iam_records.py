"""The IAM records the identity directory keeps, and the small protocol through which it reads
and writes them (`storage.iam.IamStore` satisfies it)::

    users/<name>       {"passwordHash", "groups": [...], "policies": {name: text},
                        "accessKeys": [id, ...], "createdAt", "tokenGeneration",
                        "disabled"?}
    groups/<name>      {"policies": {name: text}, "createdAt"}
    access-keys/<id>   {"user", "secret": <sealed under the id>, "status", "createdAt"}

A user record is the authority on its groups and its access keys, and holds the generation of its
credentials: refresh and authorization tokens name the generation they were minted under, and
whatever changes the user's credentials gives it a new one (`new_generation`). The checks on what
goes into the records live here too."""

from __future__ import annotations

import functools
import re
import secrets
from typing import Any, Protocol

from auth.identity_errors import InvalidInput, MalformedPolicy, UnknownGroup, UnknownUser
from auth.policy import Policy, PolicyInvalid
from storage.content.names import check_name as check_repository_name
from storage.errors import NameInvalid

USERS, GROUPS, ACCESS_KEYS = "users", "groups", "access-keys"
NAME = re.compile(r"[A-Za-z0-9+=,.@_-]{1,64}")  # IAM user and group names
POLICY_NAME = re.compile(r"[A-Za-z0-9+=,.@_-]{1,128}")
_PAGE = 1000


class IamRecords(Protocol):
    async def get(self, kind: str, name: str) -> dict[str, Any] | None: ...
    async def put(self, kind: str, name: str, record: dict[str, Any]) -> None: ...
    async def create(self, kind: str, name: str, record: dict[str, Any]) -> bool: ...
    async def delete(self, kind: str, name: str) -> bool: ...
    async def names(self, kind: str, last: str | None = None, limit: int = 1000) -> list[str]: ...
    async def repository_policy(self, repository: str) -> str | None: ...
    async def set_repository_policy(self, repository: str, text: str | None) -> None: ...
    async def registry_policy(self) -> str | None: ...
    async def set_registry_policy(self, text: str | None) -> None: ...


def check_name(name: str, what: str = "user") -> str:
    if not NAME.fullmatch(name):
        raise InvalidInput(f"invalid {what} name {name[:80]!r}: use 1-64 letters, digits "
                           "and +=,.@_-")
    return name


def check_policy_name(name: str) -> str:
    if not POLICY_NAME.fullmatch(name):
        raise InvalidInput(f"invalid policy name {name[:130]!r}: use 1-128 letters, digits "
                           "and +=,.@_-")
    return name


def check_repository(name: str) -> str:
    try:
        return check_repository_name(name)
    except NameInvalid as exc:
        raise InvalidInput(exc.message) from None


def check_policy(text: str, resource_policy: bool) -> str:
    try:
        parse_policy(text, resource_policy)
    except PolicyInvalid as exc:
        raise MalformedPolicy(str(exc)) from None
    return text


def stored_policy(text: str, resource_policy: bool) -> Policy:
    """A stored policy that no longer parses fails the request rather than being skipped: a
    skipped Deny would allow what it denies."""
    try:
        return parse_policy(text, resource_policy)
    except PolicyInvalid as exc:
        raise PolicyInvalid(f"a stored policy no longer parses: {exc}") from None


@functools.lru_cache(maxsize=1024)
def parse_policy(text: str, resource_policy: bool) -> Policy:
    """Parsing is a pure function of the text, so parsed policies are shared."""
    return Policy.parse(text, resource_policy=resource_policy)


def new_generation() -> str:
    """A user's next credential generation: random, so no earlier one (not even a removed
    namesake's) can come back."""
    return secrets.token_urlsafe(16)


async def lookup(records: IamRecords, kind: str, name: str) -> dict[str, Any] | None:
    """A user or group record; None also for names that cannot exist (callers' input)."""
    return await records.get(kind, name) if NAME.fullmatch(name) else None


async def require(records: IamRecords, kind: str, name: str) -> dict[str, Any]:
    """A user or group record that must exist."""
    what = "user" if kind == USERS else "group"
    record = await records.get(kind, check_name(name, what))
    if record is None:
        raise (UnknownUser if kind == USERS else UnknownGroup)(f"no {what} named {name!r}")
    return record


async def all_names(records: IamRecords, kind: str) -> list[str]:
    names: list[str] = []
    while True:
        page = await records.names(kind, names[-1] if names else None, _PAGE)
        names.extend(page)
        if len(page) < _PAGE:
            return names
