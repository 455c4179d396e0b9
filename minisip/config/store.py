"""Round-trip edits of the config files, for the CLI: comments, order and quoting kept.

Theory of operation
-------------------
An edit reads the file with ruamel's round-trip loader, changes the one entry,
and dumps it with the settings that reproduce an unchanged file byte for byte.
Before anything is written, the new text is validated together with the other
files exactly as the server would load it (:func:`loader.load_text`); an edit that
would make the configuration invalid raises the loader's :class:`ConfigError`
and leaves the file alone. Writes are atomic (temp file in the same directory,
fsync, ``os.replace``), so the server's watcher sees the old file or the new
one, never half of one. Concurrent edits from several CLI processes are
serialised with a lock file.

users.yaml, lines.yaml and trunks.yaml are tables of named entries under one
top-level key; one generic :class:`Table` edits any of them. In a big table
(10,000 users) a round trip of the whole file takes ruamel many seconds, so an
entry edit takes the round trip through that entry's own lines only: the fast
reader finds where each entry starts, the entry's block (its key line and the
lines indented under it) is loaded, edited and dumped alone, and spliced back
into the text: every other line stays as it was (which also spares the comments
that ruamel attaches to the wrong neighbour in a whole-file round trip). Files
outside that shape (flow style, no such entry, a file the fast reader refuses)
take the whole-file round trip.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from . import fastyaml
from .loader import (
    ConfigError, ConfigIssue, check_syntax, load_file, load_text, yaml_issue,
)
from .schema import (
    DEFAULT_USERS, EMPTY, ChoiceC, Line, LinesFile, NestedC, RoutingGroup, SeqC, StrC, TableC,
    TargetC, Trunk, TrunksFile, User, UsersFile, specs,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]


class StoreError(Exception):
    """An edit that cannot be made; ``str()`` is one line for the user."""


class EntryNotFound(StoreError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class EntryExists(StoreError, ValueError):
    pass


def round_trip_yaml() -> YAML:
    """The ruamel settings that write an unchanged file back byte for byte."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def dump(doc: Any) -> str:
    out = io.StringIO()
    round_trip_yaml().dump(doc, out)
    return out.getvalue()


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, whole."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600  # users.yaml holds passwords
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def _locked(config_dir: Path) -> Iterator[None]:
    """One editor at a time (CLI processes racing a read-modify-write)."""
    if fcntl is None:
        yield
        return
    try:  # the directory itself is the lock: no lock file left among the configs
        fd = os.open(Path(config_dir), os.O_RDONLY)
    except OSError:
        yield  # the edit will fail with a clear error of its own
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_document(path: Path) -> tuple[Any, str]:
    """(round-trip document, original text); a missing file reads as empty."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, ""
    try:
        return round_trip_yaml().load(text), text
    except YAMLError as exc:
        check_syntax(Path(path).name, text)  # the server's words for the mistake
        raise ConfigError([yaml_issue(Path(path).name, exc, text)]) from None


_PLAIN_OK = re.compile(r"[A-Za-z][A-Za-z0-9._@/-]*")


def to_node(value: Any) -> Any:
    """A Python value as a YAML node in the style of the shipped files."""
    if isinstance(value, str):
        if _PLAIN_OK.fullmatch(value) and isinstance(parse_scalar(value), str):
            return value
        return DoubleQuotedScalarString(value)
    if isinstance(value, Mapping):
        m = CommentedMap()
        for k, v in value.items():
            m[to_node(k) if isinstance(k, str) else k] = to_node(v)
        return m
    if isinstance(value, (list, tuple)):
        seq = CommentedSeq(to_node(v) for v in value)
        if all(not isinstance(v, (Mapping, list, tuple)) for v in value):
            seq.fa.set_flow_style()
        return seq
    return value


def parse_scalar(text: str) -> Any:
    """A value as YAML reads it unquoted: ``600`` -> 600, ``true`` -> True, ``null`` ->
    None, ``0086`` -> 86, other text -> itself (also forms like ``1_000`` or dates, which
    validation then explains). For command-line items prefer :meth:`Table.parse_items`,
    which knows each key's type and keeps ``0086`` as text where a string is expected."""
    try:
        return fastyaml.resolve_plain(text)
    except fastyaml.Unsupported:
        return text


