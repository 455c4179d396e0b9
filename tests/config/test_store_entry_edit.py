"""An entry edit through its own lines gives the text a whole-file round trip gives."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest

from ruamel.yaml import YAML

from minisip.config import store
from minisip.config.store import USERS, dump, round_trip_yaml

REPO = Path(__file__).resolve().parents[2]

USERS_TEXT = [
    (REPO / "configs" / "users.yaml").read_text(),
    'users:\n  "100":\n    password: "100"\n    forward_busy:\n      enabled: true\n'
    '      number: "200"   # mobile\n\n  # the sales team\n  "101":\n    password: x\n'
    '    allowed_ips: [192.0.2.1, 192.0.2.2]\n  "102":\n    password: "102"\n\n'
    '# trailing comment about nothing\n',
    'users:\n  "100":\n    password: "100"\n  "101":\n    password: "101"',  # no final EOL
    '# head\nusers:\n  "100": {password: "100"}\n  "101":\n    password: "101"\nother: 1\n',
]


def whole_file(text: str, edit: Callable[[Any], None]) -> str:
    doc = round_trip_yaml().load(text)
    edit(doc["users"])
    return dump(doc)


def edits() -> list[tuple[str, str, bool, Callable[[Any], None]]]:
    def set_(name: str, **fields: Any) -> Callable[[Any], None]:
        def edit(table: Any) -> None:
            store._merge(table[name], store._expand(fields))
        return edit

    def add(name: str, **fields: Any) -> Callable[[Any], None]:
        def edit(table: Any) -> None:
            entry = store.CommentedMap()
            store._merge(entry, store._expand(fields))
            table[store.to_node(name)] = entry
        return edit

    def remove(name: str) -> Callable[[Any], None]:
        def edit(table: Any) -> None:
            del table[name]
        return edit

    return [
        ("set", "100", False, set_("100", display_name="Alice", **{"forward_busy.number": "9"})),
        ("set", "101", False, set_("101", password="n3w", max_duration=None)),
        ("set", "102", False, set_("102", allowed_ips=["10.0.0.1"])),
        ("add", "150", True, add("150", password="s3cret", display_name="New")),
        ("remove", "100", False, remove("100")),
        ("remove", "101", False, remove("101")),
        ("remove", "102", False, remove("102")),
    ]


@pytest.mark.parametrize("text", USERS_TEXT, ids=["shipped", "comments", "no-eol", "flow"])
@pytest.mark.parametrize("op", edits(), ids=lambda e: f"{e[0]}-{e[1]}")
def test_entry_edit_means_what_the_whole_file_round_trip_means(text: str, op: Any) -> None:
    kind, name, new_entry, edit = op
    if f'"{name}"' not in text and not new_entry:
        pytest.skip("no such entry in this file")
    fast = USERS._edit_entry(text, name, edit, new_entry)
    if fast is None:  # outside the fast path's shape (flow style): the whole file goes
        assert "{password" in text
        return
    whole = whole_file(text, edit)
    assert YAML(typ="safe").load(fast) == YAML(typ="safe").load(whole)
    if text is USERS_TEXT[0]:
        assert fast == whole  # no comment near an entry: the same bytes
    # Every comment stays, in order (the whole-file round trip misplaces some, or drops
    # them with a removed entry); so does every line of the other entries.
    comments = [line for line in text.splitlines() if line.strip().startswith("#")]
    assert [line for line in fast.splitlines() if line.strip().startswith("#")] == comments
    if kind == "remove":
        assert f'  "{name}":' not in fast


def test_a_user_edit_among_10000_takes_well_under_a_second(cfg: Path) -> None:
    from bench.config_load import users_yaml

    (cfg / "users.yaml").write_text(users_yaml(10_000))
    t = time.process_time()  # the edits' own work, not how busy the machine is (CPU only)
    store.set_user(cfg, "10005", display_name="Quick")
    store.add_user(cfg, "99999", password="pw-99999")
    store.remove_user(cfg, "10006")
    elapsed = time.process_time() - t
    users = store.get_users(cfg)
    assert users["10005"].display_name == "Quick" and "99999" in users and "10006" not in users
    assert elapsed < 3.0, f"{elapsed:.2f} s for three edits"  # whole-file: ~15 s each
