"""A fast reader for the plain subset of YAML that config files are written in.

Why this exists: ruamel's safe loader is pure Python here (its C parser is an
optional extra) and reads a 10,000-user users.yaml in about 6 s; even with the C
parser it takes about 1 s. This reader handles the block-style subset that
hand-written and ruamel-written config files use, about 50 times faster, and
records the line of every key and list item while it goes (so error messages
need no second parse).

Theory of operation: the text is cut into logical lines (indent, text). A block
mapping is a run of ``key: value`` lines at one indent, a block sequence a run
of ``- item`` lines; an empty value opens a nested block on the following, more
indented, lines. ``- key: value`` is read as a mapping at the column after the
dash. Scalars resolve exactly as ruamel's YAML 1.2 resolver does.

The contract: :func:`parse` returns exactly what ``YAML(typ="safe").load``
returns, or raises :class:`Unsupported` (then the caller uses ruamel, which also
produces the syntax error messages), or :class:`DuplicateKey`. Anything outside
the subset is refused, not guessed: anchors, tags, block scalars, multi-line
scalars, flow mappings, tabs, directives, complex keys, timestamps, unusual
numbers. tests/config/test_fastyaml.py holds the contract by differential fuzzing.
"""
from __future__ import annotations

import re
from typing import Any

from ruamel.yaml.resolver import implicit_resolvers


class Unsupported(Exception):
    """Outside the subset (or not valid YAML): read this file with ruamel."""


class DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key!r} (first at line {first_line})")
        self.key, self.line, self.first_line = key, line, first_line


class LDict(dict):  # type: ignore[type-arg]
    """A mapping that knows the 1-based line of each key."""
    __slots__ = ("lines",)
    lines: dict[Any, int]


class LList(list):  # type: ignore[type-arg]
    """A sequence that knows the 1-based line of each item."""
    __slots__ = ("lines",)
    lines: list[int]


# Characters ruamel refuses or treats specially (tabs, other line breaks): not ours.
_OUTSIDE = re.compile("[^\x0a\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
                      "|[\u2028\u2029]")
_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\.[0-9]+")
_TRUE = frozenset(("true", "True", "TRUE"))
_FALSE = frozenset(("false", "False", "FALSE"))
_NULL = frozenset(("", "~", "null", "Null", "NULL"))
# ruamel's own YAML 1.2 patterns for numbers and dates: a plain scalar that matches one
# of them but not our simple forms above is left to ruamel.
_SPECIAL = [r for versions, tag, r, first in implicit_resolvers
            if (1, 2) in versions and tag.rsplit(":", 1)[-1] in
            ("int", "float", "timestamp", "merge", "value")]
_FLOW_PLAIN = re.compile(r"[^,\[\]{}#:'\"]+")
_EMPTY_FLOW_MAP = re.compile(r"\{ *\}(?: +#.*)?")
_NUMERIC_START = frozenset("-+0123456789.<=")
_BAD_START = frozenset("&*!|>%@`,[]{}#'\"")
_ESCAPES = {"\\": "\\", '"': '"', "/": "/", "n": "\n", "t": "\t", "r": "\r", "0": "\0"}
_HEX = {"x": 2, "u": 4, "U": 8}


def resolve_plain(s: str) -> Any:
    """A plain scalar's value under YAML 1.2 (ruamel's resolver), or Unsupported."""
    if s in _NULL:
        return None
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    if s[0] in _NUMERIC_START:
        if _INT.fullmatch(s):
            return int(s)
        if _FLOAT.fullmatch(s):
            return float(s)
        for r in _SPECIAL:
            if r.match(s):
                raise Unsupported(s)
    return s


def _plain(text: str) -> Any:
    """A plain scalar in block context: ``text`` up to a comment."""
    c = text[0]
    if c in _BAD_START or (c in "-?:" and (len(text) == 1 or text[1] == " ")):
        raise Unsupported(text)
    cut = text.find(" #")
    if cut >= 0:
        text = text[:cut].rstrip()
    if ": " in text or text.endswith(":"):
        raise Unsupported(text)
    return resolve_plain(text)


