"""Token signing keys: generated once, kept encrypted in the storage backend, shared by every
replica, rotated without invalidating the tokens already out.

Records live under the IAM kind "signing-keys": one per key, named by its kid
(`{"kid", "algorithm", "createdAt", "privateKey": <sealed PKCS#8 PEM>, "retiredAt"?}`), and
one pointer named "current" (`{"kid"}`) that says which key signs. Both the first key and the
first pointer are written create-if-absent, so replicas that start together converge on one
key. Private keys never appear in reprs, logs or errors."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from auth.secrets import SecretBox, SecretKeyError

KIND = "signing-keys"
CURRENT = "current"
ALGORITHMS = ("ES256", "RS256")
RSA_BITS = 2048
_PAGE = 1000
REFRESH_INTERVAL = 5.0  # seconds between reloads forced by tokens naming an unknown kid

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_KID = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256 digest

log = logging.getLogger("registry.auth")


class KeyRingError(Exception):
    """Signing keys cannot be loaded or changed; the message names the key, never its secret."""


class KeyStore(Protocol):
    """The part of `storage.iam.IamStore` the key ring uses."""

    async def get(self, kind: str, name: str) -> dict[str, Any] | None: ...
    async def put(self, kind: str, name: str, record: dict[str, Any]) -> None: ...
    async def create(self, kind: str, name: str, record: dict[str, Any]) -> bool: ...
    async def delete(self, kind: str, name: str) -> bool: ...
    async def names(self, kind: str, last: str | None = None, limit: int = 1000) -> list[str]: ...


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(value: int, length: int = 0) -> bytes:
    return value.to_bytes(length or max(1, (value.bit_length() + 7) // 8), "big")


def jwk_members(public_key: PublicKey) -> dict[str, str]:
    """The required JWK members of a public key (RFC 7518 section 6), in thumbprint order."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise KeyRingError("only P-256 EC keys are supported")
        point = public_key.public_numbers()
        return {"crv": "P-256", "kty": "EC", "x": _b64url(_uint(point.x, 32)),
                "y": _b64url(_uint(point.y, 32))}
    numbers = public_key.public_numbers()
    return {"e": _b64url(_uint(numbers.e)), "kty": "RSA", "n": _b64url(_uint(numbers.n))}


def jwk_thumbprint(members: Mapping[str, str]) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, without whitespace."""
    canonical = json.dumps(dict(members), sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def algorithm_of(key: PublicKey | PrivateKey) -> str | None:
    """The one JWS algorithm this key may be used with; None for curves and sizes we refuse."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return "ES256" if isinstance(key.curve, ec.SECP256R1) else None
    return "RS256" if key.key_size >= RSA_BITS else None


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    algorithm: str  # "ES256" (P-256) or "RS256" (2048-bit)
    private_key: PrivateKey = field(repr=False, compare=False)
    created_at: float

    @classmethod
    def generate(cls, algorithm: str, created_at: float) -> SigningKey:
        private_key: PrivateKey
        if algorithm == "ES256":
            private_key = ec.generate_private_key(ec.SECP256R1())
        elif algorithm == "RS256":
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        else:
            raise KeyRingError(f"unsupported signing algorithm {algorithm!r}")
        kid = jwk_thumbprint(jwk_members(private_key.public_key()))
        return cls(kid, algorithm, private_key, created_at)

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        return {**jwk_members(self.public_key), "kid": self.kid, "alg": self.algorithm,
                "use": "sig"}


def _context(kid: str) -> str:
    # Binds the ciphertext to this use and this key, so no other sealed secret fits here.
    return f"{KIND}/{kid}"


def _to_record(key: SigningKey, box: SecretBox) -> dict[str, Any]:
    pem = key.private_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    return {"kid": key.kid, "algorithm": key.algorithm, "createdAt": key.created_at,
            "privateKey": box.seal(pem, context=_context(key.kid))}


