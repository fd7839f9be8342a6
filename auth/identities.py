"""The identity directory: users, groups, access keys and the policies attached to them, kept
as IAM records in the storage backend (`auth/iam_records.py` draws them) so that every replica
sees the same identities.

Everything is checked before anything is written, so a refused change leaves the stored state
as it was. Passwords and secrets never appear in reprs, logs or error messages. Updates are
read-modify-write of one record: the backend has no compare-and-swap, so two administrators
changing the same user at the same moment can lose one change.

Every user record holds a credential generation (`new_generation`): refresh and authorization
tokens carry the one they were minted under and are refused once it differs. It changes with the
user's credentials (a new password, an access key deleted or deactivated, the user disabled) and
on `revoke_tokens`; a user removed and added again starts with a new one."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from auth.access_keys import MAX_ACCESS_KEYS, AccessKey, AccessKeys, KeyOwner, NewAccessKey
from auth.iam_records import (
    ACCESS_KEYS,
    GROUPS,
    USERS,
    IamRecords,
    all_names,
    check_name,
    check_policy,
    check_policy_name,
    check_repository,
    lookup,
    new_generation,
    require,
    stored_policy,
)
from auth.identity_errors import (
    EntityExists,
    GroupExists,
    IdentityError,
    InvalidInput,
    LimitExceeded,
    MalformedPolicy,
    NoSuchEntity,
    SecretsUnavailable,
    UnknownAccessKey,
    UnknownGroup,
    UnknownPolicy,
    UnknownUser,
    UserExists,
)
from auth.policy import Policy
from auth.secrets import SecretBox, hash_password, verify_or_burn

__all__ = [
    "MAX_ACCESS_KEYS", "AccessKey", "Directory", "EntityExists", "Group", "GroupExists",
    "IamRecords", "IdentityError", "InvalidInput", "KeyOwner", "LimitExceeded",
    "MalformedPolicy", "NewAccessKey", "NoSuchEntity", "SecretsUnavailable", "UnknownAccessKey",
    "UnknownGroup", "UnknownPolicy", "UnknownUser", "User", "UserExists", "check_name",
]

MAX_GROUPS_PER_USER = 10  # as IAM
MAX_PASSWORD = 1024
MAX_RECORD = 48 * 1024  # attached policies must leave a record well inside storage's 64 KiB


@dataclass(frozen=True, slots=True)
class User:
    name: str
    password_hash: str = field(repr=False)
    groups: tuple[str, ...]
    policies: tuple[str, ...]  # attached policy texts, in the order of their names
    created_at: float
    token_generation: str = ""  # records from before generations existed have none
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    policies: tuple[str, ...]
    created_at: float


class Directory:
    def __init__(self, records: IamRecords, box: SecretBox | None = None) -> None:
        self.records = records
        self.keys = AccessKeys(records, box)  # box None: no secret key, no access keys

    # -- users ---------------------------------------------------------------------------------

    async def add_user(self, name: str, password: str) -> User:
        check_name(name)
        encoded = await asyncio.to_thread(hash_password, _check_password(password))
        record = {"passwordHash": encoded, "groups": [], "policies": {}, "accessKeys": [],
                  "createdAt": time.time(), "tokenGeneration": new_generation()}
        if not await self.records.create(USERS, name, record):
            raise UserExists(f"user {name!r} already exists")
        return _user(name, record)

    async def remove_user(self, name: str) -> None:
        """Removes the user, then its access keys (the user's removal alone disables them)."""
        record = await require(self.records, USERS, name)
        await self.records.delete(USERS, name)
        for key_id in record.get("accessKeys", []):
            await self.records.delete(ACCESS_KEYS, key_id)

    async def list_users(self) -> list[str]:
        return await all_names(self.records, USERS)

    async def set_password(self, name: str, password: str) -> None:
        await require(self.records, USERS, name)
        encoded = await asyncio.to_thread(hash_password, _check_password(password))
        record = await require(self.records, USERS, name)  # fresh, after 100 ms of scrypt
        record["passwordHash"] = encoded
        record["tokenGeneration"] = new_generation()
        await self.records.put(USERS, name, record)

    async def revoke_tokens(self, name: str) -> None:
        """Ends every refresh and authorization token the user holds; credentials stay."""
        record = await require(self.records, USERS, name)
        record["tokenGeneration"] = new_generation()
        await self.records.put(USERS, name, record)

    async def set_user_enabled(self, name: str, enabled: bool) -> None:
        """A disabled user authenticates with nothing (password, access key or token) until
        enabled again; the tokens it held stay dead."""
        record = await require(self.records, USERS, name)
        record["disabled"] = not enabled
        if not enabled:
            record["tokenGeneration"] = new_generation()
        await self.records.put(USERS, name, record)

    async def get_user(self, name: str) -> User | None:
        record = await lookup(self.records, USERS, name)
        return None if record is None else _user(name, record)

    async def authenticate(self, name: str, password: str) -> User | None:
        """The user if the password is right and the user enabled; an unknown or disabled user
        costs the same scrypt, so neither answer nor timing tells them apart."""
        user = await self.get_user(name)
        encoded = user.password_hash if user is not None else None
        right = await asyncio.to_thread(verify_or_burn, password, encoded)
        return user if right and user is not None and not user.disabled else None

    # -- groups --------------------------------------------------------------------------------

    async def add_group(self, name: str) -> None:
        check_name(name, "group")
        if not await self.records.create(GROUPS, name, {"policies": {},
                                                        "createdAt": time.time()}):
            raise GroupExists(f"group {name!r} already exists")

    async def remove_group(self, name: str) -> None:
        """Takes the members out first, so a crash never leaves members of a removed group
        for a new group of the same name to inherit."""
        await require(self.records, GROUPS, name)
        for user in await self.group_members(name):
            record = await self.records.get(USERS, user)
            if record is not None:
                record["groups"] = [g for g in record.get("groups", []) if g != name]
                await self.records.put(USERS, user, record)
        await self.records.delete(GROUPS, name)

    async def list_groups(self) -> list[str]:
        return await all_names(self.records, GROUPS)

    async def get_group(self, name: str) -> Group | None:
        record = await lookup(self.records, GROUPS, name)
        if record is None:
            return None
        return Group(name, _texts(record), float(record.get("createdAt", 0.0)))

    async def group_members(self, group: str) -> list[str]:
        """Reads every user record: membership is kept with the user."""
        check_name(group, "group")
        members = []
        for user in await self.list_users():
            record = await self.records.get(USERS, user)
            if record is not None and group in record.get("groups", []):
                members.append(user)
        return members

    async def add_member(self, group: str, user: str) -> None:
        await require(self.records, GROUPS, group)
        record = await require(self.records, USERS, user)
        groups = list(record.get("groups", []))
        if group in groups:
            return
        if len(groups) >= MAX_GROUPS_PER_USER:
            raise LimitExceeded(f"user {user!r} is already in {MAX_GROUPS_PER_USER} groups")
        record["groups"] = sorted([*groups, group])
        await self.records.put(USERS, user, record)

    async def remove_member(self, group: str, user: str) -> None:
        check_name(group, "group")
        record = await require(self.records, USERS, user)
        groups = list(record.get("groups", []))
        if group not in groups:
            raise NoSuchEntity(f"user {user!r} is not in group {group!r}")
        record["groups"] = [g for g in groups if g != group]
        await self.records.put(USERS, user, record)

    # -- access keys ---------------------------------------------------------------------------

    async def create_access_key(self, user: str) -> NewAccessKey:
        """A new key and its secret: the only time the secret is shown."""
        return await self.keys.create(user)

    async def delete_access_key(self, key_id: str) -> None:
        await self.keys.delete(key_id)

    async def set_access_key_status(self, key_id: str, active: bool) -> None:
        await self.keys.set_status(key_id, active)

    async def list_access_keys(self, user: str) -> list[AccessKey]:
        return await self.keys.of_user(user)

    async def lookup_access_key(self, key_id: str) -> KeyOwner | None:
        """The owner and secret of an active key; None for unknown or inactive keys."""
        return await self.keys.lookup(key_id)

    # -- policies ------------------------------------------------------------------------------

    async def attach_user_policy(self, user: str, policy_text: str, name: str) -> None:
        await self._attach(USERS, user, policy_text, name)

    async def detach_user_policy(self, user: str, name: str) -> None:
        await self._detach(USERS, user, name)

    async def attach_group_policy(self, group: str, policy_text: str, name: str) -> None:
        await self._attach(GROUPS, group, policy_text, name)

    async def detach_group_policy(self, group: str, name: str) -> None:
        await self._detach(GROUPS, group, name)

    async def user_policies(self, user: str) -> dict[str, str]:
        return dict((await require(self.records, USERS, user)).get("policies", {}))

    async def group_policies(self, group: str) -> dict[str, str]:
        return dict((await require(self.records, GROUPS, group)).get("policies", {}))

    async def identity_policies(self, user: str) -> list[Policy]:
        """The user's policies and its groups'; none for unknown users or removed groups."""
        record = await lookup(self.records, USERS, user)
        if record is None:
            return []
        policies = [stored_policy(text, False) for text in _texts(record)]
        for group in record.get("groups", []):
            group_record = await lookup(self.records, GROUPS, group)
            if group_record is not None:
                policies.extend(stored_policy(text, False) for text in _texts(group_record))
        return policies

    async def set_repository_policy(self, repository: str, policy_text: str) -> None:
        check_policy(policy_text, resource_policy=True)
        await self.records.set_repository_policy(check_repository(repository), policy_text)

    async def delete_repository_policy(self, repository: str) -> None:
        if await self.records.repository_policy(check_repository(repository)) is None:
            raise UnknownPolicy(f"repository {repository!r} has no policy")
        await self.records.set_repository_policy(repository, None)

    async def repository_policy(self, repository: str) -> Policy | None:
        text = await self.records.repository_policy(repository)
        return None if text is None else stored_policy(text, True)

    async def set_registry_policy(self, policy_text: str | None) -> None:
        """The policy for every repository (None removes it)."""
        if policy_text is not None:
            check_policy(policy_text, resource_policy=True)
        await self.records.set_registry_policy(policy_text)

    async def registry_policy(self) -> Policy | None:
        text = await self.records.registry_policy()
        return None if text is None else stored_policy(text, True)

    async def _attach(self, kind: str, owner: str, text: str, name: str) -> None:
        check_policy_name(name)
        check_policy(text, resource_policy=False)
        record = await require(self.records, kind, owner)
        record["policies"] = {**record.get("policies", {}), name: text}
        if len(json.dumps(record)) > MAX_RECORD:
            raise LimitExceeded(f"the policies of {kind[:-1]} {owner!r} would exceed "
                                f"{MAX_RECORD} bytes together")
        await self.records.put(kind, owner, record)

    async def _detach(self, kind: str, owner: str, name: str) -> None:
        record = await require(self.records, kind, owner)
        policies = dict(record.get("policies", {}))
        if policies.pop(name, None) is None:
            raise UnknownPolicy(f"{kind[:-1]} {owner!r} has no policy named {name[:130]!r}")
        record["policies"] = policies
        await self.records.put(kind, owner, record)


def _user(name: str, record: dict[str, Any]) -> User:
    return User(name, str(record.get("passwordHash", "")), tuple(record.get("groups", ())),
                _texts(record), float(record.get("createdAt", 0.0)),
                str(record.get("tokenGeneration", "")), bool(record.get("disabled", False)))


def _texts(record: dict[str, Any]) -> tuple[str, ...]:
    return tuple(text for _, text in sorted(record.get("policies", {}).items()))


def _check_password(password: str) -> str:
    if not password:
        raise InvalidInput("the password must not be empty")
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"the password must be at most {MAX_PASSWORD} characters")
    return password