def _double(text: str) -> tuple[str, int]:
    """A double-quoted scalar at text[0]; (value, index after the closing quote)."""
    end = text.find('"', 1)
    if end < 0:
        raise Unsupported(text)
    if "\\" not in text[1:end]:
        return text[1:end], end + 1
    out: list[str] = []
    i = 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            return "".join(out), i + 1
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= n:
            raise Unsupported(text)
        e = text[i + 1]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif e in _HEX:
            digits = text[i + 2:i + 2 + _HEX[e]]
            if len(digits) != _HEX[e] or not all(d in "0123456789abcdefABCDEF"
                                                 for d in digits):
                raise Unsupported(text)
            out.append(chr(int(digits, 16)))
            i += 2 + _HEX[e]
        else:
            raise Unsupported(text)
    raise Unsupported(text)


def _single(text: str) -> tuple[str, int]:
    i = 1
    parts = []
    while True:
        end = text.find("'", i)
        if end < 0:
            raise Unsupported(text)
        parts.append(text[i:end])
        if text[end + 1:end + 2] == "'":
            parts.append("'")
            i = end + 2
        else:
            return "".join(parts), end + 1


def _quoted(text: str) -> tuple[str, str]:
    """(value, rest after the closing quote, left-stripped)."""
    value, end = _double(text) if text[0] == '"' else _single(text)
    return value, text[end:].lstrip(" ")


def _after_value(rest: str) -> None:
    """Only a comment (after a space) may follow a complete value on its line."""
    if rest and not rest.startswith("#"):
        raise Unsupported(rest)


def _flow_seq(text: str) -> list[Any]:
    """A one-line flow sequence of scalars: ``[a, "b", 3]``; ``[]``."""
    items: list[Any] = []
    rest = text[1:].lstrip(" ")
    if rest.startswith("]"):
        _after_value(rest[1:].lstrip(" "))
        return items
    while True:
        if not rest:
            raise Unsupported(text)
        if rest[0] in "'\"":
            value, rest = _quoted(rest)
        else:
            m = _FLOW_PLAIN.match(rest)
            if m is None:
                raise Unsupported(text)
            token = m.group().rstrip(" ")
            c = token[0] if token else ""
            if not token or c in _BAD_START or c in "-?" and token[1:2] in ("", " "):
                raise Unsupported(text)
            value = resolve_plain(token)
            rest = rest[m.end():]
        items.append(value)
        if rest.startswith(","):
            rest = rest[1:].lstrip(" ")
            if not rest or rest[0] in ",]":
                raise Unsupported(text)  # empty or trailing entries: leave them to ruamel
        elif rest.startswith("]"):
            _after_value(rest[1:].lstrip(" "))
            return items
        else:
            raise Unsupported(text)


def _inline(text: str) -> Any:
    """The value written after ``key: `` or ``- `` on the same line."""
    c = text[0]
    if c == '"' or c == "'":
        value, rest = _quoted(text)
        _after_value(rest)
        return value
    if c == "[":
        return _flow_seq(text)
    if c == "{":
        if _EMPTY_FLOW_MAP.fullmatch(text):
            return {}
        raise Unsupported(text)
    return _plain(text)


def _split_key(text: str) -> tuple[Any, str] | None:
    """(key, value text) of a ``key: value`` line, or None if it is not one."""
    c = text[0]
    if c == '"' or c == "'":
        key, rest = _quoted(text)
        if not rest.startswith(":") or rest[1:2] not in ("", " "):
            return None
        value = rest[1:].lstrip(" ")
    else:
        pos = text.find(": ")
        if pos < 0:
            if not text.endswith(":"):
                return None
            pos = len(text) - 1
        raw = text[:pos].rstrip(" ")
        if not raw or raw[0] in _BAD_START or raw[0] in "-?:<" or " #" in raw:
            raise Unsupported(text)
        key = resolve_plain(raw)
        value = text[pos + 1:].lstrip(" ")
    if value.startswith("#"):
        value = ""
    return key, value


