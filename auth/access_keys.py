"""Access keys, as AWS IAM has them: an id (`AKIA` + 16 base32 characters) and a 40-character
secret, at most two per user, each Active or Inactive. Secrets are stored sealed under
`auth.secret_key` with the key id as context, so one record's secret cannot be moved into
another; they never appear in reprs, logs or error messages.

The user record lists its keys and is the authority: a key record its user does not list (left
by a crash between the two writes, or by a user removed and created again) authenticates
nobody, nor does a disabled user's key. Deleting or deactivating a key gives its user a new
credential generation, which ends the authorization and refresh tokens minted through it (and
the user's others: a token does not record which credential bought it)."""

from __future__ import annotations

import base64
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from auth.iam_records import ACCESS_KEYS, USERS, IamRecords, new_generation, require
from auth.identity_errors import LimitExceeded, SecretsUnavailable, UnknownAccessKey
from auth.secrets import SecretBox

ACTIVE, INACTIVE = "Active", "Inactive"
MAX_ACCESS_KEYS = 2  # per user, as IAM
KEY_ID = re.compile(r"AKIA[A-Z2-7]{16}")


@dataclass(frozen=True, slots=True)
class AccessKey:
    key_id: str
    user: str
    status: str
    created_at: float


class NewAccessKey(NamedTuple):
    key_id: str
    secret: str

    def __repr__(self) -> str:
        return f"NewAccessKey(key_id={self.key_id!r}, secret=<hidden>)"


class KeyOwner(NamedTuple):
    user: str
    secret: str

    def __repr__(self) -> str:
        return f"KeyOwner(user={self.user!r}, secret=<hidden>)"


class AccessKeys:
    def __init__(self, records: IamRecords, box: SecretBox | None) -> None:
        self.records = records
        self.box = box  # None: no secret key configured, so keys can be neither made nor used

    async def create(self, user: str) -> NewAccessKey:
        box = self._box()
        record = await require(self.records, USERS, user)
        # Ids whose key record is gone (a lost concurrent update) do not count.
        keys = [k for k in record.get("accessKeys", [])
                if await self.records.get(ACCESS_KEYS, k) is not None]
        if len(keys) >= MAX_ACCESS_KEYS:
            raise LimitExceeded(f"user {user!r} already has {MAX_ACCESS_KEYS} access keys; "
                                "delete one first")
        secret = base64.b64encode(secrets.token_bytes(30)).decode()
        while True:
            key_id = "AKIA" + base64.b32encode(secrets.token_bytes(10)).decode()
            key = {"user": user, "secret": box.seal(secret.encode(), context=key_id),
                   "status": ACTIVE, "createdAt": time.time()}
            if await self.records.create(ACCESS_KEYS, key_id, key):
                break
        record["accessKeys"] = [*keys, key_id]
        await self.records.put(USERS, user, record)
        return NewAccessKey(key_id, secret)

    async def delete(self, key_id: str) -> None:
        """The owner's record first (new generation, key unlisted): a crash after it leaves a
        key record that authenticates nobody."""
        key = await self._key(key_id)
        await self._revoke(key["user"], drop=key_id)
        await self.records.delete(ACCESS_KEYS, key_id)

    async def set_status(self, key_id: str, active: bool) -> None:
        key = await self._key(key_id)
        key["status"] = ACTIVE if active else INACTIVE
        await self.records.put(ACCESS_KEYS, key_id, key)
        if not active:
            await self._revoke(key["user"])

    async def _revoke(self, user: str, drop: str | None = None) -> None:
        """A new credential generation for the key's owner (if it still exists)."""
        owner = await self.records.get(USERS, user)
        if owner is None:
            return
        owner["accessKeys"] = [k for k in owner.get("accessKeys", []) if k != drop]
        owner["tokenGeneration"] = new_generation()
        await self.records.put(USERS, user, owner)

    async def of_user(self, user: str) -> list[AccessKey]:
        keys = []
        for key_id in (await require(self.records, USERS, user)).get("accessKeys", []):
            key = await self.records.get(ACCESS_KEYS, key_id)
            if key is not None and key.get("user") == user:
                keys.append(AccessKey(key_id, user, str(key.get("status", ACTIVE)),
                                      float(key.get("createdAt", 0.0))))
        return keys

    async def lookup(self, key_id: str) -> KeyOwner | None:
        box = self._box()
        key = await self.records.get(ACCESS_KEYS, key_id) if KEY_ID.fullmatch(key_id) else None
        if key is None or key.get("status") != ACTIVE:
            return None
        owner = await self.records.get(USERS, key["user"])
        if owner is None or owner.get("disabled") or key_id not in owner.get("accessKeys", []):
            return None
        return KeyOwner(key["user"], box.open(key["secret"], context=key_id).decode())

    async def _key(self, key_id: str) -> dict[str, Any]:
        key = await self.records.get(ACCESS_KEYS, key_id) if KEY_ID.fullmatch(key_id) else None
        if key is None:
            raise UnknownAccessKey(f"no access key {key_id[:40]!r}")
        return key

    def _box(self) -> SecretBox:
        if self.box is None:
            raise SecretsUnavailable("access keys need a secret key to encrypt them: set "
                                     "auth.secret_key (or REGISTRY_AUTH_SECRET_KEY)")
        return self.box
