"""`GET /v2/`: the API version check."""

from __future__ import annotations

import httpx

from .util import assert_error


def test_version_check(client: httpx.Client) -> None:
    response = client.get("/v2/")
    assert response.status_code == 200
    assert response.headers.get("docker-distribution-api-version") == "registry/2.0"


def test_version_check_without_trailing_slash(client: httpx.Client) -> None:
    response = client.get("/v2", follow_redirects=True)
    assert response.status_code == 200


def test_unknown_route_is_json_error(client: httpx.Client) -> None:
    response = client.get("/v2/test/nothing/here/at/all")
    assert_error(response, 404)