def _from_record(name: str, record: dict[str, Any], box: SecretBox) -> SigningKey:
    kid, algorithm, created_at = record.get("kid"), record.get("algorithm"), record.get("createdAt")
    sealed = record.get("privateKey")
    if (kid != name or algorithm not in ALGORITHMS or not isinstance(sealed, str)
            or not isinstance(created_at, int | float) or isinstance(created_at, bool)):
        raise KeyRingError(f"signing key record {name!r} is malformed")
    try:
        pem = box.open(sealed, context=_context(name))
    except SecretKeyError:
        raise KeyRingError(f"cannot decrypt signing key {name!r}: is auth.secret_key the one "
                           "it was stored with?") from None
    try:
        private_key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise KeyRingError(f"signing key {name!r} does not hold a usable private key") from None
    if not (isinstance(private_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
            and algorithm_of(private_key) == algorithm):
        raise KeyRingError(f"signing key {name!r} does not match its algorithm")
    if jwk_thumbprint(jwk_members(private_key.public_key())) != name:
        raise KeyRingError(f"signing key {name!r} does not match its kid")
    return SigningKey(name, algorithm, private_key, float(created_at))


class KeyRing:
    """The current signing key and every unretired key that still verifies.

    Build it with `await KeyRing.load(...)`. Other replicas learn of a rotation on their next
    `refresh()`; a token naming an unknown kid triggers one (at most every `refresh_interval`)."""

    def __init__(self, store: KeyStore, box: SecretBox, algorithm: str, *,
                 clock: Callable[[], float] = time.time,
                 refresh_interval: float = REFRESH_INTERVAL) -> None:
        if algorithm not in ALGORITHMS:
            raise KeyRingError(f"unsupported signing algorithm {algorithm!r}")
        self.algorithm = algorithm
        self._store, self._box, self._clock = store, box, clock
        self._refresh_interval = refresh_interval
        self._current: SigningKey | None = None
        self._keys: dict[str, SigningKey] = {}
        self._public: Mapping[str, PublicKey] = MappingProxyType({})
        self._lock = asyncio.Lock()
        self._last_refresh: float | None = None

    def __repr__(self) -> str:
        current = self._current.kid if self._current else None
        return f"KeyRing(algorithm={self.algorithm!r}, current={current!r}, keys={len(self._keys)})"

    @classmethod
    async def load(cls, store: KeyStore, box: SecretBox, algorithm: str, *,
                   clock: Callable[[], float] = time.time,
                   refresh_interval: float = REFRESH_INTERVAL) -> KeyRing:
        ring = cls(store, box, algorithm, clock=clock, refresh_interval=refresh_interval)
        await ring._load()
        return ring

    @property
    def current(self) -> SigningKey:
        if self._current is None:
            raise KeyRingError("the key ring is not loaded")
        return self._current

    @property
    def verification_keys(self) -> Mapping[str, PublicKey]:
        return self._public

    def public_jwks(self) -> dict[str, list[dict[str, str]]]:
        keys = sorted(self._keys.values(), key=lambda k: (k.created_at, k.kid), reverse=True)
        return {"keys": [key.public_jwk() for key in keys]}

    async def rotate(self) -> SigningKey:
        """A new key (in the configured algorithm) signs from now on; old ones still verify."""
        key = await self._generate()
        await self._store.put(KIND, CURRENT, {"kid": key.kid})
        self._set(key, {**self._keys, key.kid: key})
        log.info("signing key rotated: %s is current", key.kid)
        return key

    async def retire(self, kid: str) -> None:
        """Stop accepting tokens signed by `kid` (which must not be the current key)."""
        pointer = await self._store.get(KIND, CURRENT) or {}
        if kid in (self.current.kid, pointer.get("kid")):
            raise KeyRingError("cannot retire the current signing key: rotate first")
        record = await self._store.get(KIND, kid) if _KID.fullmatch(kid) else None
        if record is None:
            raise KeyRingError(f"no signing key {kid!r}")
        if record.get("retiredAt") is None:
            await self._store.put(KIND, kid, {**record, "retiredAt": self._clock()})
        self._set(self.current, {k: v for k, v in self._keys.items() if k != kid})
        log.info("signing key retired: %s", kid)

    async def refresh(self) -> bool:
        """Reload from storage unless that happened under `refresh_interval` ago; True if it
        reloaded. Unreadable records are logged and skipped, so one bad record written by a
        misconfigured replica cannot stop verification here."""
        async with self._lock:
            now = time.monotonic()
            if self._last_refresh is not None and now - self._last_refresh < self._refresh_interval:
                return False
            self._last_refresh = now
            pointer, keys = await self._read(strict=False)
            current = keys.get(pointer) if pointer else None
            if current is None:  # keep signing with what we have rather than stop
                current = self.current
                keys.setdefault(current.kid, current)
            self._set(current, keys)
            return True

    # -- internals ---------------------------------------------------------------------------

    def _set(self, current: SigningKey, keys: dict[str, SigningKey]) -> None:
        self._current, self._keys = current, keys
        self._public = MappingProxyType({kid: key.public_key for kid, key in keys.items()})

    async def _load(self) -> None:
        for _ in range(3):
            pointer, keys = await self._read(strict=True)
            if pointer is not None:
                if pointer not in keys:
                    raise KeyRingError(f"the current signing key {pointer!r} is missing or retired")
                self._set(keys[pointer], keys)
                break
            key = await self._generate()
            if await self._store.create(KIND, CURRENT, {"kid": key.kid}):
                self._set(key, {**keys, key.kid: key})
                log.info("signing key created: %s", key.kid)
                break
            # Another replica set the first key meanwhile: drop ours (it signed nothing), adopt it.
            await self._store.delete(KIND, key.kid)
        else:
            raise KeyRingError("could not agree on a current signing key")
        if self.current.algorithm != self.algorithm:
            log.warning("signing algorithm changed from %s to %s: rotating",
                        self.current.algorithm, self.algorithm)
            await self.rotate()

    async def _generate(self) -> SigningKey:
        key = SigningKey.generate(self.algorithm, self._clock())
        if not await self._store.create(KIND, key.kid, _to_record(key, self._box)):
            raise KeyRingError(f"signing key {key.kid!r} exists already")
        return key

    async def _read(self, strict: bool) -> tuple[str | None, dict[str, SigningKey]]:
        """The pointer's kid and every unretired key. The pointer is read first: a key is
        always stored before a pointer names it, so the listing that follows includes it."""
        pointer = await self._store.get(KIND, CURRENT)
        kid = pointer.get("kid") if pointer else None
        if pointer is not None and not isinstance(kid, str):
            raise KeyRingError("the signing key pointer 'current' is malformed")
        names: list[str] = []
        while True:
            batch = await self._store.names(KIND, last=names[-1] if names else None, limit=_PAGE)
            names.extend(batch)
            if len(batch) < _PAGE:
                break
        names = [name for name in names if name != CURRENT]
        records = await asyncio.gather(*(self._store.get(KIND, name) for name in names))
        keys: dict[str, SigningKey] = {}
        for name, record in zip(names, records, strict=True):
            if record is None or record.get("retiredAt") is not None:
                continue
            try:
                keys[name] = _from_record(name, record, self._box)
            except KeyRingError as exc:
                if strict:
                    raise
                log.warning("skipping signing key: %s", exc)
        return kid, keys
