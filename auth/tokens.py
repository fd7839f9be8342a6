"""Bearer tokens in the Docker token protocol: JWTs signed by the key ring's current key.

Verification trusts nothing in a token before its signature checks out, and then only what
it was built to accept: our algorithms (each key verifies only with its own), our issuer and
audience, and the kind of token the caller asked for. Every refusal is a `TokenError` whose
message is safe to show clients and never contains the token.

Refresh and login tokens carry the credential generation of their user (`gen`): whoever uses
one compares it with the user's current generation (`auth.authorizer`), which changes whenever
the user's credentials do, so they die with the credential they came from. No token is issued to
live past the credential that bought it (`not_after`)."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt

from auth.keys import KeyRing, PublicKey, algorithm_of

ALLOWED_ALGORITHMS = ("ES256", "RS256")  # never HMAC, never "none"
# Clocks of the issuing and verifying replicas may disagree by this much: applied to `nbf`
# and `iat`, so a fresh token is not refused. `exp` is strict: a client holding an expired
# token simply fetches a new one.
CLOCK_SKEW_LEEWAY = 30
VERIFIED_REMEMBERED = 4096  # verified tokens kept (each a few hundred bytes)
MAX_TOKEN_SIZE = 16 * 1024
MAX_HEADER_SIZE = 2 * 1024
MAX_ACCESS_ENTRIES = 256
ACCESS, REFRESH, LOGIN = "access", "refresh", "login"
_REQUIRED = ("iss", "sub", "aud", "exp", "nbf", "iat", "jti", "kind")
_GENERATION_MAX = 64


class TokenError(Exception):
    """A token we refuse; `reason` is short and safe to show the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Access:
    """One entry of the `access` claim: `repository` `team/app` with `("pull", "push")`."""

    type: str
    name: str
    actions: tuple[str, ...]

    def to_claim(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}

    @classmethod
    def from_claim(cls, claim: object) -> Access:
        if isinstance(claim, dict):
            kind, name, actions = claim.get("type"), claim.get("name"), claim.get("actions")
            if (isinstance(kind, str) and isinstance(name, str) and isinstance(actions, list)
                    and all(isinstance(action, str) for action in actions)):
                return cls(kind, name, tuple(actions))
        raise TokenError("malformed access claim")


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str
    access: tuple[Access, ...]
    issued_at: int
    not_before: int
    expires_at: int
    jti: str
    audience: str
    issuer: str
    kind: str  # ACCESS, REFRESH or LOGIN
    generation: str | None = None  # refresh and login tokens: the user's credential generation


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str = field(repr=False)
    expires_in: int
    issued_at: str  # RFC 3339, as the token endpoint reports it


def _rfc3339(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _read_header(token: object) -> dict[str, Any]:
    """The unverified header, after size checks that run before any parsing."""
    if not isinstance(token, str) or not token.isascii():
        raise TokenError("malformed token")
    if len(token) > MAX_TOKEN_SIZE:
        raise TokenError("token too large")
    if len(token.partition(".")[0]) > MAX_HEADER_SIZE:
        raise TokenError("token header too large")
    if token.count(".") != 2:
        raise TokenError("malformed token")
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.InvalidTokenError, ValueError):
        raise TokenError("malformed token") from None
    return header


