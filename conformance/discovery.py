"""Content discovery workflow: tag listing, pagination and (optionally) the catalog.

Expectations are derived from the repository's full tag list (which must contain every tag
the runner pushed), so the checks stay valid when --namespace points at a repository that
already holds other tags.
"""

from __future__ import annotations

import random
import re
from typing import Any

import httpx

from .data import token
from .framework import Context, Failed, Skipped, check, fixture
from .ops import push_image, push_manifest

_NEXT_LINK = re.compile(r'<([^>]*)>\s*;[^,]*\brel\s*=\s*"?next"?', re.IGNORECASE)
MAX_PAGES = 200


def next_link(resp: httpx.Response) -> str | None:
    """The absolute URL of a `Link: <...>; rel="next"` header, if any."""
    for value in resp.headers.get_list("Link"):
        match = _NEXT_LINK.search(value)
        if match:
            return str(resp.url.join(match.group(1)))
    return None


@fixture("discovery tags")
def _discovery_tags(ctx: Context) -> list[str]:
    image = push_image(ctx, ctx.namespace)
    prefix = f"d{token(3)}"
    tags = [f"{prefix}-{v}" for v in ("0.9", "1.0", "1.10", "1.2", "latest", "rc_1")]
    for tag in random.sample(tags, len(tags)):
        push_manifest(ctx, ctx.namespace, image.manifest, tag)
    return sorted(tags)


def tags_page(ctx: Context, url: str) -> tuple[httpx.Response, list[str]]:
    resp = ctx.request("GET", url)
    ctx.expect_status(resp, 200)
    body: Any = ctx.json_body(resp)
    tags = body.get("tags") if isinstance(body, dict) else None
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise Failed(f"GET {resp.url.path}?{resp.url.query.decode()}: `tags` is {tags!r}, "
                     "expected a list of strings")
    return resp, tags


def _walk(ctx: Context, first: httpx.Response, tags: list[str]) -> list[str]:
    """Follow rel=next Links from a first page; returns every tag seen."""
    seen, link, pages = list(tags), next_link(first), 1
    while link and pages < MAX_PAGES:
        resp, page = tags_page(ctx, link)
        seen += page
        link, pages = next_link(resp), pages + 1
    return seen


def _tags_url(ctx: Context, query: str = "") -> str:
    return f"/v2/{ctx.namespace}/tags/list" + (f"?{query}" if query else "")


@check("discovery", "tags list returns 200 with the repository name and every pushed tag",
       provides=("all tags",))
def list_all(ctx: Context) -> None:
    pushed = ctx.fixture("discovery tags")
    resp, tags = tags_page(ctx, _tags_url(ctx))
    tags = _walk(ctx, resp, tags)
    name = resp.json().get("name")
    ctx.soft(name == ctx.namespace, f"`name` is {name!r}, expected {ctx.namespace!r}")
    missing = [t for t in pushed if t not in tags]
    if missing:
        raise Failed(f"tags missing from the list: {missing} (got {tags})")
    ctx.put("all tags", tags)


@check("discovery", "tags list is in lexical or ASCIIbetical order")
def list_sorted(ctx: Context) -> None:
    tags: list[str] = ctx.get("all tags")
    if tags != sorted(tags) and tags != sorted(tags, key=str.lower):
        raise Failed(f"tags are not sorted: {tags}")


def _expect_window(ctx: Context, resp: httpx.Response, got: list[str], want: list[str]) -> None:
    """`got` must equal `want`, or be a prefix of it when a Link header says more follow."""
    if got == want:
        return
    if next_link(resp) and got == want[: len(got)]:
        return
    raise Failed(f"got tags {got}, expected {want}")


@check("discovery", "tags list with n returns the first n tags")
def list_n(ctx: Context) -> None:
    tags: list[str] = ctx.get("all tags")
    resp, got = tags_page(ctx, _tags_url(ctx, "n=2"))
    _expect_window(ctx, resp, got, tags[:2])


@check("discovery", "tags list with n=0 returns an empty list and no Link header")
def list_n_zero(ctx: Context) -> None:
    ctx.get("all tags")
    resp, got = tags_page(ctx, _tags_url(ctx, "n=0"))
    ctx.soft(got == [], f"got tags {got}, expected []")
    ctx.soft(not resp.headers.get_list("Link"), f"Link header present: {resp.headers.get('Link')}")


@check("discovery", "tags list with last (and n) returns the tags after last")
def list_last(ctx: Context) -> None:
    tags: list[str] = ctx.get("all tags")
    resp, got = tags_page(ctx, _tags_url(ctx, f"n=2&last={tags[1]}"))
    _expect_window(ctx, resp, got, tags[2:4])
    resp, got = tags_page(ctx, _tags_url(ctx, f"last={tags[-2]}"))
    _expect_window(ctx, resp, got, tags[-1:])


@check("discovery", "tags list Link header pagination walks the whole list")
def list_link_pagination(ctx: Context) -> None:
    tags: list[str] = ctx.get("all tags")
    resp, first = tags_page(ctx, _tags_url(ctx, "n=2"))
    if not next_link(resp):
        raise Skipped("no Link header on a partial page (the Link header is a MAY)")
    seen = _walk(ctx, resp, first)
    if seen != tags:
        raise Failed(f"following Link headers gave {seen}, expected {tags}")


@check("discovery", "tags list of an unknown repository returns 404")
def list_unknown_repo(ctx: Context) -> None:
    resp = ctx.request("GET", f"/v2/{ctx.namespace}-absent-{token()}/tags/list")
    ctx.expect_status(resp, 404)


@check("discovery", "catalog lists repositories (optional endpoint)")
def catalog(ctx: Context) -> None:
    ctx.fixture("discovery tags")
    resp = ctx.request("GET", "/v2/_catalog")
    if resp.status_code in (401, 403, 404, 405):
        raise Skipped(f"catalog not offered ({resp.status_code}); it is not part of the spec")
    ctx.expect_status(resp, 200)
    repos: list[str] = []
    for _ in range(MAX_PAGES):
        body = ctx.json_body(resp)
        page = body.get("repositories") if isinstance(body, dict) else None
        if not isinstance(page, list):
            raise Failed(f"`repositories` is {page!r}, expected a list")
        repos += page
        link = next_link(resp)
        if ctx.namespace in repos or not link:
            break
        resp = ctx.request("GET", link)
        ctx.expect_status(resp, 200)
    else:
        return  # too many pages to look through: the shape was right
    if ctx.namespace not in repos:
        raise Failed(f"{ctx.namespace} is not listed (saw {len(repos)} repositories)")

