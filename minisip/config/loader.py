"""YAML files -> one validated :class:`Snapshot`, or every problem with file, line and key.

Theory of operation
-------------------
1. Read: each of the six files is read once (bytes, mtime, sha256). A missing file
   means its defaults, and the log says so.
2. Parse fast: :mod:`.fastyaml` reads the plain subset, with the line of every
   key. A file outside the subset goes to ruamel's safe loader (C-based when
   ``ruamel.yaml.clib`` is installed), which gives no lines.
3. Validate: one generic walk over the schema's field metadata converts values
   and collects issues (all of them, not the first); references between files
   (a user's external line, a route's target, a transition id) are checked last.
4. Only when there are issues in a file that was read without lines, that one
   file is read again with ruamel's round-trip loader and step 3 runs again, so
   every message carries its line. Valid configs never pay for line tracking.

Messages look like ``users.yaml line 14: max_concurrent_calls: must be an integer
>= 0, got 'two'``: the key is the path from the entry at that line (a user, a
line, a dial-plan prefix), or from the top of the file.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable

from . import fastyaml
from .schema import (
    DEFAULT_USERS, EMPTY, FILES, Check, Invalid, LinesFile, ListC, NestedC, SeqC, Snapshot,
    SourceInfo, StrC, TableC, TrunksFile, UsersFile, show, specs,
)

log = logging.getLogger("minisip.config")

_MISSING = dataclasses.MISSING
_BAD = object()  #: a value that failed its check (already reported)


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file} line {self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration is not valid; ``errors`` lists every problem found."""

    def __init__(self, errors: list[ConfigIssue]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


# -- reading ---------------------------------------------------------------------------------

@dataclass(slots=True)
class RawFile:
    name: str
    data: bytes | None  #: None: the file does not exist
    info: SourceInfo | None


def read_files(config_dir: Path) -> dict[str, RawFile]:
    """The bytes and identity of every config file (what a reload compares)."""
    if not config_dir.is_dir():
        raise ConfigError([ConfigIssue(str(config_dir), None, "",
                                       "configuration directory not found")])
    out = {}
    for name in FILES:
        path = config_dir / name
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            out[name] = RawFile(name, None, None)
            continue
        except OSError as exc:
            raise ConfigError([ConfigIssue(name, None, "",
                                           f"cannot read: {exc.strerror}")]) from None
        out[name] = RawFile(name, data, SourceInfo(mtime=st.st_mtime, size=len(data),
                                                   sha256=hashlib.sha256(data).hexdigest()))
    return out


@dataclass(slots=True)
class _Doc:
    name: str
    data: Any
    lined: bool  #: line numbers known (fast reader or round-trip loader)
    broken: bool = False  #: unreadable: nothing built from it, nothing refers into it
    exists: bool = True


def _decode(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise _SyntaxIssue(ConfigIssue(name, line, "", "not UTF-8 text")) from None


class _SyntaxIssue(Exception):
    def __init__(self, issue: ConfigIssue) -> None:
        self.issue = issue


def yaml_issue(name: str, exc: Exception, text: str) -> ConfigIssue:
    """ruamel's parse error as one issue, worded the same for the CLI and the server.

    A mistake found only at the end of the file (an unclosed ``[`` or quote) is
    reported where the unclosed construct starts, never on a line past the end.
    """
    problem_mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    mark = problem_mark or context_mark
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if type(exc).__name__ == "DuplicateKeyError":
        # ruamel marks the repeat; its context mark is the mapping's start, not the
        # first occurrence, so no "first at" here (the fast reader knows it).
        key = problem.split('"')[1] if '"' in problem else ""
        return ConfigIssue(name, line, key, "duplicate key")
    last = max(1, len(text.rstrip().splitlines()))
    if line is not None and line > last or "<stream end>" in problem or (
            "end of stream" in problem):
        problem = problem.replace("'<stream end>'", "the end of the file").replace(
            "unexpected end of stream", "the end of the file")
        context = getattr(exc, "context", None)
        if context:
            problem += f" ({context})"
        line = context_mark.line + 1 if context_mark is not None else line
        line = min(line, last) if line is not None else last
    return ConfigIssue(name, line, "", f"YAML syntax error: {problem}")


def _parse(name: str, data: bytes, *, lines: bool = False) -> _Doc:
    """Fast reader first; ruamel's safe loader (or round-trip when ``lines``) for the rest."""
    text = _decode(name, data)
    try:
        return _Doc(name, fastyaml.parse(text), True)
    except fastyaml.DuplicateKey as exc:
        raise _SyntaxIssue(ConfigIssue(name, exc.line, str(exc.key),
                                       f"duplicate key (first at line {exc.first_line})")
                           ) from None
    except fastyaml.Unsupported:
        pass
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    yaml = YAML(typ="rt" if lines else "safe")
    try:
        return _Doc(name, yaml.load(text), lines)
    except YAMLError as exc:
        error: Exception = exc
        if not lines:  # the CLI's round-trip loader words it: say it the same way
            try:
                YAML(typ="rt").load(text)
            except YAMLError as rt_exc:
                error = rt_exc
        raise _SyntaxIssue(yaml_issue(name, error, text)) from None


def check_syntax(name: str, text: str) -> None:
    """Raise the ConfigError the server would report for ``text``'s YAML syntax, if any
    (the CLI's round-trip reader calls it, so both word a mistake the same way)."""
    try:
        _parse(name, text.encode("utf-8"))
    except _SyntaxIssue as exc:
        raise ConfigError([exc.issue]) from None


# -- validation: one generic walk over the schema --------------------------------------------

def _line(container: Any, key: Any) -> int | None:
    """1-based line of ``key`` in a parsed mapping (or index in a list), if known."""
    lines = getattr(container, "lines", None)
    if lines is not None and not callable(lines):
        try:
            return lines[key]  # type: ignore[no-any-return]
        except (KeyError, IndexError, TypeError):
            return None
    lc = getattr(container, "lc", None)
    if lc is not None:
        try:
            pos = lc.key(key) if isinstance(container, dict) else lc.item(key)
            return int(pos[0]) + 1
        except Exception:  # ruamel keeps no position for some nodes
            return None
    return None


def _show_path(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if type(p) is int else (f".{p}" if out else str(p))
    return out


@dataclass(slots=True)
class _Ref:
    kind: str
    name: Any
    file: str
    line: int | None
    key: str


_KIND_LABEL = {
    "line": ("external line", "lines.yaml"), "trunk": ("SIP trunk", "trunks.yaml"),
    "line_or_trunk": ("external line or SIP trunk", "lines.yaml or trunks.yaml"),
    "routing_group": ("routing group", "trunks.yaml"), "user": ("user", "users.yaml"),
    "transition": ("transition", "dialplan.yaml transitions"),
    "outgoing_group": ("line or trunk with outgoing_group_id", "lines.yaml or trunks.yaml"),
    "hunt_group": ("hunt group", "services.yaml hunt_groups"),
    "ring_group": ("ring group", "services.yaml ring_groups or a user's ringing_group_id"),
}


class _Builder:
    """Builds one file's dataclasses from parsed YAML, collecting issues and references."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.issues: list[ConfigIssue] = []
        self.refs: list[_Ref] = []
        self.names: dict[str, set[Any]] = {}  #: table kind -> names defined (even if bad)

    def issue(self, container: Any, key: Any, path: tuple[Any, ...], message: str) -> None:
        self.issues.append(ConfigIssue(self.file, _line(container, key), _show_path(path),
                                       message))

    def value(self, check: Check, raw: Any, container: Any, key: Any,
              path: tuple[Any, ...]) -> Any:
        kind = type(check)
        if kind is NestedC:
            return self.obj(check.cls, raw, container, key, path, path)  # type: ignore[attr-defined]
        if kind is TableC:
            return self.table(check, raw, container, key, path)  # type: ignore[arg-type]
        if kind is ListC:
            return self.entries(check, raw, container, key, path)  # type: ignore[arg-type]
        if kind is SeqC:
            return self.seq(check, raw, container, key, path)  # type: ignore[arg-type]
        try:
            return check.convert(raw)
        except Invalid as exc:
            self.issue(container, key, path, str(exc))
            return _BAD

    def obj(self, cls: type, raw: Any, container: Any, key: Any, here: tuple[Any, ...],
            prefix: tuple[Any, ...]) -> Any:
        """One dataclass from a mapping. ``here`` names it, ``prefix`` starts its keys."""
        if raw is None:
            raw = {}
        elif not isinstance(raw, dict):
            self.issue(container, key, here, f"must be a mapping (key: value lines), "
                                             f"got {show(raw)}")
            return _BAD
        spec, defaults, required = _table(cls)
        values = dict(defaults)
        bad = False
        for k, v in raw.items():
            s = spec.get(k)
            if s is None:
                self.unknown(raw, k, prefix, spec)
                bad = True
                continue
            c = self.value(s.check, v, raw, k, prefix + (k,))
            if c is _BAD:
                bad = True
                continue
            values[k] = c
            if s.ref is not None and c:
                if type(c) is tuple:
                    for i, item in enumerate(c):
                        self.refs.append(_Ref(s.ref, item, self.file,
                                              _line(v, i) or _line(raw, k),
                                              _show_path(prefix + (k, i))))
                else:
                    self.refs.append(_Ref(s.ref, c, self.file, _line(raw, k),
                                          _show_path(prefix + (k,))))
        for name in required:
            if name not in raw:
                self.issue(container, key, here, f"{name} is required")
                bad = True
        if bad:
            return _BAD
        hook = getattr(cls, "_check", None)
        if hook is not None:
            for k, message in hook(values):
                if k in raw:
                    self.issue(raw, k, prefix + (k,), message)
                else:
                    self.issue(container, key, here, f"{k} {message}")
                bad = True
            if bad:
                return _BAD
        hook = getattr(cls, "_refs", None)
        if hook is not None:
            for k, kind, name in hook(values):
                self.refs.append(_Ref(kind, name, self.file,
                                      _line(raw, k) or _line(container, key),
                                      _show_path(prefix + (k,))))
        return cls(**values)

    def unknown(self, raw: Any, k: Any, prefix: tuple[Any, ...], spec: dict[str, Any]) -> None:
        guess = difflib.get_close_matches(str(k), list(spec), n=1, cutoff=0.6)
        hint = f"; did you mean {guess[0]!r}?" if guess else (
            "; known keys: " + ", ".join(spec) if len(spec) <= 12 else "")
        self.issue(raw, k, prefix + (k,), "unknown key" + hint)

    def table(self, check: TableC, raw: Any, container: Any, key: Any,
              path: tuple[Any, ...]) -> Any:
        names = self.names.setdefault(check.entry, set())
        if raw is None:
            return EMPTY
        if not isinstance(raw, dict):
            self.issue(container, key, path, f"must be {check.what}, got {show(raw)}")
            return _BAD
        out = {}
        bad = False
        key_check, cls, obj = check.key, check.cls, self.obj
        for name, entry in raw.items():
            try:
                k = key_check.convert(name)
            except Invalid as exc:
                label = check.key_name
                if isinstance(name, (int, float)) and not isinstance(name, bool) and isinstance(
                        key_check, StrC):
                    plural = label + ("es" if label.endswith(("x", "s")) else "s")
                    msg = (f"{plural} must be in quotes (YAML reads {name} as a number): "
                           f"write \"{name}\" with the digits you mean")
                else:
                    msg = f"{label} {exc}"
                self.issue(raw, name, (str(name),), msg)
                bad = True
                continue
            names.add(k)
            o = obj(cls, entry, raw, name, (str(name),), ())
            if o is _BAD:
                bad = True
            else:
                out[k] = o
        return _BAD if bad else MappingProxyType(out)

    def entries(self, check: ListC, raw: Any, container: Any, key: Any,
                path: tuple[Any, ...]) -> Any:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.issue(container, key, path, f"must be {check.what}, got {show(raw)}")
            return _BAD
        out = []
        seen: dict[tuple[Any, ...], int] = {}
        bad = False
        for i, entry in enumerate(raw):
            here = (path[-1] if path else key, i)
            o = self.obj(check.cls, entry, raw, i, here, ())
            if o is _BAD:
                bad = True
                continue
            if check.unique:
                ident = tuple(getattr(o, u) for u in check.unique)
                if ident in seen:
                    first = seen[ident]
                    where = _line(raw, first)
                    self.issue(raw, i, here, "duplicate entry: " + ", ".join(
                        f"{u} {v!r}" for u, v in zip(check.unique, ident, strict=True)) + (
                        f" already at line {where}" if where else f" already in entry {first}"))
                    bad = True
                    continue
                seen[ident] = i
            out.append(o)
        return _BAD if bad else tuple(out)

    def seq(self, check: SeqC, raw: Any, container: Any, key: Any,
            path: tuple[Any, ...]) -> Any:
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            self.issue(container, key, path, f"must be {check.what}, got {show(raw)}")
            return _BAD
        if check.nonempty and not raw:
            self.issue(container, key, path, f"must be {check.what}, not empty")
            return _BAD
        out = []
        bad = False
        for i, item in enumerate(raw):
            try:
                out.append(check.item.convert(item))
            except Invalid as exc:
                self.issues.append(ConfigIssue(self.file, _line(raw, i) or _line(container, key),
                                               _show_path(path + (i,)), str(exc)))
                bad = True
        return _BAD if bad else tuple(out)


_TABLES: dict[type, tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]] = {}


def _table(cls: type) -> tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]:
    """(specs, defaults of optional keys, required keys) of a class, computed once."""
    t = _TABLES.get(cls)
    if t is None:
        spec = specs(cls)
        defaults = {n: s.default for n, s in spec.items() if s.default is not _MISSING}
        required = tuple(n for n, s in spec.items() if s.default is _MISSING)
        t = _TABLES[cls] = (spec, defaults, required)
    return t


# -- the whole configuration -----------------------------------------------------------------

def _build(docs: dict[str, _Doc], config_dir: Path,
           sources: dict[str, SourceInfo]) -> tuple[Snapshot | None, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []
    built: dict[str, Any] = {}
    refs: list[_Ref] = []
    names: dict[str, set[Any]] = {}
    for name, cls in FILES.items():
        doc = docs[name]
        b = _Builder(name)
        if doc.broken:
            built[name] = _BAD
            continue
        data = doc.data
        if data is not None and not isinstance(data, dict):
            b.issues.append(ConfigIssue(name, 1, "", "must be a mapping of keys at the top "
                                                      f"level, got {show(data)}"))
            built[name] = _BAD
        else:
            built[name] = b.obj(cls, data, None, None, (), ())
        issues += b.issues
        refs += b.refs
        for kind, found in b.names.items():
            names.setdefault(kind, set()).update(found)

    if not docs["users.yaml"].exists:
        names["user"] = set(DEFAULT_USERS)
    issues += _check_refs(refs, names, built, docs)
    issues += _check_across(built, docs)
    if issues or any(b is _BAD for b in built.values()):
        return None, issues

    users_file: UsersFile = built["users.yaml"]
    trunks_file: TrunksFile = built["trunks.yaml"]
    lines_file: LinesFile = built["lines.yaml"]
    snap = Snapshot(
        system=built["system.yaml"],
        users=users_file.users if docs["users.yaml"].exists else DEFAULT_USERS,
        lines=lines_file.lines,
        trunks=trunks_file.trunks,
        routing_groups=trunks_file.routing_groups,
        dialplan=built["dialplan.yaml"],
        services=built["services.yaml"],
        loaded_at=time.time(),
        config_dir=config_dir,
        sources=MappingProxyType(sources),
    )
    return snap, issues


def _check_refs(refs: list[_Ref], names: dict[str, set[Any]], built: dict[str, Any],
                docs: dict[str, _Doc]) -> list[ConfigIssue]:
    if not refs:
        return []
    lines = names.get("line", set())
    trunks = names.get("trunk", set())
    groups: set[int] = set()
    for f, attr in (("lines.yaml", "lines"), ("trunks.yaml", "trunks")):
        if built[f] is not _BAD:
            groups |= {e.outgoing_group_id for e in getattr(built[f], attr).values()}
    ring = set(names.get("ring group", set()))
    if built["users.yaml"] is not _BAD:
        ring |= {u.ringing_group_id for u in built["users.yaml"].users.values()}
    known: dict[str, set[Any]] = {
        "line": lines, "trunk": trunks, "line_or_trunk": lines | trunks,
        "routing_group": names.get("routing group", set()),
        "user": names.get("user", set()),
        "transition": names.get("transition", set()),
        "outgoing_group": groups,
        "hunt_group": names.get("hunt group", set()),
        "ring_group": {str(g) for g in ring},
    }
    # A reference into a file that could not be read is not checked (its error says enough).
    unread = {k for k, files in (("line", ["lines.yaml"]), ("trunk", ["trunks.yaml"]),
                                 ("line_or_trunk", ["lines.yaml", "trunks.yaml"]),
                                 ("routing_group", ["trunks.yaml"]), ("user", ["users.yaml"]),
                                 ("transition", ["dialplan.yaml"]),
                                 ("outgoing_group", ["lines.yaml", "trunks.yaml"]),
                                 ("hunt_group", ["services.yaml"]),
                                 ("ring_group", ["services.yaml", "users.yaml"]))
             if any(docs[f].broken or built[f] is _BAD for f in files)}
    out = []
    for r in refs:
        if r.kind in unread:
            continue
        name = int(r.name) if r.kind == "outgoing_group" else r.name
        pool = known[r.kind]
        if name in pool:
            continue
        label, where = _KIND_LABEL[r.kind]
        guess = difflib.get_close_matches(str(name), [str(p) for p in pool], n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        out.append(ConfigIssue(r.file, r.line, r.key,
                               f"no {label} {name!r} in {where}{hint}"))
    return out


def _check_across(built: dict[str, Any], docs: dict[str, _Doc]) -> list[ConfigIssue]:
    """Rules that span entries or files, beyond plain references."""
    out: list[ConfigIssue] = []
    lines_file, trunks_file = built["lines.yaml"], built["trunks.yaml"]
    if lines_file is _BAD or trunks_file is _BAD:
        return out
    tdata = docs["trunks.yaml"].data or {}
    for name in trunks_file.trunks:
        if name in lines_file.lines:
            out.append(ConfigIssue("trunks.yaml", _line(tdata.get("trunks"), name), str(name),
                                   "is also the name of an external line in lines.yaml; "
                                   "routing groups could not tell them apart"))
    ldata = docs["lines.yaml"].data or {}
    for start in lines_file.lines:
        seen = [start]
        nxt = lines_file.lines[start].chain_to_next_line
        while nxt and nxt in lines_file.lines:
            if nxt in seen:
                if nxt == start:
                    out.append(ConfigIssue("lines.yaml", _line(ldata.get("lines"), start),
                                           "chain_to_next_line",
                                           "lines chain in a loop: " + " -> ".join(seen + [nxt])))
                break
            seen.append(nxt)
            nxt = lines_file.lines[nxt].chain_to_next_line
    return out


def _docs(raw: dict[str, RawFile], lined: Iterable[str] = ()) -> tuple[
        dict[str, _Doc], list[ConfigIssue]]:
    docs: dict[str, _Doc] = {}
    issues: list[ConfigIssue] = []
    for name, f in raw.items():
        if f.data is None:
            docs[name] = _Doc(name, None, True, exists=False)
            continue
        try:
            docs[name] = _parse(name, f.data, lines=name in lined)
        except _SyntaxIssue as exc:
            issues.append(exc.issue)
            docs[name] = _Doc(name, None, True, broken=True)
    return docs, issues


def build_snapshot(config_dir: Path, raw: dict[str, RawFile]) -> Snapshot:
    """A snapshot from files already read (see :func:`read_files`)."""
    docs, syntax = _docs(raw)
    sources = {n: f.info for n, f in raw.items() if f.info is not None}
    snap, issues = _build(docs, config_dir, sources)
    if not syntax and not issues:
        assert snap is not None
        return snap
    unlined = {i.file for i in issues if i.line is None and not docs[i.file].lined}
    if unlined:  # read those files again, keeping lines, so every message has one
        docs.update(_docs({n: raw[n] for n in unlined}, lined=unlined)[0])
        snap, issues = _build(docs, config_dir, sources)
    order = {name: i for i, name in enumerate(FILES)}
    raise ConfigError(sorted(syntax + issues, key=lambda i: (order.get(i.file, 99),
                                                             i.line or 0)))


def load_snapshot(config_dir: Path) -> Snapshot:
    """Read, parse and validate every config file in ``config_dir``.

    Raises :class:`ConfigError` listing every problem (file, line, key, message).
    """
    config_dir = Path(config_dir)
    raw = read_files(config_dir)
    for name, f in raw.items():
        if f.data is None:
            what = "the manual's users 100, 101, 102" if name == "users.yaml" else "defaults"
            log.info("%s not found in %s: using %s", name, config_dir, what)
    return build_snapshot(config_dir, raw)


def load_text(config_dir: Path, name: str, text: str) -> Snapshot:
    """Validate the whole configuration as if ``name`` held ``text`` (the store's check)."""
    raw = read_files(Path(config_dir))
    data = text.encode("utf-8")
    raw[name] = RawFile(name, data, SourceInfo(mtime=time.time(), size=len(data),
                                               sha256=hashlib.sha256(data).hexdigest()))
    return build_snapshot(Path(config_dir), raw)


def load_file(config_dir: Path, name: str, cls: type) -> Any:
    """One file's dataclass alone (no references checked): for listing without a server."""
    raw = read_files(Path(config_dir))[name]
    if raw.data is None:
        return None
    docs, syntax = _docs({name: raw})
    if syntax:
        raise ConfigError(syntax)
    b = _Builder(name)
    data = docs[name].data
    result = b.obj(cls, data if isinstance(data, dict) or data is None else {}, None, None,
                   (), ())
    if b.issues:
        if not docs[name].lined:
            docs, _ = _docs({name: raw}, lined={name})
            b = _Builder(name)
            b.obj(cls, docs[name].data, None, None, (), ())
        raise ConfigError(b.issues)
    return result


__all__ = ["ConfigError", "ConfigIssue", "RawFile", "build_snapshot", "load_file",
           "load_snapshot", "load_text", "read_files", "check_syntax", "yaml_issue"]
