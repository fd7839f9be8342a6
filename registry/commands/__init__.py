"""Implementations of `registry` subcommands other than `serve`; `registry/cli.py` wires them."""
