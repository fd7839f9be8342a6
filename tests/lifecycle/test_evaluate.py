"""Lifecycle rules as ECR defines them, evaluated on images the tests describe (pure: no I/O).

Each case is a policy, a set of images (tags, days since push, days since pull), and the exact
set of images that must expire, with the rule that expires each."""

from __future__ import annotations

import json
from typing import Any

import pytest

from storage.lifecycle import DAY, Image, LifecyclePolicyInvalid, evaluate, parse

NOW = 1_800_000_000.0


def rule(priority: int, status: str, count_type: str, number: int, **selection: Any) -> dict[
        str, Any]:
    chosen: dict[str, Any] = {"tagStatus": status, "countType": count_type,
                              "countNumber": number, **selection}
    if count_type != "imageCountMoreThan":
        chosen.setdefault("countUnit", "days")
    return {"rulePriority": priority, "selection": chosen, "action": {"type": "expire"}}


def policy(*rules: dict[str, Any]) -> str:
    return json.dumps({"rules": list(rules)})


def image(name: str, tags: list[str], pushed_days: float, pulled_days: float | None = None,
          in_use: bool = False) -> Image:
    return Image(name, tags, NOW - pushed_days * DAY,
                 None if pulled_days is None else NOW - pulled_days * DAY, in_use)


IMAGES = [
    image("prod1", ["prod-1"], 40, pulled_days=1),
    image("prod2", ["prod-2", "latest"], 30),
    image("prod3", ["prod-3"], 20, pulled_days=25),
    image("dev1", ["dev-1"], 3),
    image("dev2", ["dev-2"], 2, in_use=True),
    image("dev3", ["dev-3", "x"], 1),
    image("old-untagged", [], 10),
    image("new-untagged", [], 0.5),
]

CASES: list[tuple[str, str, dict[str, int]]] = [
    ("untagged older than 7 days",
     policy(rule(1, "untagged", "sinceImagePushed", 7)), {"old-untagged": 1}),
    ("keep one untagged",
     policy(rule(1, "untagged", "imageCountMoreThan", 1)), {"old-untagged": 1}),
    ("keep the two newest prod",
     policy(rule(1, "tagged", "imageCountMoreThan", 2, tagPrefixList=["prod"])), {"prod1": 1}),
    ("prefix list needs every prefix",
     policy(rule(1, "tagged", "imageCountMoreThan", 0 + 1, tagPrefixList=["prod", "lat"])),
     {}),
    ("pattern list needs every pattern",
     policy(rule(1, "tagged", "sinceImagePushed", 1, tagPatternList=["dev-*", "x"])),
     {}),
    ("pattern wildcards",
     policy(rule(1, "tagged", "sinceImagePushed", 25, tagPatternList=["p*d-*"])),
     {"prod1": 1, "prod2": 1}),
    ("pulled: never-pulled images count from their push",
     policy(rule(1, "tagged", "sinceImagePulled", 15, tagPatternList=["*"])),
     {"prod2": 1, "prod3": 1}),
    ("any: keep the three newest images; in use is never expired",
     policy(rule(1, "any", "imageCountMoreThan", 3)),
     {"dev1": 1, "old-untagged": 1, "prod3": 1, "prod2": 1, "prod1": 1}),
    ("an image selected by a higher priority rule is not expired by a lower one",
     policy(rule(1, "tagged", "imageCountMoreThan", 100, tagPrefixList=["prod"]),
            rule(2, "any", "sinceImagePushed", 5)),
     {"old-untagged": 2}),
    ("each image expires by the first rule that selects it",
     policy(rule(5, "tagged", "sinceImagePushed", 25, tagPrefixList=["prod"]),
            rule(9, "untagged", "imageCountMoreThan", 1),
            rule(20, "any", "imageCountMoreThan", 1)),
     # prod3 belongs to rule 5 (which keeps it): rule 20 cannot take it.
     {"prod1": 5, "prod2": 5, "old-untagged": 9, "dev1": 20}),
    ("rules apply by priority, not by their order in the document",
     policy(rule(2, "tagged", "sinceImagePushed", 1, tagPatternList=["*"]),
            rule(1, "tagged", "imageCountMoreThan", 10, tagPrefixList=["dev"])),
     {"prod1": 2, "prod2": 2, "prod3": 2}),
]


@pytest.mark.parametrize(("text", "expected"), [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_rules_expire_exactly_the_expected_images(text: str, expected: dict[str, int]) -> None:
    result = evaluate(parse(text), IMAGES, NOW)
    assert {d.image.digest: d.rule for d in result.expiring} == expected


def test_in_use_images_are_reported_not_expired() -> None:
    result = evaluate(parse(policy(rule(1, "tagged", "sinceImagePushed", 1,
                                        tagPrefixList=["dev"]))), IMAGES, NOW)
    assert {d.image.digest for d in result.expiring} == {"dev1"}
    assert [d.image.digest for d in result.protected] == ["dev2"]


INVALID = [
    ("not json", "{"),
    ("no rules", json.dumps({"rules": []})),
    ("duplicate priority", policy(rule(1, "untagged", "imageCountMoreThan", 1),
                                  rule(1, "any", "imageCountMoreThan", 1))),
    ("any not last", policy(rule(1, "any", "imageCountMoreThan", 1),
                            rule(2, "untagged", "imageCountMoreThan", 1))),
    ("tagged without a list", policy(rule(1, "tagged", "imageCountMoreThan", 1))),
    ("both lists", policy(rule(1, "tagged", "imageCountMoreThan", 1, tagPrefixList=["a"],
                               tagPatternList=["b"]))),
    ("untagged with a list", policy(rule(1, "untagged", "imageCountMoreThan", 1,
                                         tagPrefixList=["a"]))),
    ("count unit on a count rule", policy(rule(1, "untagged", "imageCountMoreThan", 1,
                                               countUnit="days"))),
    ("since without unit", json.dumps({"rules": [{
        "rulePriority": 1, "action": {"type": "expire"},
        "selection": {"tagStatus": "any", "countType": "sinceImagePushed", "countNumber": 1}}]})),
    ("zero count", policy(rule(1, "untagged", "imageCountMoreThan", 0))),
    ("five wildcards", policy(rule(1, "tagged", "imageCountMoreThan", 1,
                                   tagPatternList=["*a*b*c*d*"]))),
    ("unknown action", json.dumps({"rules": [{
        "rulePriority": 1, "action": {"type": "archive-forever"},
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}}]})),
    ("unknown count type", policy(rule(1, "any", "imageCountLessThan", 1))),
]


@pytest.mark.parametrize("text", [c[1] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_policies_are_refused(text: str) -> None:
    with pytest.raises(LifecyclePolicyInvalid):
        parse(text)
