"""Fuzzing the registry's HTTP surface from its OpenAPI description (docs/openapi.yaml)."""
