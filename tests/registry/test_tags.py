"""`GET /v2/<name>/tags/list`: listing, ordering, pagination."""

from __future__ import annotations

import httpx
import pytest

from .util import OCI_MANIFEST, assert_error, next_link, push_image, put_manifest

TAGS = ["v1.0", "alpha", "latest", "2024", "beta", "v1.1", "zeta_1"]


@pytest.fixture
def tagged(client: httpx.Client, repo: str) -> list[str]:
    image = push_image(client, repo, TAGS[0])
    for tag in TAGS[1:]:
        response = put_manifest(client, repo, tag, image.manifest, OCI_MANIFEST)
        assert response.status_code == 201, response.text
    return sorted(TAGS)


def test_list_tags(client: httpx.Client, repo: str, tagged: list[str]) -> None:
    response = client.get(f"/v2/{repo}/tags/list")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "application/json"
    assert response.json() == {"name": repo, "tags": tagged}
    assert next_link(response) is None


def test_first_page(client: httpx.Client, repo: str, tagged: list[str]) -> None:
    response = client.get(f"/v2/{repo}/tags/list", params={"n": 2})
    assert response.status_code == 200
    assert response.json() == {"name": repo, "tags": tagged[:2]}
    link = next_link(response)
    assert link is not None
    assert link.startswith(f"/v2/{repo}/tags/list?")
    assert "n=2" in link
    assert f"last={tagged[1]}" in link


def test_follow_pagination(client: httpx.Client, repo: str, tagged: list[str]) -> None:
    seen: list[str] = []
    url: str | None = f"/v2/{repo}/tags/list?n=2"
    pages = 0
    while url is not None:
        pages += 1
        assert pages <= len(tagged) + 1, "pagination does not terminate"
        response = client.get(url)
        assert response.status_code == 200
        page = response.json()["tags"]
        assert len(page) <= 2
        seen += page
        url = next_link(response)
    assert seen == tagged


def test_page_size_larger_than_count(client: httpx.Client, repo: str,
                                     tagged: list[str]) -> None:
    response = client.get(f"/v2/{repo}/tags/list", params={"n": 100})
    assert response.json()["tags"] == tagged
    assert next_link(response) is None


def test_last(client: httpx.Client, repo: str, tagged: list[str]) -> None:
    response = client.get(f"/v2/{repo}/tags/list", params={"last": tagged[2]})
    assert response.status_code == 200
    assert response.json()["tags"] == tagged[3:]


def test_last_not_a_tag(client: httpx.Client, repo: str, tagged: list[str]) -> None:
    response = client.get(f"/v2/{repo}/tags/list", params={"last": "b"})
    assert response.json()["tags"] == [t for t in tagged if t > "b"]


def test_last_and_n(client: httpx.Client, repo: str, tagged: list[str]) -> None:
    response = client.get(f"/v2/{repo}/tags/list", params={"n": 2, "last": tagged[1]})
    assert response.json()["tags"] == tagged[2:4]


def test_last_after_everything(client: httpx.Client, repo: str, tagged: list[str]) -> None:
    response = client.get(f"/v2/{repo}/tags/list", params={"last": tagged[-1]})
    assert response.status_code == 200
    assert response.json()["tags"] in ([], None)
    assert next_link(response) is None


def test_moved_tag_listed_once(client: httpx.Client, repo: str) -> None:
    push_image(client, repo, "x")
    push_image(client, repo, "x")
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["x"]


def test_unknown_repository(client: httpx.Client, repo: str) -> None:
    assert_error(client.get(f"/v2/{repo}/tags/list"), 404, "NAME_UNKNOWN")
