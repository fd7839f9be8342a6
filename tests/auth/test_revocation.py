"""Refresh and authorization tokens die with the credential they came from.

Found (issue 19, part 1): a refresh token (docker's `identitytoken`) lived its 7 days whatever
happened to the credential that bought it: after `registry user key delete` of the key that
minted a 12-hour ECR authorization token, and after `registry user passwd`, it still bought
access tokens. Now every refresh and authorization token carries its user's credential
generation, which each of these changes replaces, and a refresh token bought with an
authorization token ends when that token does. The CLI runs as an operator runs it, one process
per command, against the running server's data directory.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.auth.conftest import (
    SERVICE,
    AuthRegistry,
    add_user,
    basic,
    identity_policy,
    repository_arns,
    unverified_claims,
    write_policy,
)

PULL = "repository:team/app:pull"
TOKEN_ACTIONS = ["ecr:GetAuthorizationToken", "ecr:BatchGetImage",
                 "ecr:GetDownloadUrlForLayer"]


@dataclass
class Member:
    """A fresh user with a password, an access key and the right to pull team/*."""

    registry: AuthRegistry
    name: str
    password: str = field(repr=False)
    key_id: str
    secret: str = field(repr=False)

    def authorization_token(self) -> str:
        """The password half of ECR's GetAuthorizationToken (`AWS:<token>`), via boto3."""
        ecr = boto3.client("ecr", endpoint_url=self.registry.url, region_name="us-east-1",
                           aws_access_key_id=self.key_id, aws_secret_access_key=self.secret,
                           config=Config(retries={"total_max_attempts": 1}))
        data = ecr.get_authorization_token()["authorizationData"][0]
        user, _, token = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        assert user == "AWS"
        return token

    def refresh_token(self, user: str, password: str) -> str:
        """What `docker login` keeps as its identitytoken."""
        response = httpx.get(self.registry.url + "/token", headers=basic(user, password),
                             params={"service": SERVICE, "scope": PULL, "offline_token": "true"},
                             timeout=30)
        assert response.status_code == 200, response.text
        return str(response.json()["refresh_token"])


def refreshed(registry: AuthRegistry, refresh_token: str) -> httpx.Response:
    return httpx.post(registry.url + "/token", timeout=30, data={
        "service": SERVICE, "grant_type": "refresh_token", "refresh_token": refresh_token,
        "scope": PULL})


def logged_in(registry: AuthRegistry, user: str, password: str) -> int:
    return httpx.get(registry.url + "/v2/", headers=basic(user, password),
                     timeout=30).status_code


@pytest.fixture
def member(auth_registry: AuthRegistry) -> Member:
    name = f"rev-{os.urandom(3).hex()}"
    password = f"{name}-pw"
    add_user(auth_registry.data_dir, name, password)
    policy = write_policy(auth_registry.policy_dir, name,
                          identity_policy(TOKEN_ACTIONS, ["*", *repository_arns("team/*")]))
    auth_registry.cli("policy", "attach", name, str(policy))
    key = json.loads(auth_registry.cli("user", "key", "create", name).stdout)
    return Member(auth_registry, name, password, key["AccessKeyId"], key["SecretAccessKey"])


# What an operator does, and whether the password still works afterwards.
EVENTS: dict[str, tuple[Callable[[Member], list[str]], bool]] = {
    "key delete": (lambda m: ["user", "key", "delete", m.key_id], True),
    "key deactivate": (lambda m: ["user", "key", "update", m.key_id, "--status", "Inactive"],
                       True),
    "revoke-tokens": (lambda m: ["user", "revoke-tokens", m.name], True),
    "disable": (lambda m: ["user", "disable", m.name], False),
    "remove": (lambda m: ["user", "remove", m.name], False),
}


@pytest.mark.parametrize("event", [*EVENTS, "passwd"])
def test_credential_changes_end_refresh_and_authorization_tokens(member: Member,
                                                                 event: str) -> None:
    registry = member.registry
    aws = member.authorization_token()
    from_key = member.refresh_token("AWS", aws)
    from_password = member.refresh_token(member.name, member.password)
    for token in (from_key, from_password):
        assert refreshed(registry, token).status_code == 200
    assert logged_in(registry, "AWS", aws) == 200

    if event == "passwd":
        registry.cli("user", "passwd", member.name, "--password-stdin", stdin="new-pw\n")
        password_works = False
    else:
        args, password_works = EVENTS[event]
        registry.cli(*args(member))

    for token in (from_key, from_password):
        answer = refreshed(registry, token)
        assert answer.status_code == 401, (event, answer.text)
        assert token not in answer.text
    assert logged_in(registry, "AWS", aws) == 401, event
    aws_token = httpx.get(registry.url + "/token", headers=basic("AWS", aws), timeout=30,
                          params={"service": SERVICE, "scope": PULL})
    assert aws_token.status_code == 401, (event, aws_token.text)
    # What still works is what the event left alone: a fresh login with the password.
    assert logged_in(registry, member.name, member.password) == (200 if password_works else 401)
    if event == "passwd":
        assert refreshed(registry, member.refresh_token(member.name, "new-pw")).status_code == 200


def test_reactivating_a_key_or_enabling_a_user_brings_no_token_back(member: Member) -> None:
    registry = member.registry
    aws = member.authorization_token()
    refresh = member.refresh_token("AWS", aws)
    registry.cli("user", "key", "update", member.key_id, "--status", "Inactive")
    registry.cli("user", "key", "update", member.key_id, "--status", "Active")
    assert logged_in(registry, "AWS", aws) == 401
    assert refreshed(registry, refresh).status_code == 401
    again = member.authorization_token()  # the key itself works again
    assert logged_in(registry, "AWS", again) == 200

    refresh = member.refresh_token(member.name, member.password)
    registry.cli("user", "disable", member.name)
    with pytest.raises(ClientError, match="UnrecognizedClientException"):
        member.authorization_token()  # a disabled user's keys sign nothing
    registry.cli("user", "enable", member.name)
    assert refreshed(registry, refresh).status_code == 401
    assert logged_in(registry, "AWS", again) == 401
    assert logged_in(registry, member.name, member.password) == 200


def test_a_refresh_token_from_an_authorization_token_ends_with_it(member: Member) -> None:
    """ECR's own login never outlives 12 hours; neither does the identitytoken docker buys
    with it (auth.refresh_token_ttl is 7 days), nor an access token."""
    aws = member.authorization_token()
    login_expiry = unverified_claims(aws)["exp"]
    refresh = unverified_claims(member.refresh_token("AWS", aws))
    assert refresh["exp"] == login_expiry
    assert login_expiry - refresh["iat"] <= 12 * 3600
    password_refresh = unverified_claims(member.refresh_token(member.name, member.password))
    assert password_refresh["exp"] - password_refresh["iat"] == 7 * 24 * 3600
    for claims in (refresh, password_refresh):
        assert isinstance(claims["gen"], str) and claims["gen"]
