"""ECR lifecycle policies: parsing with ECR's validation rules, and evaluation.

Semantics, as ECR documents them:
- Rules apply in ascending `rulePriority` (unique). A rule with `tagStatus: any` must have the
  highest priority (be evaluated last), and there may be only one.
- `tagged` rules select images with `tagPrefixList` or `tagPatternList` (one of them, not both);
  with several entries an image is selected only when every entry matches one of its tags.
  Patterns use `*` wildcards (at most four per pattern). `untagged` rules select images without
  tags; `any` rules select every image.
- An image selected by a rule cannot be expired by a rule of lower priority (a higher number):
  each image belongs to the first rule that selects it, whether or not that rule expires it.
- `imageCountMoreThan`: the rule's images, newest push first, are kept up to `countNumber`, the
  rest expire. `sinceImagePushed`: images pushed more than `countNumber` days ago expire.
  `sinceImagePulled`: images whose last recorded pull (their push, if never pulled) is more than
  `countNumber` days ago expire.
- Beyond ECR: an image marked in use (by the orchestrator tooling or `registry lifecycle
  protect`) is never expired; it still belongs to, and counts for, the rule that selects it.

Evaluation is pure: the same images, policy and clock give the same result, which is how a
preview and the run after it agree.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from storage import paths, records
from storage.audit import AuditLog
from storage.content import mediatypes as mt
from storage.content.digest import Digest
from storage.content.jsontext import loads
from storage.content.manifest import parse_manifest
from storage.drivers.base import Driver
from storage.errors import KeyNotFound, ManifestInvalid, ManifestUnknown, RegistryError
from storage.listing import iter_keys
from storage.manifests import ManifestStore
from storage.repositories import RepositoryStore

log = logging.getLogger("registry")

DAY = 86400.0
MAX_PRIORITY = 1000
COUNT_TYPES = ("imageCountMoreThan", "sinceImagePushed", "sinceImagePulled")
TAG_STATUSES = ("tagged", "untagged", "any")


class LifecyclePolicyInvalid(RegistryError):
    """The lifecycle policy text breaks ECR's rules (InvalidParameterException)."""


@dataclass(frozen=True, slots=True)
class Rule:
    priority: int
    tag_status: str
    count_type: str
    count_number: int
    prefixes: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()
    description: str = ""

    def selects(self, tags: list[str]) -> bool:
        if self.tag_status == "any":
            return True
        if self.tag_status == "untagged":
            return not tags
        if not tags:
            return False
        if self.prefixes:
            return all(any(t.startswith(p) for t in tags) for p in self.prefixes)
        return all(any(p.fullmatch(t) for t in tags) for p in self.patterns)


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[Rule, ...]
    text: str


@dataclass(slots=True)
class Image:
    digest: str
    tags: list[str]
    pushed_at: float
    pulled_at: float | None = None
    in_use: bool = False


@dataclass(slots=True)
class Decision:
    image: Image
    rule: int  # the priority of the rule that selects it
    expire: bool
    protected: bool = False  # would expire, but is in use


@dataclass(slots=True)
class Evaluation:
    decisions: list[Decision] = field(default_factory=list)

    @property
    def expiring(self) -> list[Decision]:
        return [d for d in self.decisions if d.expire]

    @property
    def protected(self) -> list[Decision]:
        return [d for d in self.decisions if d.protected]


def _invalid(message: str) -> LifecyclePolicyInvalid:
    return LifecyclePolicyInvalid(f"Invalid parameter at 'LifecyclePolicyText' failed to "
                                  f"satisfy constraint: '{message}'")


def _pattern(text: str) -> re.Pattern[str]:
    if text.count("*") > 4:
        raise _invalid(f"tag pattern {text[:64]!r} has more than four wildcards")
    return re.compile(".*".join(re.escape(part) for part in text.split("*")))


def _tag_list(selection: dict[str, Any], key: str) -> list[str]:
    value = selection.get(key)
    if value is None:
        return []
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, str) and 1 <= len(v) <= 128 for v in value)):
        raise _invalid(f"{key} must be a non-empty list of tag strings")
    return value


