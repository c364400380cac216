"""Text from the bytes-or-str values that Redis replies and pre-encoded JSON come as."""

from __future__ import annotations


def as_text(value: bytes | str) -> str:
    """`value` as str: bytes are decoded as UTF-8, str is returned as it is."""
    return value.decode() if isinstance(value, bytes) else value
