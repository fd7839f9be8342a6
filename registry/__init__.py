"""HTTP front-ends of the registry and its command line."""
