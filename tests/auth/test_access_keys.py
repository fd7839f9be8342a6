"""Access keys through the identity directory: IAM-shaped ids and secrets, sealed at rest,
at most two per user, and authoritative only while their user lists them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from auth.identities import (
    MAX_ACCESS_KEYS,
    Directory,
    LimitExceeded,
    SecretsUnavailable,
    UnknownAccessKey,
)
from auth.secrets import SecretBox, SecretKeyError, generate_secret_key
from tests.auth.directory_util import run, snapshot

KEY_ID = re.compile(r"AKIA[A-Z2-7]{16}")


def test_access_keys_look_like_iam_keys_and_are_sealed_at_rest(tmp_path: Path) -> None:
    async def body(d: Directory) -> tuple[str, str]:
        await d.add_user("alice", "pw")
        key_id, secret = await d.create_access_key("alice")
        assert KEY_ID.fullmatch(key_id)
        assert re.fullmatch(r"[A-Za-z0-9+/]{40}", secret)
        owner = await d.lookup_access_key(key_id)
        assert owner is not None and tuple(owner) == ("alice", secret)
        [listed] = await d.list_access_keys("alice")
        assert (listed.key_id, listed.user, listed.status) == (key_id, "alice", "Active")
        return key_id, secret

    key_id, secret = run(tmp_path, body)
    stored = snapshot(tmp_path)
    record = json.loads(stored[f"iam/access-keys/{key_id}"])
    assert record["user"] == "alice" and record["status"] == "Active"
    assert record["secret"].startswith("v1:")
    assert secret.encode() not in b"".join(stored.values())


def test_at_most_two_access_keys_per_user(tmp_path: Path) -> None:
    async def body(d: Directory) -> None:
        await d.add_user("alice", "pw")
        first = await d.create_access_key("alice")
        await d.create_access_key("alice")
        with pytest.raises(LimitExceeded, match=f"already has {MAX_ACCESS_KEYS} access keys"):
            await d.create_access_key("alice")
        assert len(await d.list_access_keys("alice")) == 2
        await d.delete_access_key(first.key_id)
        await d.create_access_key("alice")
        assert len(await d.list_access_keys("alice")) == 2

    run(tmp_path, body)


def test_inactive_and_deleted_keys_authenticate_nobody(tmp_path: Path) -> None:
    async def body(d: Directory) -> None:
        await d.add_user("alice", "pw")
        key = await d.create_access_key("alice")
        await d.set_access_key_status(key.key_id, active=False)
        assert await d.lookup_access_key(key.key_id) is None
        assert [k.status for k in await d.list_access_keys("alice")] == ["Inactive"]
        await d.set_access_key_status(key.key_id, active=True)
        assert await d.lookup_access_key(key.key_id) is not None
        await d.delete_access_key(key.key_id)
        assert await d.lookup_access_key(key.key_id) is None
        assert await d.list_access_keys("alice") == []
        with pytest.raises(UnknownAccessKey):
            await d.delete_access_key(key.key_id)
        for bogus in ("", "AKIA", "akia" + "A" * 16, "../../users/alice"):
            assert await d.lookup_access_key(bogus) is None

    run(tmp_path, body)


def test_a_key_left_from_a_removed_user_does_not_serve_a_new_user_of_that_name(
        tmp_path: Path) -> None:
    async def body(d: Directory) -> None:
        await d.add_user("alice", "pw")
        key = await d.create_access_key("alice")
        await d.records.delete("users", "alice")  # as if removal stopped halfway
        await d.add_user("alice", "pw2")
        assert await d.lookup_access_key(key.key_id) is None
        assert await d.list_access_keys("alice") == []

    run(tmp_path, body)


def test_access_keys_need_a_secret_key(tmp_path: Path) -> None:
    async def body(d: Directory) -> None:
        await d.add_user("alice", "pw")
        for call in (d.create_access_key("alice"), d.lookup_access_key("AKIA" + "A" * 16)):
            with pytest.raises(SecretsUnavailable, match=r"auth\.secret_key"):
                await call
        assert await d.list_access_keys("alice") == []

    run(tmp_path, body, box=None)


def test_a_different_secret_key_cannot_open_stored_secrets(tmp_path: Path) -> None:
    async def create(d: Directory) -> str:
        await d.add_user("alice", "pw")
        return (await d.create_access_key("alice")).key_id

    key_id = run(tmp_path, create)

    async def lookup(d: Directory) -> None:
        with pytest.raises(SecretKeyError, match=r"wrong auth\.secret_key"):
            await d.lookup_access_key(key_id)

    run(tmp_path, lookup, box=SecretBox(generate_secret_key()))


def test_secrets_stay_out_of_reprs(tmp_path: Path) -> None:
    async def body(d: Directory) -> None:
        await d.add_user("alice", "pw")
        key = await d.create_access_key("alice")
        owner = await d.lookup_access_key(key.key_id)
        assert key.secret not in repr(key) and key.secret not in str(key)
        assert key.secret not in repr(owner) and key.key_id in repr(key)
        assert key.secret not in repr([key, owner, d, d.keys])

    run(tmp_path, body)