_resolve = parse_scalar  # the CLI's name for it


def _parse_item(cls: type, key: str, text: str) -> Any:
    if text == "":
        return None
    spec = None
    for part in key.split("."):
        table = specs(cls)
        spec = table.get(part)
        if spec is None:
            return parse_scalar(text)
        if isinstance(spec.check, NestedC):
            cls = spec.check.cls
    check = spec.check if spec is not None else None
    if isinstance(check, SeqC):
        return [p.strip() for p in text.split(",") if p.strip()]
    if isinstance(check, (StrC, TargetC)) or (
            isinstance(check, ChoiceC) and all(isinstance(c, str) for c in check.choices)):
        return text
    return parse_scalar(text)


def _expand(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``{"forward_busy.number": "200"}`` -> ``{"forward_busy": {"number": "200"}}``."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise StoreError(f"{key}: {p} is given both as a value and as a mapping")
            node = nxt
        if isinstance(value, Mapping) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = dict(value) if isinstance(value, Mapping) else value
    return out


def _merge(target: CommentedMap, fields: Mapping[str, Any]) -> None:
    """Set keys in place (existing keys keep their position and comments).
    A mapping merges into an existing mapping; ``None`` removes the key (its default
    applies again)."""
    for key, value in fields.items():
        if value is None:
            if key in target:
                del target[key]
            continue
        current = target.get(key)
        if isinstance(value, Mapping) and isinstance(current, CommentedMap):
            if current.fa.flow_style():
                current.fa.set_flow_style()
            _merge(current, value)
            continue
        node = to_node(value)
        if isinstance(current, str) and isinstance(node, str) and type(current) is not str:
            node = type(current)(node)  # keep the quoting style the file used
        target[key] = node


class Table:
    """Named entries under one top-level key of one file (users, lines, trunks, ...)."""

    def __init__(self, file: str, key: str, entry: str, file_cls: type,
                 missing: Mapping[str, Any] = EMPTY,
                 seed: Mapping[str, Any] | None = None) -> None:
        self.file, self.key, self.entry = file, key, entry
        self.file_cls = file_cls
        self.missing = missing  #: the entries a missing file means (users: the presets)
        self.seed = seed  #: what an edit writes into a new file so it still means that

    def parse_items(self, items: Mapping[str, str]) -> dict[str, Any]:
        """Command-line ``key=value`` texts -> typed values, by the schema of an entry:
        string keys keep the text as typed (``forward_busy.number=0086``), integer and
        boolean keys parse it, list keys split on commas; "" means "restore the default"
        (None). Unknown keys are parsed as YAML would and left for validation to report."""
        return {key: _parse_item(self._entry_cls(), key, text) for key, text in items.items()}

    def _entry_cls(self) -> type:
        check = specs(self.file_cls)[self.key].check
        assert isinstance(check, TableC)
        return check.cls

    # -- reading ----------------------------------------------------------------------
    def get_all(self, config_dir: Path) -> Mapping[str, Any]:
        """Every entry, validated with its defaults filled in (this file alone)."""
        built = load_file(Path(config_dir), self.file, self.file_cls)
        if built is None:
            return self.missing
        return getattr(built, self.key)  # type: ignore[no-any-return]

    def get(self, config_dir: Path, name: str) -> Any:
        entries = self.get_all(config_dir)
        if name not in entries:
            raise EntryNotFound(f"no {self.entry} {name!r} in {self.file}")
        return entries[name]

    def raw(self, config_dir: Path, name: str) -> dict[str, Any]:
        """The keys written for one entry (no defaults), as plain Python values."""
        doc, _ = read_document(Path(config_dir) / self.file)
        table = self._table(doc, create=False)
        if table is None or name not in table:
            raise EntryNotFound(f"no {self.entry} {name!r} in {self.file}")
        return _plain(table[name]) or {}

    # -- editing ----------------------------------------------------------------------
    def add(self, config_dir: Path, name: str, **fields: Any) -> Any:
        """Add an entry; raises :class:`EntryExists` or the loader's ConfigError."""
        def edit(table: CommentedMap) -> None:
            if name in table:
                raise EntryExists(f"{self.entry} {name!r} already exists in {self.file}")
            entry = CommentedMap()
            _merge(entry, _expand(fields))
            table[to_node(name)] = entry
        return self._edit(Path(config_dir), name, edit, new_entry=True)

    def set(self, config_dir: Path, name: str, **fields: Any) -> Any:
        """Change keys of an entry (dotted keys or nested mappings reach nested ones;
        ``None`` removes a key so its default applies)."""
        def edit(table: CommentedMap) -> None:
            if name not in table:
                raise EntryNotFound(f"no {self.entry} {name!r} in {self.file}")
            entry = table[name]
            if entry is None or not isinstance(entry, CommentedMap):
                entry = table[name] = CommentedMap()
            _merge(entry, _expand(fields))
        return self._edit(Path(config_dir), name, edit)

    def remove(self, config_dir: Path, name: str) -> None:
        def edit(table: CommentedMap) -> None:
            if name not in table:
                raise EntryNotFound(f"no {self.entry} {name!r} in {self.file}")
            del table[name]
        self._edit(Path(config_dir), None, edit, target=name)

    def _table(self, doc: Any, *, create: bool) -> CommentedMap | None:
        if doc is None:
            return None
        table = doc.get(self.key)
        if isinstance(table, CommentedMap) or not create:
            return table if isinstance(table, CommentedMap) else None
        table = CommentedMap()
        doc[self.key] = table
        return table

    def _edit(self, config_dir: Path, name: str | None, edit: Any, *,
              target: str | None = None, new_entry: bool = False) -> Any:
        path = config_dir / self.file
        with _locked(config_dir):
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = None
            new = None if text is None else self._edit_entry(text, name or target or "",
                                                               edit, new_entry)
            if new is not None:
                assert text is not None
                snap = load_text(config_dir, self.file, new)  # raises ConfigError: refused
                if new != text:
                    atomic_write(path, new)
                return None if name is None else getattr(snap, self.key)[name]
            doc, text = read_document(path)
            if doc is None:
                doc = CommentedMap()
                if self.seed is not None:  # keep what the missing file meant
                    doc[self.key] = to_node(self.seed)
            elif not isinstance(doc, CommentedMap):
                raise ConfigError([ConfigIssue(self.file, 1, "", "must be a mapping of keys "
                                                                  "at the top level")])
            table = self._table(doc, create=True)
            assert table is not None
            if not table and table.fa.flow_style():
                table.fa.set_block_style()  # `users: {}` grows into block entries
            edit(table)
            new = dump(doc)
            snap = load_text(config_dir, self.file, new)  # raises ConfigError: refused
            if new != text:
                atomic_write(path, new)
        return None if name is None else getattr(snap, self.key)[name]


    def _edit_entry(self, text: str, name: str, edit: Any, new_entry: bool) -> str | None:
        """``text`` with one entry edited by a round trip of its own lines, or None when
        the file is not in the plain block shape this needs."""
        try:
            data = fastyaml.parse(text)
        except (fastyaml.Unsupported, fastyaml.DuplicateKey):
            return None
        if not isinstance(data, fastyaml.LDict):
            return None
        table = data.get(self.key)
        if not isinstance(table, fastyaml.LDict) or not table or (name in table) == new_entry:
            return None
        lines = text.splitlines(keepends=True)
        head = data.lines[self.key] - 1  # 0-based line of "users:"
        if lines[head].split("#", 1)[0].strip() != f"{self.key}:":
            return None
        start = (table.lines[list(table)[-1]] if new_entry else table.lines[name]) - 1
        indent = len(lines[start]) - len(lines[start].lstrip(" "))
        end = start + 1
        while end < len(lines):  # the entry's block: lines indented deeper than its key
            line = lines[end]
            if line.strip() and len(line) - len(line.lstrip(" ")) <= indent:
                break
            end += 1
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1  # blank lines after the block belong to what follows
        if "\t" in "".join(lines[start:end]):
            return None
        if new_entry:  # after the last entry, in a table of its own
            block, at, gone = [], end, end
        else:
            block, at, gone = lines[start:end], start, end
        if block and not block[-1].endswith("\n"):
            block[-1] += "\n"
        doc = round_trip_yaml().load(f"{self.key}:\n" + "".join(block)) if block else None
        if doc is None:
            doc = CommentedMap()
            doc[self.key] = CommentedMap()
        edit(doc[self.key])
        out = dump(doc) if doc[self.key] else f"{self.key}:\n"
        if not out.startswith(f"{self.key}:\n"):
            return None
        body = out[len(self.key) + 2:]
        if body.strip() and not body.startswith(" " * indent):
            return None  # the dump indents differently from this file
        if at == len(lines) and not lines[-1].endswith("\n"):
            body = "\n" + body
        return "".join(lines[:at]) + body + "".join(lines[gone:])


def _plain(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {str(k) if isinstance(k, str) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


USERS = Table("users.yaml", "users", "user", UsersFile, DEFAULT_USERS,
              {name: {"password": u.password} for name, u in DEFAULT_USERS.items()})
LINES = Table("lines.yaml", "lines", "external line", LinesFile)
TRUNKS = Table("trunks.yaml", "trunks", "SIP trunk", TrunksFile)
ROUTING_GROUPS = Table("trunks.yaml", "routing_groups", "routing group", TrunksFile)


def get_users(config_dir: Path) -> Mapping[str, User]:
    return USERS.get_all(config_dir)


def add_user(config_dir: Path, name: str, **fields: Any) -> User:
    return USERS.add(config_dir, name, **fields)  # type: ignore[no-any-return]


def set_user(config_dir: Path, name: str, **fields: Any) -> User:
    return USERS.set(config_dir, name, **fields)  # type: ignore[no-any-return]


def remove_user(config_dir: Path, name: str) -> None:
    USERS.remove(config_dir, name)


def get_lines(config_dir: Path) -> Mapping[str, Line]:
    return LINES.get_all(config_dir)


def add_line(config_dir: Path, name: str, **fields: Any) -> Line:
    return LINES.add(config_dir, name, **fields)  # type: ignore[no-any-return]


def set_line(config_dir: Path, name: str, **fields: Any) -> Line:
    return LINES.set(config_dir, name, **fields)  # type: ignore[no-any-return]


def remove_line(config_dir: Path, name: str) -> None:
    LINES.remove(config_dir, name)


def get_trunks(config_dir: Path) -> Mapping[str, Trunk]:
    return TRUNKS.get_all(config_dir)


def add_trunk(config_dir: Path, name: str, **fields: Any) -> Trunk:
    return TRUNKS.add(config_dir, name, **fields)  # type: ignore[no-any-return]


def set_trunk(config_dir: Path, name: str, **fields: Any) -> Trunk:
    return TRUNKS.set(config_dir, name, **fields)  # type: ignore[no-any-return]


def remove_trunk(config_dir: Path, name: str) -> None:
    TRUNKS.remove(config_dir, name)


def get_routing_groups(config_dir: Path) -> Mapping[str, RoutingGroup]:
    return ROUTING_GROUPS.get_all(config_dir)


def set_option(config_dir: Path, file: str, key: str, value: Any) -> None:
    """Set one key of a file by dotted path (``set_option(d, "system.yaml",
    "timers.t1", 0.25)``); ``None`` removes it. Validated like every edit."""
    config_dir = Path(config_dir)
    path = config_dir / file
    with _locked(config_dir):
        doc, text = read_document(path)
        if doc is None:
            doc = CommentedMap()
        _merge(doc, _expand({key: value}))
        new = dump(doc)
        load_text(config_dir, file, new)
        if new != text:
            atomic_write(path, new)
