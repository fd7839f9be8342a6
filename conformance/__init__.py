"""Our own OCI Distribution Spec conformance runner (to come)."""
