"""IAM-style policy documents: parsing with errors that name the problem, and evaluation.

Evaluation follows IAM within one account: an explicit Deny in any applicable policy wins;
otherwise an Allow in an identity policy (attached to the user or one of its groups) or in the
resource policy (whose Principal matches the caller) allows; otherwise the request is denied.
"""

from __future__ import annotations

import enum
import fnmatch
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from storage.content.jsontext import JsonInvalid, loads

MAX_POLICY_SIZE = 10 * 1024  # IAM's inline limit; ECR allows 10,240 characters too
VERSIONS = ("2012-10-17", "2008-10-17")


class PolicyInvalid(ValueError):
    """A policy document that cannot be used; the message names the problem."""


class Decision(enum.Enum):
    ALLOW = "allow"
    EXPLICIT_DENY = "explicit-deny"
    IMPLICIT_DENY = "implicit-deny"

    @property
    def allowed(self) -> bool:
        return self is Decision.ALLOW


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: an authenticated user (with groups) or the anonymous caller."""

    account: str
    user: str | None = None  # None: anonymous
    groups: tuple[str, ...] = ()

    @property
    def anonymous(self) -> bool:
        return self.user is None

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{self.account}:user/{self.user}" if self.user else "anonymous"

    def principal_arns(self) -> set[str]:
        """Every principal form that names this caller in a resource policy."""
        if self.user is None:
            return set()
        arns = {self.arn, f"arn:aws:iam::{self.account}:root", self.account}
        arns.update(f"arn:aws:iam::{self.account}:group/{g}" for g in self.groups)
        return arns


@dataclass(frozen=True, slots=True)
class Request:
    caller: Caller
    action: str  # "ecr:BatchGetImage"
    resource: str  # "arn:aws:ecr:<region>:<account>:repository/<name>"
    context: Mapping[str, str | Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Statement:
    sid: str | None
    allow: bool
    actions: tuple[str, ...]
    not_actions: bool
    resources: tuple[str, ...] | None  # None: the resource the policy is attached to
    not_resources: bool
    principals: tuple[str, ...] | None  # None in identity policies
    conditions: tuple[tuple[str, str, tuple[str, ...]], ...]  # operator, key, values

    def matches(self, request: Request) -> bool:
        if self.principals is not None and not _principal_matches(self.principals, request.caller):
            return False
        action_hit = any(_wildcard(p, request.action, fold=True) for p in self.actions)
        if action_hit == self.not_actions:
            return False
        if self.resources is not None:
            resource_hit = any(_wildcard(p, request.resource) for p in self.resources)
            if resource_hit == self.not_resources:
                return False
        return all(_condition(op, key, values, request.context)
                   for op, key, values in self.conditions)


@dataclass(frozen=True, slots=True)
class Policy:
    statements: tuple[Statement, ...]
    text: str

    @classmethod
    def parse(cls, text: str | bytes, *, resource_policy: bool) -> Policy:
        if isinstance(text, bytes):
            try:
                text = text.decode()
            except UnicodeDecodeError:
                raise PolicyInvalid("policy is not UTF-8 text") from None
        if len(text) > MAX_POLICY_SIZE:
            raise PolicyInvalid(f"policy is longer than {MAX_POLICY_SIZE} characters")
        try:
            doc = loads(text)
        except JsonInvalid as exc:
            raise PolicyInvalid(f"policy is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise PolicyInvalid("policy must be a JSON object")
        unknown = set(doc) - {"Version", "Id", "Statement"}
        if unknown:
            raise PolicyInvalid(f"unknown policy element {sorted(unknown)[0]!r}")
        version = doc.get("Version", "2008-10-17")
        if version not in VERSIONS:
            raise PolicyInvalid(f"Version must be one of {', '.join(VERSIONS)}")
        raw = doc.get("Statement")
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise PolicyInvalid("Statement must be a statement object or a non-empty list")
        statements = tuple(_statement(s, i, resource_policy) for i, s in enumerate(raw))
        sids = [s.sid for s in statements if s.sid]
        if len(sids) != len(set(sids)):
            raise PolicyInvalid("statement Sids must be unique")
        return cls(statements, text)


def evaluate(request: Request, identity_policies: Iterable[Policy] = (),
             resource_policies: Iterable[Policy] = ()) -> Decision:
    allowed = False
    for policy in (*identity_policies, *resource_policies):
        for statement in policy.statements:
            if statement.matches(request):
                if not statement.allow:
                    return Decision.EXPLICIT_DENY
                allowed = True
    return Decision.ALLOW if allowed else Decision.IMPLICIT_DENY


# -- parsing -----------------------------------------------------------------------------------

_STATEMENT_KEYS = {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction",
                   "Resource", "NotResource", "Condition"}


def _statement(raw: Any, index: int, resource_policy: bool) -> Statement:
    where = f"Statement[{index}]"
    if not isinstance(raw, dict):
        raise PolicyInvalid(f"{where} must be an object")
    unknown = set(raw) - _STATEMENT_KEYS
    if unknown:
        raise PolicyInvalid(f"{where}: unknown element {sorted(unknown)[0]!r}")
    sid = raw.get("Sid")
    if sid is not None and (not isinstance(sid, str) or not re.fullmatch(r"[A-Za-z0-9 _-]*", sid)):
        raise PolicyInvalid(f"{where}.Sid must be letters, digits, spaces, '-' or '_'")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyInvalid(f"{where}.Effect must be Allow or Deny")
    if "NotPrincipal" in raw:
        raise PolicyInvalid(f"{where}: NotPrincipal is not supported")
    principals = _principals(raw, where, resource_policy)
    actions, not_actions = _either(raw, "Action", "NotAction", where, required=True)
    for action in actions:
        if action != "*" and not re.fullmatch(r"[A-Za-z0-9-]+:[A-Za-z0-9*?]+", action):
            raise PolicyInvalid(f"{where}: invalid action {action!r} (expected service:Action)")
    resources: tuple[str, ...] | None
    resources, not_resources = _either(raw, "Resource", "NotResource", where,
                                       required=not resource_policy)
    if not resources and not not_resources:
        resources = None
    return Statement(sid, effect == "Allow", actions, not_actions, resources, not_resources,
                     principals, _conditions(raw.get("Condition"), where))


def _principals(raw: dict[str, Any], where: str, resource_policy: bool) -> tuple[str, ...] | None:
    if "Principal" not in raw:
        if resource_policy:
            raise PolicyInvalid(f"{where}: a repository policy statement needs a Principal")
        return None
    if not resource_policy:
        raise PolicyInvalid(f"{where}: identity policies must not name a Principal")
    value = raw["Principal"]
    if value == "*":
        return ("*",)
    if not isinstance(value, dict) or set(value) - {"AWS"} or "AWS" not in value:
        raise PolicyInvalid(f'{where}.Principal must be "*" or {{"AWS": ...}}')
    names = _strings(value["AWS"], f"{where}.Principal.AWS")
    for name in names:
        if name != "*" and not re.fullmatch(
                r"\d{12}|arn:aws:iam::\d{12}:(root|user/[\w+=,.@/-]+|group/[\w+=,.@/-]+)", name):
            raise PolicyInvalid(f"{where}.Principal: invalid principal {name!r}")
    return names


def _either(raw: dict[str, Any], key: str, not_key: str, where: str,
            required: bool) -> tuple[tuple[str, ...], bool]:
    if key in raw and not_key in raw:
        raise PolicyInvalid(f"{where}: use {key} or {not_key}, not both")
    if key in raw:
        return _strings(raw[key], f"{where}.{key}"), False
    if not_key in raw:
        return _strings(raw[not_key], f"{where}.{not_key}"), True
    if required:
        raise PolicyInvalid(f"{where}: {key} is required")
    return (), False


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v
                                                            for v in value):
        raise PolicyInvalid(f"{where} must be a string or a non-empty list of strings")
    return tuple(value)


def _conditions(raw: Any, where: str) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise PolicyInvalid(f"{where}.Condition must be an object")
    out = []
    for operator, block in raw.items():
        base = _base_operator(operator)
        if base not in _OPERATORS:
            raise PolicyInvalid(f"{where}.Condition: unsupported operator {operator!r}")
        if not isinstance(block, dict) or not block:
            raise PolicyInvalid(f"{where}.Condition.{operator} must map keys to values")
        for key, values in block.items():
            if isinstance(values, bool):
                values = "true" if values else "false"
            strings = _strings(values, f"{where}.Condition.{operator}.{key}")
            if base in ("IpAddress", "NotIpAddress"):
                for value in strings:
                    try:
                        ipaddress.ip_network(value, strict=False)
                    except ValueError:
                        raise PolicyInvalid(
                            f"{where}.Condition.{operator}.{key}: invalid CIDR {value!r}") from None
            out.append((operator, key, strings))
    return tuple(out)


# -- matching ----------------------------------------------------------------------------------

def _principal_matches(principals: tuple[str, ...], caller: Caller) -> bool:
    if "*" in principals:
        return True
    return bool(caller.principal_arns() & set(principals))


@lru_cache(maxsize=4096)
def _pattern(pattern: str, fold: bool) -> re.Pattern[str]:
    regex = fnmatch.translate(pattern.replace("[", "[[]"))
    return re.compile(regex, re.IGNORECASE if fold else 0)


def _wildcard(pattern: str, value: str, fold: bool = False) -> bool:
    """IAM wildcards: `*` any run, `?` one character; nothing else is special."""
    if "*" not in pattern and "?" not in pattern:
        return pattern.lower() == value.lower() if fold else pattern == value
    return _pattern(pattern, fold).match(value) is not None


def _base_operator(operator: str) -> str:
    base = operator.split(":", 1)[1] if operator.startswith(("ForAnyValue:", "ForAllValues:")) \
        else operator
    return base[:-len("IfExists")] if base.endswith("IfExists") else base


def _ip_in(value: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(value) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


_Test = Callable[[str, str], bool]
_OPERATORS: dict[str, tuple[_Test, bool]] = {  # test(actual, expected), negated
    "StringEquals": (lambda a, e: a == e, False),
    "StringNotEquals": (lambda a, e: a == e, True),
    "StringEqualsIgnoreCase": (lambda a, e: a.lower() == e.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda a, e: a.lower() == e.lower(), True),
    "StringLike": (lambda a, e: _wildcard(e, a), False),
    "StringNotLike": (lambda a, e: _wildcard(e, a), True),
    "ArnEquals": (lambda a, e: a == e, False),
    "ArnNotEquals": (lambda a, e: a == e, True),
    "ArnLike": (lambda a, e: _wildcard(e, a), False),
    "ArnNotLike": (lambda a, e: _wildcard(e, a), True),
    "Bool": (lambda a, e: a.lower() == e.lower(), False),
    "IpAddress": (_ip_in, False),
    "NotIpAddress": (_ip_in, True),
}


def _condition(operator: str, key: str, expected: tuple[str, ...],
               context: Mapping[str, str | Sequence[str]]) -> bool:
    base = _base_operator(operator)
    test, negated = _OPERATORS[base]
    present = next((v for k, v in context.items() if k.lower() == key.lower()), None)
    if present is None:
        # A missing key fails a positive test, passes a negated one; ...IfExists passes.
        return operator.endswith("IfExists") or negated
    actual = [present] if isinstance(present, str) else list(present)
    if operator.startswith("ForAllValues:"):
        hits = [any(test(a, e) for e in expected) for a in actual]
        return all(not h for h in hits) if negated else all(hits)
    hit = any(test(a, e) for a in actual for e in expected)
    return not hit if negated else hit
