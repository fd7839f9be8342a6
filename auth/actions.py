"""The one table from token scope actions to IAM actions, and the scope grammar."""

from __future__ import annotations

import re
from dataclasses import dataclass

from storage.content.names import check_name

PULL, PUSH, DELETE = "pull", "push", "delete"

# What a token scope action means in IAM terms: all of these must be allowed.
SCOPE_ACTIONS: dict[str, tuple[str, ...]] = {
    PULL: ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"),
    PUSH: ("ecr:PutImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
           "ecr:CompleteLayerUpload", "ecr:BatchCheckLayerAvailability"),
    DELETE: ("ecr:BatchDeleteImage",),
}
CATALOG_ACTIONS = ("ecr:DescribeRepositories",)


def not_authorized(principal_arn: str, iam_action: str, resource: str) -> str:
    """The one sentence for a caller that policy refuses, on the data plane and the ECR API
    alike (ECR's own words)."""
    return (f"User: {principal_arn} is not authorized to perform: {iam_action} on resource: "
            f"{resource}")

_SCOPE = re.compile(
    r"^(?P<type>[a-z0-9]+)(?:\([a-z0-9]+\))?:(?P<name>[^\s]+):(?P<actions>[a-z*,]*)$")


@dataclass(frozen=True, slots=True)
class Scope:
    type: str  # "repository" or "registry"
    name: str
    actions: tuple[str, ...]


def parse_scope(text: str) -> Scope | None:
    """`repository:team/app:pull,push`; None for what we cannot read (ignored, as the token
    spec lets a server grant less than asked). A repository scope must name a valid repository
    (NameInvalid otherwise): its name goes on to build storage keys and policy ARNs."""
    match = _SCOPE.match(text.strip())
    if match is None or len(text) > 512:
        return None
    actions = tuple(dict.fromkeys(a for a in match["actions"].split(",") if a))
    if match["type"] == "repository":
        check_name(match["name"])
        if "*" in actions:
            actions = (PULL, PUSH, DELETE)
    return Scope(match["type"], match["name"], actions)


def parse_scopes(values: list[str]) -> list[Scope]:
    """Scopes from `scope` parameters, each possibly space-separated (OAuth2 form)."""
    out: list[Scope] = []
    for value in values:
        for part in value.split():
            scope = parse_scope(part)
            if scope is not None and scope.type in ("repository", "registry"):
                out.append(scope)
    return out[:64]


def repository_arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:ecr:{region}:{account}:repository/{name}"


def challenge_scope(name: str, actions: tuple[str, ...]) -> str:
    return f"repository:{name}:{','.join(actions)}"
