"""Token scopes name repositories by the repository grammar, checked before anything else.

Found (issue 19, part 3): `GET /token?service=registry&scope=repository:..:pull` without
credentials (and the same scope in `POST /token`) answered 500 with a traceback per request: the
name went on to build the key of the repository's policy, which the storage driver refused. A
name starting with `_` even reached keys that are not a repository's."""

from __future__ import annotations

import httpx
import pytest

from tests.auth.conftest import PASSWORDS, SERVICE, AuthRegistry, basic

BAD_NAMES = ["..", "a/../b", "team//app", "_uploads", "team/_manifests", "Team/App", "a" * 256,
             "team/app/"]


def assert_name_invalid(response: httpx.Response) -> None:
    assert response.status_code == 400, (response.status_code, response.text)
    errors = response.json()["errors"]
    assert [error["code"] for error in errors] == ["NAME_INVALID"], response.text


@pytest.mark.parametrize("name", BAD_NAMES)
def test_get_token_refuses_an_invalid_repository_name(auth_registry: AuthRegistry,
                                                      name: str) -> None:
    before = auth_registry.live.server_errors()
    for headers in ({}, basic("alice")):
        response = httpx.get(auth_registry.url + "/token", headers=headers, timeout=30,
                             params={"service": SERVICE, "scope": f"repository:{name}:pull"})
        assert_name_invalid(response)
    assert auth_registry.live.server_errors() == before


@pytest.mark.parametrize("name", BAD_NAMES[:3])
def test_post_token_refuses_an_invalid_repository_name(auth_registry: AuthRegistry,
                                                       name: str) -> None:
    form = {"service": SERVICE, "grant_type": "password", "username": "alice",
            "password": PASSWORDS["alice"],
            "scope": f"repository:team/app:pull repository:{name}:pull"}
    assert_name_invalid(httpx.post(auth_registry.url + "/token", data=form, timeout=30))


def test_scopes_are_checked_before_the_credentials(auth_registry: AuthRegistry) -> None:
    """A bad scope is answered 400 whatever the credentials: nothing was looked up, so wrong
    passwords sent with it are not even counted as failed logins."""
    form = {"service": SERVICE, "grant_type": "password", "username": "bob",
            "password": "wrong", "scope": "repository:..:pull"}
    statuses = {httpx.post(auth_registry.url + "/token", data=form, timeout=30).status_code
                for _ in range(25)}  # the session registry allows 20 failures
    assert statuses == {400}, statuses
    assert auth_registry.token_response("bob", "repository:team/app:pull").status_code == 200


def test_valid_names_and_other_scope_types_still_work(auth_registry: AuthRegistry) -> None:
    response = auth_registry.token_response(
        "alice", "repository:team/app:pull", "repository(plugin):team/app:push",
        "registry:catalog:*", "unknown:whatever:pull")
    assert response.status_code == 200, response.text
    assert "Traceback" not in auth_registry.log()
