"""Identity, repository and registry policies through the identity directory: checked before
anything is stored, so a malformed document changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auth.identities import (
    Directory,
    InvalidInput,
    LimitExceeded,
    MalformedPolicy,
    UnknownPolicy,
    UnknownUser,
)
from auth.policy import PolicyInvalid
from tests.auth.directory_util import DENY, PULL, REPO_POLICY, run, snapshot


def test_identity_policies_are_the_users_and_its_groups(tmp_path: Path) -> None:
    async def body(d: Directory) -> None:
        await d.add_user("alice", "pw")
        await d.add_group("devs")
        await d.add_member("devs", "alice")
        await d.attach_user_policy("alice", PULL, "pull")
        await d.attach_group_policy("devs", DENY, "no-push")
        assert [p.text for p in await d.identity_policies("alice")] == [PULL, DENY]
        user = await d.get_user("alice")
        assert user is not None and user.policies == (PULL,)
        assert await d.user_policies("alice") == {"pull": PULL}
        assert await d.group_policies("devs") == {"no-push": DENY}
        await d.attach_user_policy("alice", DENY, "pull")  # same name: replaced
        assert await d.user_policies("alice") == {"pull": DENY}
        await d.detach_user_policy("alice", "pull")
        with pytest.raises(UnknownPolicy, match="no policy named 'pull'"):
            await d.detach_user_policy("alice", "pull")
        await d.remove_group("devs")
        assert await d.identity_policies("alice") == []
        assert await d.identity_policies("nobody") == []
        assert await d.identity_policies("bad/name") == []

    run(tmp_path, body)


@pytest.mark.parametrize(("text", "problem"), [
    ('{"Statement": [', "not valid JSON"),
    ("[]", "must be a JSON object"),
    ('{"Statement": [{"Effect": "Allow", "Action": "ecr:*"}]}', "Resource is required"),
    (REPO_POLICY, "must not name a Principal"),
])
def test_a_malformed_identity_policy_changes_nothing(tmp_path: Path, text: str,
                                                     problem: str) -> None:
    async def setup(d: Directory) -> None:
        await d.add_user("alice", "pw")
        await d.add_group("devs")
        await d.attach_user_policy("alice", PULL, "p")

    run(tmp_path, setup)
    before = snapshot(tmp_path)

    async def body(d: Directory) -> None:
        with pytest.raises(MalformedPolicy, match=problem) as caught:
            await d.attach_user_policy("alice", text, "p")
        assert isinstance(caught.value, PolicyInvalid)
        with pytest.raises(MalformedPolicy, match=problem):
            await d.attach_group_policy("devs", text, "p")
        with pytest.raises(InvalidInput, match="invalid policy name"):
            await d.attach_user_policy("alice", PULL, "bad name")
        with pytest.raises(UnknownUser):
            await d.attach_user_policy("bob", PULL, "p")

    run(tmp_path, body)
    assert snapshot(tmp_path) == before


def test_attached_policies_are_bounded_by_the_record_size(tmp_path: Path) -> None:
    resources = [f"arn:aws:ecr:us-east-1:000000000000:repository/team/r{i}" for i in range(150)]
    big = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecr:BatchGetImage", "Resource": resources}]})
    assert 8000 < len(big) < 10240

    async def body(d: Directory) -> int:
        await d.add_user("alice", "pw")
        for i in range(10):
            before = snapshot(tmp_path)
            try:
                await d.attach_user_policy("alice", big, f"p{i}")
            except LimitExceeded:
                assert snapshot(tmp_path) == before
                return i
        raise AssertionError("no limit")

    assert run(tmp_path, body) >= 3


def test_repository_policy(tmp_path: Path) -> None:
    async def body(d: Directory) -> None:
        assert await d.repository_policy("team/app") is None
        await d.set_repository_policy("team/app", REPO_POLICY)
        policy = await d.repository_policy("team/app")
        assert policy is not None and policy.text == REPO_POLICY  # exactly as given
        with pytest.raises(MalformedPolicy, match="needs a Principal"):
            await d.set_repository_policy("team/app", PULL)
        with pytest.raises(InvalidInput, match="invalid repository name"):
            await d.set_repository_policy("Team/App", REPO_POLICY)
        policy = await d.repository_policy("team/app")
        assert policy is not None and policy.text == REPO_POLICY
        await d.delete_repository_policy("team/app")
        assert await d.repository_policy("team/app") is None
        with pytest.raises(UnknownPolicy):
            await d.delete_repository_policy("team/app")

    run(tmp_path, body)


def test_registry_policy(tmp_path: Path) -> None:
    async def body(d: Directory) -> None:
        assert await d.registry_policy() is None
        await d.set_registry_policy(REPO_POLICY)
        policy = await d.registry_policy()
        assert policy is not None and policy.text == REPO_POLICY
        with pytest.raises(MalformedPolicy):
            await d.set_registry_policy("{")
        await d.set_registry_policy(None)
        assert await d.registry_policy() is None

    run(tmp_path, body)
