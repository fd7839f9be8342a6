"""Repository and registry policies: SetRepositoryPolicy, GetRepositoryPolicy,
DeleteRepositoryPolicy, PutRegistryPolicy, GetRegistryPolicy, DeleteRegistryPolicy.

Documents are checked with the parser the authorizer uses and kept as the exact text given.
The authorizer reads them from storage at every decision, so a change holds at once for Basic
and SigV4 callers on every replica; a bearer token keeps what it was granted until it expires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auth.iam_records import parse_policy
from auth.policy import Decision, Policy, PolicyInvalid, Request, evaluate
from registry.auth import client_address, services
from registry.ecr import errors
from registry.ecr.params import existing_repository

if TYPE_CHECKING:
    from registry.ecr import Context


def _parse(params: dict[str, Any]) -> tuple[str, Policy]:
    text = params.get("policyText")
    if not isinstance(text, str):
        raise errors.invalid("policyText must be a string")
    try:
        return text, parse_policy(text, True)
    except PolicyInvalid as exc:
        raise errors.invalid(f"Invalid parameter at 'policyText': {exc}") from None



def _no_repository_policy(context: Context, name: str) -> errors.EcrError:
    return errors.EcrError(
        "RepositoryPolicyNotFoundException",
        f"Repository policy does not exist for the repository with name '{name}' in the "
        f"registry with id '{context.account}'")


def _no_registry_policy(context: Context) -> errors.EcrError:
    return errors.EcrError("RegistryPolicyNotFoundException",
                           f"Registry policy does not exist in the registry with id "
                           f"'{context.account}'")


def _locks_out(context: Context, name: str, policy: Policy) -> bool:
    """Whether `policy` explicitly denies the caller ecr:SetRepositoryPolicy on `name`."""
    caller = context.caller
    request_context = {"aws:SourceIp": client_address(context.request)}
    if caller.user:
        request_context.update({"aws:username": caller.user, "aws:PrincipalArn": caller.arn})
    request = Request(caller, "ecr:SetRepositoryPolicy", context.repository_arn(name),
                      request_context)
    return evaluate(request, (), [policy]) is Decision.EXPLICIT_DENY


async def set_repository_policy(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    name, _ = await existing_repository(context, params)
    text, policy = _parse(params)
    force = params.get("force", False)
    if not isinstance(force, bool):
        raise errors.invalid("force must be a boolean")
    # ECR's guard against accidental lock-out; it matters only where policies are enforced.
    if not force and services(context.request) is not None and _locks_out(context, name, policy):
        raise errors.invalid(
            "The policy would prevent you from setting a repository policy again "
            f"(it denies {context.caller.arn} ecr:SetRepositoryPolicy); pass force to set it")
    await context.store.iam.set_repository_policy(name, text)
    return {"registryId": context.account, "repositoryName": name, "policyText": text}


async def get_repository_policy(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    name, _ = await existing_repository(context, params)
    text = await context.store.iam.repository_policy(name)
    if text is None:
        raise _no_repository_policy(context, name)
    return {"registryId": context.account, "repositoryName": name, "policyText": text}


async def delete_repository_policy(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    name, _ = await existing_repository(context, params)
    text = await context.store.iam.repository_policy(name)
    if text is None:
        raise _no_repository_policy(context, name)
    await context.store.iam.set_repository_policy(name, None)
    return {"registryId": context.account, "repositoryName": name, "policyText": text}


async def put_registry_policy(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    text, _ = _parse(params)
    await context.store.iam.set_registry_policy(text)
    return {"registryId": context.account, "policyText": text}


async def get_registry_policy(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    text = await context.store.iam.registry_policy()
    if text is None:
        raise _no_registry_policy(context)
    return {"registryId": context.account, "policyText": text}


async def delete_registry_policy(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    text = await context.store.iam.registry_policy()
    if text is None:
        raise _no_registry_policy(context)
    await context.store.iam.set_registry_policy(None)
    return {"registryId": context.account, "policyText": text}
