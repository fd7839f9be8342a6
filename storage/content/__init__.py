"""Pure content rules: digests, names, media types, manifest parsing. No I/O."""
