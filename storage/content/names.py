"""Repository name and tag grammar from the OCI Distribution Spec, with our length limits."""

from __future__ import annotations

import re

from storage.errors import NameInvalid, TagInvalid

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")

MAX_NAME_LENGTH = 255
MAX_TAG_LENGTH = 128


def check_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise NameInvalid(f"repository name longer than {MAX_NAME_LENGTH} characters")
    if not _NAME.fullmatch(name):
        raise NameInvalid(f"invalid repository name {name[:100]!r}")
    return name


def is_tag(reference: str) -> bool:
    return ":" not in reference


def check_tag(tag: str) -> str:
    if len(tag) > MAX_TAG_LENGTH:
        raise TagInvalid(f"tag longer than {MAX_TAG_LENGTH} characters")
    if not _TAG.fullmatch(tag):
        raise TagInvalid(f"invalid tag {tag[:100]!r}")
    return tag
