"""Pull-through cache rules: Create/Describe/Update/Delete/ValidatePullThroughCacheRule.

Upstream credentials are referenced as ECR does, by a Secrets Manager ARN
(`arn:aws:secretsmanager:<region>:<account>:secret:ecr-pullthroughcache/<name>`); the secret
itself is stored sealed in the registry (`registry upstream-secret put <name>`) and never
returned by the API."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from registry.ecr import errors
from registry.ecr.params import check_registry, decode_token, encode_token, max_results
from registry.pullthrough import PullThroughCache, secret_name
from registry.upstream import UpstreamError
from storage.pullthrough import normalise

if TYPE_CHECKING:
    from registry.ecr import Context

_PREFIX = re.compile(r"^([a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*"
                     r"\/?|ROOT)$")
_CREDENTIAL = re.compile(r"^arn:aws(-\w+)*:secretsmanager:[a-zA-Z0-9-:]+:secret:"
                         r"ecr\-pullthroughcache\/[a-zA-Z0-9\/_+=.@-]+$")
UPSTREAMS = ("ecr", "ecr-public", "quay", "k8s", "docker-hub", "github-container-registry",
             "azure-container-registry", "gitlab-container-registry", "chainguard")
MAX_RULES = 50


def _prefix(params: dict[str, Any], key: str = "ecrRepositoryPrefix",
            required: bool = True) -> str | None:
    value = params.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 2 <= len(value) <= 30 or not _PREFIX.match(value):
        raise errors.invalid(f"{key} must be 2 to 30 characters of a repository namespace, "
                             "or ROOT")
    return normalise(value)


async def _credential(context: Context, params: dict[str, Any]) -> str | None:
    arn = params.get("credentialArn")
    if arn is None:
        return None
    if not isinstance(arn, str) or not 50 <= len(arn) <= 612 or not _CREDENTIAL.match(arn):
        raise errors.invalid("credentialArn must name a secret "
                             "arn:aws:secretsmanager:<region>:<account>:secret:"
                             "ecr-pullthroughcache/<name>")
    if await context.store.pull_through.secret(secret_name(arn)) is None:
        raise errors.EcrError("SecretNotFoundException",
                              f"The secret {secret_name(arn)!r} does not exist: store it with "
                              "`registry upstream-secret put`")
    return arn


def _describe(context: Context, record: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in record.items()
             if k in ("ecrRepositoryPrefix", "upstreamRegistryUrl", "createdAt", "updatedAt",
                      "upstreamRegistry", "credentialArn", "customRoleArn",
                      "upstreamRepositoryPrefix")}
    return {**shown, "registryId": context.account}


async def _existing_rule(context: Context, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The rule `ecrRepositoryPrefix` names, or PullThroughCacheRuleNotFoundException."""
    check_registry(context, params)
    prefix = _prefix(params)
    assert prefix is not None
    record = await context.store.pull_through.get(prefix)
    if record is None:
        raise _not_found(context, prefix)
    return prefix, record


def _not_found(context: Context, prefix: str) -> errors.EcrError:
    return errors.EcrError(
        "PullThroughCacheRuleNotFoundException",
        f"The pull through cache rule with prefix '{prefix}' does not exist in the registry "
        f"with id '{context.account}'")


async def create_pull_through_cache_rule(context: Context,
                                         params: dict[str, Any]) -> dict[str, Any]:
    check_registry(context, params)
    prefix = _prefix(params)
    assert prefix is not None
    url = params.get("upstreamRegistryUrl")
    if not isinstance(url, str) or not url:
        raise errors.invalid("upstreamRegistryUrl is required")
    if "://" not in url:
        url = f"https://{url}"
    if not url.startswith(("http://", "https://")):
        raise errors.invalid("upstreamRegistryUrl must be an http(s) URL or a host name")
    upstream = params.get("upstreamRegistry")
    if upstream is not None and upstream not in UPSTREAMS:
        raise errors.EcrError("UnsupportedUpstreamRegistryException",
                              f"upstreamRegistry must be one of {', '.join(UPSTREAMS)}")
    if len(await context.store.pull_through.all()) >= MAX_RULES:
        raise errors.EcrError("LimitExceededException",
                              f"a registry may have at most {MAX_RULES} pull through cache rules")
    now = time.time()
    record: dict[str, Any] = {"ecrRepositoryPrefix": prefix, "upstreamRegistryUrl": url,
                              "createdAt": now, "updatedAt": now}
    if upstream is not None:
        record["upstreamRegistry"] = upstream
    credential = await _credential(context, params)
    if credential is not None:
        record["credentialArn"] = credential
    upstream_prefix = _prefix(params, "upstreamRepositoryPrefix", required=False)
    if upstream_prefix is not None:
        record["upstreamRepositoryPrefix"] = upstream_prefix
    if isinstance(params.get("customRoleArn"), str):
        record["customRoleArn"] = params["customRoleArn"]
    if not await context.store.pull_through.create(prefix, record):
        raise errors.EcrError(
            "PullThroughCacheRuleAlreadyExistsException",
            f"A pull through cache rule with prefix '{prefix}' already exists in the registry "
            f"with id '{context.account}'")
    return _describe(context, record)


async def describe_pull_through_cache_rules(context: Context,
                                            params: dict[str, Any]) -> dict[str, Any]:
    check_registry(context, params)
    rules = await context.store.pull_through.all()
    wanted = params.get("ecrRepositoryPrefixes")
    if wanted is not None:
        if not isinstance(wanted, list) or not 1 <= len(wanted) <= 100:
            raise errors.invalid("ecrRepositoryPrefixes must list 1 to 100 prefixes")
        found = []
        for raw in wanted:
            prefix = _prefix({"p": raw}, "p")
            assert prefix is not None
            if prefix not in rules:
                raise _not_found(context, prefix)
            found.append(_describe(context, rules[prefix]))
        return {"pullThroughCacheRules": found}
    limit = max_results(params, 100, 1000)
    after = decode_token(params)
    names = sorted(p for p in rules if after is None or p > after)
    page = names[:limit]
    result: dict[str, Any] = {"pullThroughCacheRules": [_describe(context, rules[p])
                                                        for p in page]}
    if len(names) > limit:
        result["nextToken"] = encode_token(page[-1])
    return result


async def update_pull_through_cache_rule(context: Context,
                                         params: dict[str, Any]) -> dict[str, Any]:
    prefix, record = await _existing_rule(context, params)
    credential = await _credential(context, params)
    if credential is not None:
        record["credentialArn"] = credential
    if isinstance(params.get("customRoleArn"), str):
        record["customRoleArn"] = params["customRoleArn"]
    record["updatedAt"] = time.time()
    await context.store.pull_through.put(prefix, record)
    return _describe(context, record)


async def delete_pull_through_cache_rule(context: Context,
                                         params: dict[str, Any]) -> dict[str, Any]:
    prefix, record = await _existing_rule(context, params)
    await context.store.pull_through.delete(prefix)
    return _describe(context, record)


async def validate_pull_through_cache_rule(context: Context,
                                           params: dict[str, Any]) -> dict[str, Any]:
    """Whether the upstream answers with the rule's credentials (its /v2/ base)."""
    _, record = await _existing_rule(context, params)
    cache: PullThroughCache = context.request.app.state.pull_through
    result = _describe(context, record)
    try:
        await cache.check(record)
    except UpstreamError as exc:
        return {**result, "isValid": False, "failure": str(exc)[:500]}
    return {**result, "isValid": True}
