"""Subcommands of ``mprtm``; each module exposes ``register(subparsers)``."""
