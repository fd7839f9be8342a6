"""Refusals of the identity directory (`auth.identities` re-exports them). No HTTP here: each
front-end maps them in its own table. Messages are safe to show: they name the problem and
never contain a password or a secret."""

from __future__ import annotations

from auth.policy import PolicyInvalid


class IdentityError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(IdentityError):
    """A malformed name, password or policy."""


class MalformedPolicy(InvalidInput, PolicyInvalid):
    """A policy document that does not parse; the message is the parser's."""


class EntityExists(IdentityError):
    pass


class UserExists(EntityExists):
    pass


class GroupExists(EntityExists):
    pass


class NoSuchEntity(IdentityError):
    pass


class UnknownUser(NoSuchEntity):
    pass


class UnknownGroup(NoSuchEntity):
    pass


class UnknownAccessKey(NoSuchEntity):
    pass


class UnknownPolicy(NoSuchEntity):
    pass


class LimitExceeded(IdentityError):
    pass


class SecretsUnavailable(IdentityError):
    """Access keys need `auth.secret_key` to encrypt their secrets."""
