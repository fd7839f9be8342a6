"""Who is asking, and may they: credentials to a caller, scopes to granted access.

Bearer tokens carry their granted access (decided when the token was issued); Basic
credentials and anonymous requests are decided against the policies at request time.

A password is checked against the user record on every login (or a minute's cache that holds
only while the record keeps the same hash); a refresh or authorization token only while its
user exists, is enabled and still has the credential generation the token names. Password
guesses are throttled per (user, address) and per address (`auth.throttle`); tokens are signed,
so no one can guess one, and their failures are not counted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from auth.actions import PULL, SCOPE_ACTIONS, Scope, repository_arn
from auth.errors import TooManyAttempts, Unauthenticated
from auth.policy import Caller, Policy, Request, evaluate
from auth.secrets import constant_time_equal
from auth.throttle import LoginThrottle, LoginThrottled
from auth.tokens import LOGIN, REFRESH, Access, Claims, TokenError

AWS_USER = "AWS"  # ECR's user name for authorization tokens
_BASIC_CACHE_TTL = 60.0
_BASIC_CACHE_SIZE = 1024


class UserLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def password_hash(self) -> str: ...
    @property
    def groups(self) -> tuple[str, ...]: ...
    @property
    def token_generation(self) -> str: ...
    @property
    def disabled(self) -> bool: ...


class DirectoryLike(Protocol):
    async def authenticate(self, name: str, password: str) -> UserLike | None: ...
    async def get_user(self, name: str) -> UserLike | None: ...
    async def identity_policies(self, user: str) -> list[Policy]: ...
    async def repository_policy(self, repository: str) -> Policy | None: ...
    async def registry_policy(self) -> Policy | None: ...
    async def lookup_access_key(self, key_id: str) -> KeyOwnerLike | None: ...


class KeyOwnerLike(Protocol):
    @property
    def user(self) -> str: ...
    @property
    def secret(self) -> str: ...


class TokenVerifier(Protocol):
    async def verify(self, token: str, kind: str = "access") -> Claims: ...


@dataclass(frozen=True, slots=True)
class Login:
    """A checked credential: who, the user's credential generation when it was checked (what
    a refresh token minted from it carries), and when the credential itself ends (an
    authorization or refresh token's expiry; None for a password)."""

    caller: Caller
    generation: str = ""
    expires_at: int | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    caller: Caller
    via: str  # "anonymous", "basic" or "bearer"
    token_access: tuple[Access, ...] | None = None  # what a bearer token grants


class Authorizer:
    def __init__(self, directory: DirectoryLike, tokens: TokenVerifier, *, account: str,
                 region: str, throttle: LoginThrottle) -> None:
        self.directory = directory
        self.tokens = tokens
        self.account = account
        self.region = region
        self.throttle = throttle
        # (name, sha256(password)) -> (valid until, the password hash it was verified against)
        self._basic: OrderedDict[tuple[str, bytes], tuple[float, str]] = OrderedDict()

    # -- authentication ------------------------------------------------------------------------

    async def identify(self, authorization: str | None, address: str) -> Identity:
        if not authorization:
            return Identity(Caller(self.account), "anonymous")
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            try:
                claims = await self.tokens.verify(value.strip())
            except TokenError as exc:
                raise Unauthenticated(f"invalid token: {exc}", error="invalid_token") from None
            caller = Caller(self.account, claims.subject or None)
            return Identity(caller, "bearer", claims.access)
        if scheme.lower() == "basic":
            name, password = parse_basic(value)
            return Identity((await self.login(name, password, address)).caller, "basic")
        raise Unauthenticated(f"unsupported authorization scheme {scheme[:20]!r}")

    async def login(self, name: str, password: str, address: str) -> Login:
        """Check a user's password (throttled), or an `AWS:<authorization token>`.

        The scrypt check is skipped for a password verified in the last minute, but only while
        the user's record still holds the very hash it was verified against: a changed
        password, a removed user or changed groups take effect at once. Unknown users, wrong
        passwords and disabled users fail alike, in answer and in time."""
        user_key = None if name == AWS_USER else name
        try:
            self.throttle.check(address, user_key)
        except LoginThrottled as exc:
            raise TooManyAttempts("too many failed logins; try again later",
                                  exc.retry_after) from None
        if user_key is None:
            return await self._login_token(password)
        key = (name, hashlib.sha256(password.encode()).digest())
        cached = self._basic.get(key)
        if cached is not None and cached[0] > time.monotonic():
            current = await self.directory.get_user(name)
            if (current is not None and not current.disabled
                    and current.password_hash == cached[1]):
                return self._login_of(current)
        user = await self.directory.authenticate(name, password)
        if user is None:
            self._basic.pop(key, None)
            await asyncio.sleep(self.throttle.failed(address, name))
            raise Unauthenticated("invalid username or password")
        self.throttle.succeeded(address, name)
        self._basic[key] = (time.monotonic() + _BASIC_CACHE_TTL, user.password_hash)
        while len(self._basic) > _BASIC_CACHE_SIZE:
            self._basic.popitem(last=False)
        return self._login_of(user)

    async def refresh(self, token: str) -> Login:
        """The Login a refresh token stands for, while its credential generation holds."""
        try:
            claims = await self.tokens.verify(token, kind=REFRESH)
        except TokenError as exc:
            raise Unauthenticated(f"invalid refresh token: {exc}") from None
        return await self._current(claims, "the refresh token")

    async def _login_token(self, token: str) -> Login:
        """`AWS:<token>` from ECR's GetAuthorizationToken, as docker login sends it."""
        try:
            claims = await self.tokens.verify(token, kind=LOGIN)
        except TokenError:
            raise Unauthenticated("invalid or expired authorization token") from None
        return await self._current(claims, "the authorization token")

    async def _current(self, claims: Claims, what: str) -> Login:
        user = await self.directory.get_user(claims.subject)
        if (user is None or user.disabled or claims.generation is None
                or not constant_time_equal(user.token_generation, claims.generation)):
            raise Unauthenticated(f"{what} was revoked: log in again")
        return Login(self._login_of(user).caller, claims.generation, claims.expires_at)

    def _login_of(self, user: UserLike) -> Login:
        return Login(Caller(self.account, user.name, tuple(user.groups)), user.token_generation)

    async def caller_of(self, identity: Identity) -> Caller:
        """The caller with its current groups (a bearer token names only the subject)."""
        if identity.via != "bearer" or identity.caller.user is None:
            return identity.caller
        user = await self.directory.get_user(identity.caller.user)
        groups = tuple(user.groups) if user is not None else ()
        return Caller(self.account, identity.caller.user, groups)

    # -- authorisation -------------------------------------------------------------------------

    async def permits(self, identity: Identity, repository: str, action: str,
                      address: str) -> bool:
        if identity.token_access is not None:
            return any(a.type == "repository" and a.name == repository and action in a.actions
                       for a in identity.token_access)
        return await self.policy_allows(identity.caller, repository, action, address)

    def token_permits_catalog(self, identity: Identity) -> bool:
        if identity.token_access is None:
            return True  # Basic and anonymous callers: the listing is filtered per repository
        return any(a.type == "registry" and a.name == "catalog" and "*" in a.actions
                   for a in identity.token_access)

    async def policy_allows(self, caller: Caller, repository: str, action: str,
                            address: str) -> bool:
        iam_actions = SCOPE_ACTIONS.get(action)
        if iam_actions is None:
            return False
        return await self.allows(caller, iam_actions,
                                  repository_arn(self.region, self.account, repository),
                                  repository, address)

    async def denied_action(self, caller: Caller, repository: str, action: str, address: str,
                            first: str | None = None) -> str | None:
        """Which IAM action policy refuses among those the scope action `action` needs (`first`,
        the request's own, is looked at first); None when it allows them all."""
        needed = sorted(SCOPE_ACTIONS.get(action, ()), key=lambda iam: iam != first)
        caller_policies = await self._caller_policies(caller)
        resource = repository_arn(self.region, self.account, repository)
        for iam_action in needed:
            if not await self._decide(caller, caller_policies, [iam_action], resource,
                                      repository, address):
                return iam_action
        return None

    async def allows(self, caller: Caller, iam_actions: Sequence[str], resource: str,
                     repository: str | None, address: str) -> bool:
        """Whether policy allows every one of `iam_actions` on `resource`; the repository's
        own policy applies when `repository` is named, the registry policy always."""
        caller_policies = await self._caller_policies(caller)
        return await self._decide(caller, caller_policies, iam_actions, resource, repository,
                                  address)

    async def pullable(self, caller: Caller, names: Sequence[str], address: str) -> list[str]:
        """The names the caller may pull, reading its own policies once for the whole list."""
        caller_policies = await self._caller_policies(caller)
        return [name for name in names if await self._decide(
            caller, caller_policies, SCOPE_ACTIONS[PULL],
            repository_arn(self.region, self.account, name), name, address)]

    async def _caller_policies(self, caller: Caller) -> tuple[list[Policy], Policy | None]:
        """The caller's identity policies and the registry policy."""
        identity_policies = (await self.directory.identity_policies(caller.user)
                             if caller.user else [])
        return identity_policies, await self.directory.registry_policy()

    async def _decide(self, caller: Caller, caller_policies: tuple[list[Policy], Policy | None],
                      iam_actions: Sequence[str], resource: str, repository: str | None,
                      address: str) -> bool:
        identity_policies, registry_policy = caller_policies
        repository_policy = (await self.directory.repository_policy(repository)
                             if repository else None)
        resource_policies = [p for p in (repository_policy, registry_policy) if p is not None]
        context = {"aws:SourceIp": address}
        if caller.user:
            context.update({"aws:username": caller.user, "aws:PrincipalArn": caller.arn})
        return all(
            evaluate(Request(caller, action, resource, context), identity_policies,
                     resource_policies).allowed
            for action in iam_actions
        )

    async def grant(self, caller: Caller, scopes: Sequence[Scope], address: str) -> list[Access]:
        """Down-scope what a token request asks for to what policy allows (the token spec's
        behaviour: the token carries only granted actions)."""
        granted: list[Access] = []
        caller_policies = await self._caller_policies(caller)
        for scope in scopes:
            if scope.type == "registry" and scope.name == "catalog":
                # Anyone may ask; the listing shows only repositories the caller may pull.
                granted.append(Access("registry", "catalog", ("*",)))
                continue
            if scope.type != "repository":
                continue
            resource = repository_arn(self.region, self.account, scope.name)
            allowed = tuple([a for a in scope.actions if a in SCOPE_ACTIONS and await self._decide(
                caller, caller_policies, SCOPE_ACTIONS[a], resource, scope.name, address)])
            granted.append(Access("repository", scope.name, allowed))
        return granted


def parse_basic(value: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Unauthenticated("malformed Basic credentials") from None
    name, sep, password = decoded.partition(":")
    if not sep or not name:
        raise Unauthenticated("malformed Basic credentials")
    return name, password
