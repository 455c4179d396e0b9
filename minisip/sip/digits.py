"""Numbers from the wire: ASCII digits only.

``str.isdigit()`` is true for '²' (which ``int()`` then rejects with ValueError)
and for '٣' (which ``int()`` reads as 3); ``int()`` also takes a sign, spaces
and underscores. Every number read from a message goes through here instead.
"""
from __future__ import annotations

from .errors import BadMessage


def is_digits(text: str) -> bool:
    """True for a non-empty run of ASCII digits 0-9, nothing else."""
    return text.isascii() and text.isdigit()


def digits_untrusted(text: str, what: str, *, max_len: int = 10,
                     status: int | None = 400) -> int:
    """``text`` as a non-negative integer of at most ``max_len`` digits, else BadMessage."""
    if len(text) > max_len or not (text.isascii() and text.isdigit()):
        raise BadMessage(f"Bad {what}", status)
    return int(text)
