"""Authentication and authorisation: identities, tokens (and their revocation), policies, the
login throttle."""