def parse(text: str) -> Policy:
    """Parse and validate a lifecycle policy document."""
    try:
        doc = loads(text)
    except ValueError:
        raise _invalid("Lifecycle policy is not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list) or not doc["rules"]:
        raise _invalid("Lifecycle policy must have a non-empty 'rules' list")
    rules: list[Rule] = []
    for raw in doc["rules"]:
        rules.append(_rule(raw))
    priorities = [r.priority for r in rules]
    if len(set(priorities)) != len(priorities):
        raise _invalid("rulePriority values must be unique")
    rules.sort(key=lambda r: r.priority)
    anys = [r for r in rules if r.tag_status == "any"]
    if len(anys) > 1:
        raise _invalid("only one rule may have tagStatus 'any'")
    if anys and rules[-1].tag_status != "any":
        raise _invalid("the rule with tagStatus 'any' must have the highest rulePriority")
    return Policy(tuple(rules), text)


def _rule(raw: Any) -> Rule:
    if not isinstance(raw, dict):
        raise _invalid("each rule must be an object")
    priority = raw.get("rulePriority")
    if not isinstance(priority, int) or isinstance(priority, bool) \
            or not 1 <= priority <= MAX_PRIORITY:
        raise _invalid(f"rulePriority must be an integer from 1 to {MAX_PRIORITY}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise _invalid("description must be a string")
    action = raw.get("action")
    if not isinstance(action, dict) or str(action.get("type", "")).lower() != "expire":
        raise _invalid(f"rule {priority}: action type must be 'expire'")
    selection = raw.get("selection")
    if not isinstance(selection, dict):
        raise _invalid(f"rule {priority}: selection is required")
    status = selection.get("tagStatus")
    if status not in TAG_STATUSES:
        raise _invalid(f"rule {priority}: tagStatus must be tagged, untagged or any")
    prefixes = _tag_list(selection, "tagPrefixList")
    patterns = _tag_list(selection, "tagPatternList")
    if status == "tagged":
        if not prefixes and not patterns:
            raise _invalid(f"rule {priority}: a tagged rule needs tagPrefixList or "
                           "tagPatternList")
        if prefixes and patterns:
            raise _invalid(f"rule {priority}: tagPrefixList and tagPatternList cannot be "
                           "used together")
    elif prefixes or patterns:
        raise _invalid(f"rule {priority}: tagPrefixList and tagPatternList need tagStatus "
                       "tagged")
    count_type = selection.get("countType")
    if count_type not in COUNT_TYPES:
        raise _invalid(f"rule {priority}: countType must be one of {', '.join(COUNT_TYPES)}")
    number = selection.get("countNumber")
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise _invalid(f"rule {priority}: countNumber must be a positive integer")
    unit = selection.get("countUnit")
    if count_type == "imageCountMoreThan":
        if unit is not None:
            raise _invalid(f"rule {priority}: countUnit cannot be used with imageCountMoreThan")
    elif unit != "days":
        raise _invalid(f"rule {priority}: {count_type} needs countUnit 'days'")
    return Rule(priority, status, count_type, number, tuple(prefixes),
                tuple(_pattern(p) for p in patterns), description)


def evaluate(policy: Policy, images: list[Image], now: float) -> Evaluation:
    """Which images each rule selects, and which of them expire (see the module docstring)."""
    claimed: set[str] = set()
    result = Evaluation()
    for rule in policy.rules:
        selected = [i for i in images if i.digest not in claimed and rule.selects(i.tags)]
        claimed.update(i.digest for i in selected)
        expiring = _expiring(rule, selected, now)
        for image in selected:
            expire = image.digest in expiring
            result.decisions.append(Decision(image, rule.priority, expire and not image.in_use,
                                             expire and image.in_use))
    return result


def _expiring(rule: Rule, selected: list[Image], now: float) -> set[str]:
    if rule.count_type == "imageCountMoreThan":
        newest = sorted(selected, key=lambda i: (-i.pushed_at, i.digest))
        return {i.digest for i in newest[rule.count_number:]}
    limit = now - rule.count_number * DAY
    if rule.count_type == "sinceImagePushed":
        return {i.digest for i in selected if i.pushed_at < limit}
    return {i.digest for i in selected
            if (i.pulled_at if i.pulled_at is not None else i.pushed_at) < limit}


# -- running policies against storage ------------------------------------------------------------

MAX_POLICY_TEXT = 30720
MAX_PREVIEW = 16 * 1024 * 1024


class LifecycleStore:
    """Policies, in-use marks, previews and runs, on top of the manifest store."""

    def __init__(self, driver: Driver, manifests: ManifestStore,
                 audit: AuditLog | None = None) -> None:
        self.driver = driver
        self.manifests = manifests
        self.audit = audit

    # policy text, kept exactly as given

    async def policy(self, name: str) -> str | None:
        try:
            return (await self.driver.get(paths.lifecycle_policy(name),
                                          MAX_POLICY_TEXT * 4)).decode()
        except KeyNotFound:
            return None

    async def put_policy(self, name: str, text: str) -> Policy:
        policy = parse(text)
        await self.driver.put(paths.lifecycle_policy(name), text.encode())
        return policy

    async def delete_policy(self, name: str) -> None:
        await self.driver.delete(paths.lifecycle_policy(name))

    async def state(self, name: str) -> dict[str, Any] | None:
        return await self._record(paths.lifecycle_state(name), records.MAX_RECORD)

    async def preview(self, name: str) -> dict[str, Any] | None:
        return await self._record(paths.lifecycle_preview(name), MAX_PREVIEW)

    async def _record(self, key: str, limit: int) -> dict[str, Any] | None:
        try:
            return records.load(await self.driver.get(key, limit), key)
        except KeyNotFound:
            return None

    # in-use marks

    async def protect(self, name: str, digest: Digest, holder: str = "cli",
                      reason: str = "") -> None:
        """Mark the image in use by `holder` (letters, digits, `._-`)."""
        await self.driver.put(paths.in_use_mark(name, digest, _holder(holder)),
                              records.dump({"since": time.time(), "reason": reason[:256]}))

    async def unprotect(self, name: str, digest: Digest, holder: str | None = None) -> None:
        """Remove `holder`'s mark on the image (every holder's when None)."""
        if holder is None:
            await self.driver.delete_prefix(paths.in_use_holders(name, digest))
        else:
            await self.driver.delete(paths.in_use_mark(name, digest, _holder(holder)))

    async def in_use(self, name: str) -> set[str]:
        """The digests of the repository's images that some holder marks in use."""
        prefix = paths.in_use_marks(name)
        found: set[str] = set()
        async for key in iter_keys(self.driver, prefix):
            parts = key[len(prefix):].split("/")
            if len(parts) == 3:
                found.add(f"{parts[0]}:{parts[1]}")
        return found

    # evaluation

    async def images(self, name: str) -> list[Image]:
        """The repository's images as lifecycle rules see them. Manifests that belong to
        another one (an index's children, a referrer whose subject is present) are not images
        of their own: they go when their owner goes."""
        entries = [e async for e in self.manifests.images(name) if e.revision]
        recorded = await asyncio.gather(*(self.manifests.revision_record(name, e.digest)
                                          for e in entries))
        present = {str(e.digest) for e in entries}
        owned: set[str] = set()
        for entry, record in zip(entries, recorded, strict=True):
            if record is None:
                continue
            if record.get("subject") in present:
                owned.add(str(entry.digest))
            if record.get("mediaType") in mt.INDEXES:
                owned.update(await self._children(name, entry.digest))
        marks = await self.in_use(name)
        pulls = await asyncio.gather(*(self.manifests.last_pull(name, e.digest) for e in entries))
        images = []
        for entry, record, pulled in zip(entries, recorded, pulls, strict=True):
            digest = str(entry.digest)
            if record is None or digest in owned:
                continue
            images.append(Image(digest, list(entry.tags), float(record.get("pushedAt", 0)),
                                pulled, digest in marks))
        return images

    async def _children(self, name: str, digest: Digest) -> list[str]:
        try:
            stored = await self.manifests.get(name, str(digest))
            index = parse_manifest(stored.raw, stored.media_type, digest.algorithm)
        except (ManifestUnknown, ManifestInvalid):
            return []
        return [str(d.digest) for d in index.manifests]

    async def evaluate(self, name: str, text: str | None = None,
                       now: float | None = None) -> Evaluation:
        """What the stored policy (or `text`) would expire now."""
        if text is None:
            text = await self.policy(name)
            if text is None:
                raise LifecyclePolicyNotFound(f"no lifecycle policy for repository {name}")
        return evaluate(parse(text), await self.images(name),
                        time.time() if now is None else now)

    async def save_preview(self, name: str, text: str, result: Evaluation) -> dict[str, Any]:
        record = {"lifecyclePolicyText": text, "status": "COMPLETE", "createdAt": time.time(),
                  "results": [_result(d) for d in result.decisions if d.expire or d.protected]}
        await self.driver.put(paths.lifecycle_preview(name), records.dump(record))
        return record

    async def run(self, name: str, now: float | None = None) -> Evaluation:
        """Expire what the policy selects now; record when it ran and what it removed."""
        result = await self.evaluate(name, now=now)
        expired = []
        for decision in result.expiring:
            try:
                await self.manifests.delete(name, decision.image.digest)
            except ManifestUnknown:
                continue  # deleted meanwhile
            expired.append(_result(decision))
            if self.audit is not None:
                await self.audit.record("lifecycle-policy", "lifecycle:expire",
                                        f"{name}@{decision.image.digest}", None,
                                        {"rulePriority": decision.rule,
                                         "imageTags": decision.image.tags})
        await self.driver.put(paths.lifecycle_state(name), records.dump({
            "lastEvaluatedAt": time.time(), "expired": expired[:1000],
            "expiredCount": len(expired)}))
        return result


async def run_all(store_repositories: RepositoryStore, lifecycle: LifecycleStore) -> dict[str, int]:
    """Run every repository's lifecycle policy; how many images each run expired."""
    expired: dict[str, int] = {}
    async for name in store_repositories.names():
        if await lifecycle.policy(name) is None:
            continue
        try:
            result = await lifecycle.run(name)
        except LifecyclePolicyInvalid as exc:  # stored before a rule change: skip it
            log.warning("lifecycle policy of %s is invalid: %s", name, exc)
            continue
        expired[name] = len(result.expiring)
    return expired


_HOLDER = re.compile(r"[A-Za-z0-9._-]{1,255}")


def _holder(holder: str) -> str:
    if not _HOLDER.fullmatch(holder) or holder in (".", ".."):
        raise ValueError(f"invalid in-use holder {holder[:64]!r}: use letters, digits and ._-")
    return holder


class LifecyclePolicyNotFound(RegistryError):
    pass


def _result(decision: Decision) -> dict[str, Any]:
    return {"imageDigest": decision.image.digest, "imageTags": decision.image.tags,
            "imagePushedAt": decision.image.pushed_at, "appliedRulePriority": decision.rule,
            "action": "EXPIRE", "inUse": decision.protected}