class TokenService:
    def __init__(self, keyring: KeyRing, issuer: str, service: str, ttl: int, refresh_ttl: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.service = service
        self.ttl = ttl
        self.refresh_ttl = refresh_ttl
        self.clock = clock
        # Tokens whose signature and claims checked out: (claims, key id), so a client that
        # sends the same token on every request pays for the signature check once (an ES256
        # verify is ~100 µs; the rest of a manifest GET, ~50). Expiry and the key's presence
        # in the key ring are checked again on every use; bounded, oldest dropped first.
        self._verified: OrderedDict[str, tuple[Claims, str]] = OrderedDict()

    def __repr__(self) -> str:
        return f"TokenService(issuer={self.issuer!r}, service={self.service!r})"

    def _lifetime(self, now: int, ttl: int, not_after: int | None) -> int:
        """`ttl`, cut short so the token ends no later than `not_after` (epoch seconds)."""
        return ttl if not_after is None else max(1, min(ttl, not_after - now))

    def issue(self, subject: str, access: Iterable[Access],
              not_after: int | None = None) -> IssuedToken:
        now = int(self.clock())
        ttl = self._lifetime(now, self.ttl, not_after)
        claims = [entry.to_claim() for entry in access]
        return IssuedToken(self._sign(subject, now, ttl, ACCESS, {"access": claims}), ttl,
                           _rfc3339(now))

    def issue_refresh(self, subject: str, generation: str, not_after: int | None = None) -> str:
        """A long-lived token that grants nothing itself: it only buys new access tokens, and
        only while `subject`'s credential generation is still `generation`."""
        now = int(self.clock())
        return self._sign(subject, now, self._lifetime(now, self.refresh_ttl, not_after),
                          REFRESH, {"gen": generation})

    def issue_login(self, subject: str, ttl: int, generation: str) -> tuple[str, int]:
        """A registry password (ECR's GetAuthorizationToken: used as `AWS:<token>`) that
        stands for `subject` until it expires or the user's credential generation changes;
        grants nothing as a bearer token. Returns the token and its expiry (epoch seconds)."""
        now = int(self.clock())
        return self._sign(subject, now, ttl, LOGIN, {"gen": generation}), now + ttl

    def _sign(self, subject: str, now: int, ttl: int, kind: str, extra: dict[str, Any]) -> str:
        key = self.keyring.current
        payload = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + ttl,
                   "nbf": now, "iat": now, "jti": secrets.token_urlsafe(16), "kind": kind,
                   **extra}
        return jwt.encode(payload, key.private_key, algorithm=key.algorithm,
                          headers={"kid": key.kid, "typ": "JWT"})

    async def verify(self, token: str, kind: str = ACCESS) -> Claims:
        remembered = self._verified.get(token)
        if remembered is not None:
            known, signer = remembered
            if known.kind == kind and signer in self.keyring.verification_keys:
                self._check_times(known.expires_at, known.not_before, known.issued_at)
                return known
        header = _read_header(token)
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise TokenError("token algorithm not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("token has no key id")
        key = self.keyring.verification_keys.get(kid)
        if key is None:
            await self.keyring.refresh()  # rate-limited: a rotation on another replica
            key = self.keyring.verification_keys.get(kid)
        if key is None:
            raise TokenError("token signed by an unknown key")
        algorithms = [name for name in ALLOWED_ALGORITHMS if name == algorithm_of(key)]
        if alg not in algorithms:
            raise TokenError("token algorithm does not match its key")
        claims = self._claims(self._decode(token, key, algorithms), kind)
        self._verified[token] = (claims, kid)
        if len(self._verified) > VERIFIED_REMEMBERED:
            self._verified.popitem(last=False)
        return claims

    def _decode(self, token: str, key: PublicKey, algorithms: list[str]) -> dict[str, Any]:
        try:
            # Times are checked in _claims against our clock, with an explicit leeway.
            return jwt.decode(
                token, key, algorithms=algorithms, audience=self.service, issuer=self.issuer,
                options={"require": list(_REQUIRED), "verify_signature": True, "verify_aud": True,
                         "strict_aud": True, "verify_iss": True, "verify_sub": True,
                         "verify_jti": True, "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False})
        except jwt.InvalidSignatureError:
            raise TokenError("bad token signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise TokenError("token is for another service") from None
        except jwt.InvalidIssuerError:
            raise TokenError("token is from another issuer") from None
        except jwt.InvalidAlgorithmError:
            raise TokenError("token algorithm not accepted") from None
        except (jwt.InvalidTokenError, ValueError):
            raise TokenError("malformed token") from None

    def _check_times(self, exp: int, nbf: int, iat: int) -> None:
        now = self.clock()
        if now >= exp:
            raise TokenError("token expired")
        if now + CLOCK_SKEW_LEEWAY < nbf:
            raise TokenError("token not yet valid")
        if now + CLOCK_SKEW_LEEWAY < iat:
            raise TokenError("token issued in the future")

    def _claims(self, payload: dict[str, Any], kind: str) -> Claims:
        if payload["kind"] != kind:
            wanted = {ACCESS: "an access", REFRESH: "a refresh"}.get(kind, "a login")
            raise TokenError(f"not {wanted} token")
        times = payload["exp"], payload["nbf"], payload["iat"]
        if not all(_numeric(value) for value in times):
            raise TokenError("malformed token times")
        exp, nbf, iat = (int(value) for value in times)
        self._check_times(exp, nbf, iat)
        access: tuple[Access, ...] = ()
        generation: str | None = None
        if kind == ACCESS:
            raw = payload.get("access")
            if raw is None:
                raise TokenError("token lacks the 'access' claim")
            if not isinstance(raw, list) or len(raw) > MAX_ACCESS_ENTRIES:
                raise TokenError("malformed access claim")
            access = tuple(Access.from_claim(entry) for entry in raw)
        else:
            if "access" in payload:
                raise TokenError("refresh token carries access")
            # Tokens from before generations existed cannot be revoked, so they are refused.
            generation = payload.get("gen")
            if not isinstance(generation, str) or len(generation) > _GENERATION_MAX:
                raise TokenError("token lacks the 'gen' claim")
        return Claims(subject=payload["sub"], access=access, issued_at=iat, not_before=nbf,
                      expires_at=exp, jti=payload["jti"], audience=payload["aud"],
                      issuer=payload["iss"], kind=kind, generation=generation)