class _Reader:
    def __init__(self, text: str) -> None:
        if text.startswith("\ufeff"):
            text = text[1:]
        if "\r" in text:
            if text.count("\r") != text.count("\r\n"):
                raise Unsupported("bare carriage return")
            text = text.replace("\r\n", "\n")
        if _OUTSIDE.search(text):
            raise Unsupported("tab or special character")
        toks: list[tuple[int, int, str]] = []
        for lineno, line in enumerate(text.split("\n"), 1):
            body = line.lstrip(" ")
            if not body or body[0] == "#":
                continue
            indent = len(line) - len(body)
            if indent == 0 and (body.startswith(("---", "...", "%"))):
                raise Unsupported("document marker or directive")
            toks.append((lineno, indent, body.rstrip(" ")))
        self.toks = toks
        self.i = 0

    def document(self) -> Any:
        if not self.toks:
            return None
        if self.toks[0][1] != 0:
            raise Unsupported("indented document")
        value = self.collection(0)
        if self.i != len(self.toks):
            raise Unsupported("text after the document")
        return value

    def collection(self, indent: int) -> Any:
        text = self.toks[self.i][2]
        if text == "-" or text.startswith("- "):
            return self.sequence(indent)
        return self.mapping(indent)

    def block(self, indent: int, same_indent_seq: bool) -> Any:
        """The value of an entry with nothing after its ``:`` or ``-``."""
        if self.i >= len(self.toks):
            return None
        _, ind, text = self.toks[self.i]
        if ind > indent:
            return self.collection(ind)
        if ind == indent and same_indent_seq and (text == "-" or text.startswith("- ")):
            return self.sequence(indent)
        return None

    def mapping(self, indent: int) -> LDict:
        out = LDict()
        lines: dict[Any, int] = {}
        out.lines = lines
        toks = self.toks
        n = len(toks)
        while self.i < n:
            lineno, ind, text = toks[self.i]
            if ind != indent:
                if ind > indent:
                    raise Unsupported(f"line {lineno}: unexpected indentation")
                break
            kv = _split_key(text)
            if kv is None:
                raise Unsupported(f"line {lineno}: not a key")
            key, value = kv
            if key in lines:
                raise DuplicateKey(key, lineno, lines[key])
            try:
                hash(key)
            except TypeError:
                raise Unsupported("unhashable key") from None
            lines[key] = lineno
            self.i += 1
            out[key] = self.block(indent, True) if not value else _inline(value)
        return out

    def sequence(self, indent: int) -> LList:
        out = LList()
        lines: list[int] = []
        out.lines = lines
        toks = self.toks
        n = len(toks)
        while self.i < n:
            lineno, ind, text = toks[self.i]
            if ind != indent or not (text == "-" or text.startswith("- ")):
                if ind > indent:
                    raise Unsupported(f"line {lineno}: unexpected indentation")
                break
            body = text[1:].lstrip(" ")
            lines.append(lineno)
            if not body or body[0] == "#":
                self.i += 1
                out.append(self.block(indent, False))
                continue
            col = indent + len(text) - len(body)
            if body == "-" or body.startswith("- ") or _split_key(body) is not None:
                toks[self.i] = (lineno, col, body)  # the item is a block at the dash's column
                out.append(self.collection(col))
            else:
                self.i += 1
                out.append(_inline(body))
        return out


def parse(text: str) -> Any:
    """``YAML(typ="safe").load(text)`` for the subset, with lines; else Unsupported."""
    try:
        return _Reader(text).document()
    except RecursionError:
        raise Unsupported("too deeply nested") from None
