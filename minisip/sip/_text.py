"""Scanning helpers for header text: quoted strings and separators outside them.

They jump with ``str.find`` / one regex search instead of walking characters in
Python, since Contact and Authorization values with quoted parts are on the
registrar's hot path.
"""
from __future__ import annotations

import re

_SEP_OR_QUOTE = {sep: re.compile(f'[{re.escape(sep)}"]') for sep in (";", ",")}
_COMMA_QUOTE_ANGLE = re.compile(r'[,"<]')


def quoted_end(text: str, q: int) -> int:
    """Index just past the quoted string opening at ``text[q] == '"'``; -1 if unterminated."""
    j = q + 1
    while True:
        k = text.find('"', j)
        if k < 0:
            return -1
        b = k - 1
        while b > q and text[b] == "\\":  # an odd run of backslashes escapes this quote
            b -= 1
        if (k - 1 - b) % 2 == 0:
            return k + 1
        j = k + 1


def split_outside_quotes(text: str, sep: str) -> list[str] | None:
    """``text`` split at ``sep`` (';' or ',') outside quoted strings; None if a quote is open."""
    pattern = _SEP_OR_QUOTE[sep]
    out: list[str] = []
    start = pos = 0
    while True:
        m = pattern.search(text, pos)
        if m is None:
            break
        i = m.start()
        if text[i] == sep:
            out.append(text[start:i])
            start = pos = i + 1
        else:
            pos = quoted_end(text, i)
            if pos < 0:
                return None
    out.append(text[start:])
    return out


def split_commas(value: str) -> list[str]:
    """Split a header value at commas outside quoted strings and <...>; drop empties.

    Never raises: an unterminated quote or '<' makes the rest one value (the
    parser of that value reports it).
    """
    if "," not in value:
        v = value.strip()
        return [v] if v else []
    if '"' not in value and "<" not in value:
        return [p for p in (s.strip() for s in value.split(",")) if p]
    out: list[str] = []
    start = pos = 0
    while True:
        m = _COMMA_QUOTE_ANGLE.search(value, pos)
        if m is None:
            break
        i = m.start()
        ch = value[i]
        if ch == ",":
            out.append(value[start:i])
            start = pos = i + 1
        elif ch == '"':
            pos = quoted_end(value, i)
            if pos < 0:
                break
        else:
            pos = value.find(">", i) + 1
            if pos == 0:
                break
    out.append(value[start:])
    return [p for p in (s.strip() for s in out) if p]
