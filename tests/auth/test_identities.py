"""The identity directory's users and groups, on a real filesystem-backed IAM store: refusals
leave the stored state as it was; unknown users cost the same scrypt as known ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import auth.identities as identities
from auth.identities import (
    Directory,
    GroupExists,
    InvalidInput,
    LimitExceeded,
    NoSuchEntity,
    UnknownGroup,
    UnknownUser,
    UserExists,
)
from auth.secrets import verify_or_burn
from tests.auth.directory_util import run, snapshot

# -- users -------------------------------------------------------------------------------------

def test_add_user_stores_a_scrypt_hash_and_authenticates(tmp_path: Path) -> None:
    async def body(d: Directory) -> None:
        await d.add_user("alice", "correct horse")
        user = await d.get_user("alice")
        assert user is not None and user.name == "alice"
        assert user.password_hash.startswith("scrypt$") and "correct" not in user.password_hash
        assert user.groups == () and user.policies == () and user.created_at > 0
        assert "scrypt" not in repr(user)
        assert await d.authenticate("alice", "correct horse") == user
        assert await d.authenticate("alice", "wrong") is None
        assert await d.list_users() == ["alice"]

    run(tmp_path, body)
    assert b"correct horse" not in b"".join(snapshot(tmp_path).values())


def test_duplicate_user_is_refused_and_keeps_the_first_password(tmp_path: Path) -> None:
    async def body(d: Directory) -> None:
        await d.add_user("alice", "first")
        with pytest.raises(UserExists, match="'alice' already exists"):
            await d.add_user("alice", "second")
        assert await d.authenticate("alice", "first") is not None
        assert await d.authenticate("alice", "second") is None

    run(tmp_path, body)


@pytest.mark.parametrize("name", ["", "a" * 65, "bad/name", "spa ce", "ünï", "a:b", "../x"])
def test_invalid_user_and_group_names_are_refused(tmp_path: Path, name: str) -> None:
    async def body(d: Directory) -> None:
        with pytest.raises(InvalidInput, match="invalid user name"):
            await d.add_user(name, "pw")
        with pytest.raises(InvalidInput, match="invalid group name"):
            await d.add_group(name)
        assert await d.get_user(name) is None
        assert await d.authenticate(name, "pw") is None

    run(tmp_path, body)
    assert snapshot(tmp_path) == {}


def test_iam_name_characters_are_accepted(tmp_path: Path) -> None:
    async def body(d: Directory) -> list[str]:
        for name in ("a" * 64, "x+=,.@_-y"):
            await d.add_group(name)
        return await d.list_groups()

    assert run(tmp_path, body) == ["a" * 64, "x+=,.@_-y"]


def test_empty_password_is_refused(tmp_path: Path) -> None:
    async def body(d: Directory) -> None:
        with pytest.raises(InvalidInput, match="empty"):
            await d.add_user("alice", "")
        await d.add_user("bob", "pw")
        with pytest.raises(InvalidInput, match="empty"):
            await d.set_password("bob", "")
        assert await d.authenticate("bob", "pw") is not None
        assert await d.list_users() == ["bob"]

    run(tmp_path, body)


def test_set_password(tmp_path: Path) -> None:
    async def body(d: Directory) -> None:
        await d.add_user("alice", "old")
        await d.set_password("alice", "new")
        assert await d.authenticate("alice", "old") is None
        assert await d.authenticate("alice", "new") is not None
        with pytest.raises(UnknownUser, match="no user named 'bob'"):
            await d.set_password("bob", "x")

    run(tmp_path, body)


def test_unknown_users_spend_the_same_scrypt_and_get_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str | None] = []

    def spy(password: str, encoded: str | None) -> bool:
        checked.append(encoded)
        return verify_or_burn(password, encoded)

    monkeypatch.setattr(identities, "verify_or_burn", spy)

    async def body(d: Directory) -> list[Any]:
        await d.add_user("alice", "pw")
        return [await d.authenticate(name, "pw") for name in ("nobody", "bad/name", "alice")]

    results = run(tmp_path, body)
    assert results[:2] == [None, None] and results[2] is not None
    assert checked[:2] == [None, None]  # the unknown and the impossible name both burn a hash
    assert checked[2] is not None and checked[2].startswith("scrypt$")


def test_remove_user_removes_its_access_keys(tmp_path: Path) -> None:
    async def body(d: Directory) -> None:
        await d.add_user("alice", "pw")
        await d.add_user("bob", "pw")
        key = await d.create_access_key("alice")
        await d.remove_user("alice")
        assert await d.get_user("alice") is None
        assert await d.lookup_access_key(key.key_id) is None
        assert await d.list_users() == ["bob"]
        with pytest.raises(UnknownUser):
            await d.remove_user("alice")

    run(tmp_path, body)
    assert not any(k.startswith("iam/access-keys/") for k in snapshot(tmp_path))


# -- groups ------------------------------------------------------------------------------------

def test_groups_and_membership(tmp_path: Path) -> None:
    async def body(d: Directory) -> None:
        await d.add_user("alice", "pw")
        await d.add_group("devs")
        await d.add_group("ops")
        with pytest.raises(GroupExists):
            await d.add_group("devs")
        with pytest.raises(UnknownGroup, match="no group named 'qa'"):
            await d.add_member("qa", "alice")
        with pytest.raises(UnknownUser):
            await d.add_member("devs", "bob")
        await d.add_member("ops", "alice")
        await d.add_member("devs", "alice")
        await d.add_member("devs", "alice")  # already a member: nothing to do
        user = await d.get_user("alice")
        assert user is not None and user.groups == ("devs", "ops")
        assert await d.group_members("devs") == ["alice"]
        assert await d.list_groups() == ["devs", "ops"]
        await d.remove_member("ops", "alice")
        with pytest.raises(NoSuchEntity, match="not in group 'ops'"):
            await d.remove_member("ops", "alice")
        await d.remove_group("devs")
        user = await d.get_user("alice")
        assert user is not None and user.groups == ()
        assert await d.list_groups() == ["ops"] and await d.get_group("devs") is None

    run(tmp_path, body)


def test_a_user_joins_at_most_ten_groups(tmp_path: Path) -> None:
    async def body(d: Directory) -> None:
        await d.add_user("alice", "pw")
        for i in range(11):
            await d.add_group(f"g{i:02}")
        for i in range(10):
            await d.add_member(f"g{i:02}", "alice")
        with pytest.raises(LimitExceeded, match="10 groups"):
            await d.add_member("g10", "alice")

    run(tmp_path, body)
