"""Authentication and authorisation: tokens, identities, policies (to come)."""
