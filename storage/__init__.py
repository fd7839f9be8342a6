"""Content-addressed registry storage: drivers (bytes at keys) and stores (registry semantics)."""
