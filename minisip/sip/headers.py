"""Header fields: an ordered list that keeps repeated headers and their bytes.

Each entry is ``(name as on the wire, canonical name, value, raw line)``. The raw
line is the decoded text of the line as received (``None`` for headers added in
code), so a relayed header that nobody touched serializes to the bytes it came
with. Values are text decoded with ``surrogateescape``: no byte is ever lost.

A per-canonical-name index (built lazily, dropped on mutation) makes ``get`` a
dict lookup, and ``cache`` holds the parsed views (Via, CSeq, ...) the message
layer derives from the values: any mutation clears it, so a parsed view never
outlives the text it came from.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from ._text import split_commas
from .errors import BadMessage

# RFC 3261 7.3.3 and the IANA registry of compact forms.
COMPACT: dict[str, str] = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
    "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to",
    "v": "via", "o": "event", "r": "refer-to", "b": "referred-by", "u": "allow-events",
    "x": "session-expires", "y": "identity", "a": "accept-contact", "j": "reject-contact",
    "d": "request-disposition",
}

# The spelling we use when code adds a header by canonical name (for messages we build).
PRETTY: dict[str, str] = {
    "call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version", "rack": "RAck", "rseq": "RSeq",
}

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")

# Wire spelling -> (stripped name, canonical). Bounded: names come from strangers.
_WIRE_NAMES: dict[str, tuple[str, str]] = {}
_WIRE_NAMES_MAX = 4096
_NAME_KEY_MAX = 64  # longer names are parsed every time: a flood of 60 KB names stays small
_CANON: dict[str, str] = {}


def canonical(name: str) -> str:
    """Lower-case full header name; compact forms expanded."""
    c = _CANON.get(name)
    if c is not None:
        return c
    n = name.strip().lower()
    c = COMPACT.get(n, n)
    if len(_CANON) < _WIRE_NAMES_MAX and len(name) <= _NAME_KEY_MAX:
        _CANON[name] = c
    return c


def wire_name_untrusted(raw: str) -> tuple[str, str]:
    """(name without surrounding blanks, canonical name) of a header name from the wire."""
    hit = _WIRE_NAMES.get(raw)
    if hit is not None:
        return hit
    name = raw.rstrip(" \t")  # leading blanks would make it a continuation line
    if not _TOKEN.fullmatch(name):
        raise BadMessage("Bad header name")
    low = name.lower()
    hit = (name, COMPACT.get(low, low))
    if len(_WIRE_NAMES) < _WIRE_NAMES_MAX and len(raw) <= _NAME_KEY_MAX:
        _WIRE_NAMES[raw] = hit
    return hit


def _clean(value: str) -> str:
    # A line break in a value set by code would start a header (or the body) of its own.
    if "\r" in value or "\n" in value:
        return value.replace("\r", " ").replace("\n", " ")
    return value


Entry = tuple[str, str, str, "str | None"]


class Headers:
    """Ordered header fields; repeated names kept; names case-insensitive, compact accepted."""

    __slots__ = ("_index", "_items", "cache")

    def __init__(self, items: Iterable[tuple[str, str]] | None = None) -> None:
        self._items: list[Entry] = []
        self._index: dict[str, list[str]] | None = None
        #: parsed views of values, owned by the message layer; cleared on any mutation
        self.cache: dict[str, Any] = {}
        if items:
            self._items = [(n, canonical(n), _clean(v), None) for n, v in items]

    @staticmethod
    def _from_wire(items: list[Entry], index: dict[str, list[str]]) -> Headers:
        h = Headers()
        h._items = items
        h._index = index
        return h

    def _changed(self) -> None:
        self._index = None
        if self.cache:
            self.cache = {}

    def _idx(self) -> dict[str, list[str]]:
        idx = self._index
        if idx is None:
            idx = {}
            for _, c, v, _ in self._items:
                lst = idx.get(c)
                if lst is None:
                    idx[c] = [v]
                else:
                    lst.append(v)
            self._index = idx
        return idx

    # -- reading ----------------------------------------------------------------
    def get(self, name: str) -> str | None:
        """The value of the first line with this name, or None."""
        lst = self._idx().get(canonical(name))
        return lst[0] if lst else None

    def get_all(self, name: str) -> list[str]:
        """Every line's value, in order."""
        lst = self._idx().get(canonical(name))
        return list(lst) if lst else []

    def values(self, name: str) -> list[str]:
        """All values of a list header, comma-split (quotes and <...> respected)."""
        lst = self._idx().get(canonical(name))
        if not lst:
            return []
        out: list[str] = []
        for v in lst:
            out += split_commas(v)
        return out

    def select(self, names: tuple[str, ...]) -> list[tuple[str, str]]:
        """``(name, value)`` for every line of each of ``names``, in that order, with
        the names as given (what a B2BUA copies from one leg to the other)."""
        idx = self._idx()
        out: list[tuple[str, str]] = []
        for name in names:
            lst = idx.get(canonical(name))
            if lst:
                out += [(name, v) for v in lst]
        return out

    def count(self, name: str) -> int:
        lst = self._idx().get(canonical(name))
        return len(lst) if lst else 0

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for n, _, v, _ in self._items:
            yield n, v

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and canonical(name) in self._idx()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return list(self) == list(other)

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h

    def compact(self) -> None:
        """Let go of what can be rebuilt, for a message kept long (a call's INVITE):
        the index and the parsed views (rebuilt on first use), and each received
        line that reads exactly ``name: value`` (serialized the same without it)."""
        self._items = [(n, c, v, None if raw is not None and len(raw) == len(n) + 2 + len(v)
                        and raw == f"{n}: {v}" else raw) for n, c, v, raw in self._items]
        self._index = None
        self.cache = {}

    # -- writing ----------------------------------------------------------------
    def add(self, name: str, value: str) -> None:
        """Append a line at the end."""
        self._items.append((name, canonical(name), _clean(value), None))
        self._changed()

    def prepend(self, name: str, value: str) -> None:
        """Insert a line first (a new top Via)."""
        self._items.insert(0, (name, canonical(name), _clean(value), None))
        self._changed()

    def _first(self, c: str) -> int:
        """Position of the first line with canonical name ``c``, or -1."""
        for i, e in enumerate(self._items):
            if e[1] == c:
                return i
        return -1

    def set(self, name: str, value: str) -> None:
        """Replace every line of this name by one, at the first one's position."""
        c = canonical(name)
        value = _clean(value)
        items = self._items
        i = self._first(c)
        if i < 0:
            items.append((name, c, value, None))
        else:
            items[i] = (items[i][0], c, value, None)
            self._items = [x for j, x in enumerate(items) if j <= i or x[1] != c]
        self._changed()

    def set_first(self, name: str, value: str) -> None:
        """Replace the first line of ``name`` in place, keeping the cached views.

        For a caller that has already updated the parsed view itself (the driver
        stamping ``received``/``rport`` on the top Via): re-parsing every header
        after a one-parameter change was a third of a REGISTER's cost.
        """
        c = canonical(name)
        value = _clean(value)
        i = self._first(c)
        if i < 0:
            raise KeyError(name)
        self._items[i] = (self._items[i][0], c, value, None)
        if self._index is not None:
            self._index[c][0] = value

    def remove(self, name: str) -> int:
        """Drop every line of this name; how many there were."""
        c = canonical(name)
        before = len(self._items)
        self._items = [e for e in self._items if e[1] != c]
        removed = before - len(self._items)
        if removed:
            self._changed()
        return removed

    def extend(self, items: Iterable[tuple[str, str]]) -> None:
        self._items += [(n, canonical(n), _clean(v), None) for n, v in items]
        self._changed()

    # -- serialization ----------------------------------------------------------
    def lines(self, content_length: int | None = None,
              skip: frozenset[str] | None = None) -> list[str]:
        """Header lines as text; Content-Length (if given) rewritten in place or appended;
        the headers named (canonically) in ``skip`` left out."""
        out: list[str] = []
        seen_cl = False
        items = self._items if skip is None else [e for e in self._items if e[1] not in skip]
        for n, c, v, raw in items:
            if c == "content-length" and content_length is not None:
                if seen_cl:
                    continue  # one Content-Length only: the real one
                seen_cl = True
                if raw is None or v != str(content_length):
                    raw = f"{n}: {content_length}"
            elif raw is None:
                raw = f"{n}: {v}"
            out.append(raw)
        if content_length is not None and not seen_cl:
            out.append(f"Content-Length: {content_length}")
        return out
