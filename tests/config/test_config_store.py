"""Round-trip edits: byte-identical when unchanged, comments kept, refused when invalid,
written atomically."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from minisip.config import store
from minisip.config.loader import ConfigError, load_snapshot
from minisip.config.schema import User
from tests.helpers import CONFIGS


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_round_trip_of_an_unchanged_file_is_byte_identical(path: Path) -> None:
    text = path.read_text()
    assert store.dump(store.round_trip_yaml().load(text)) == text


def test_setting_the_same_value_writes_nothing(cfg: Path) -> None:
    path = cfg / "users.yaml"
    before = path.read_bytes()
    os.utime(path, (1_000_000, 1_000_000))
    store.set_user(cfg, "100", password="100")
    assert path.read_bytes() == before
    assert path.stat().st_mtime == 1_000_000  # not even rewritten


def test_add_user_keeps_comments_order_and_other_users(cfg: Path) -> None:
    path = cfg / "users.yaml"
    before = path.read_text()
    user = store.add_user(cfg, "103", password="s3cret", display_name="Bob Smith",
                          forward_busy={"enabled": True, "number": "200"})
    assert user == User(password="s3cret", display_name="Bob Smith",
                        forward_busy=user.forward_busy)
    assert user.forward_busy.enabled and user.forward_busy.number == "200"
    after = path.read_text()
    assert after.startswith(before)  # header comments and users 100-102 untouched
    assert after[len(before):] == ('  "103":\n    password: s3cret\n'
                                   '    display_name: "Bob Smith"\n'
                                   '    forward_busy:\n      enabled: true\n'
                                   '      number: "200"\n')
    assert list(load_snapshot(cfg).users) == ["100", "101", "102", "103"]


def test_set_user_changes_keys_in_place(cfg: Path) -> None:
    store.set_user(cfg, "101", display_name="Carol", **{"follow_me.destinations.a": "9123"})
    store.set_user(cfg, "101", follow_me={"strategy": 1})  # merges, keeps destinations
    u = store.get_users(cfg)["101"]
    assert (u.display_name, u.follow_me.strategy, u.follow_me.destinations.a) == (
        "Carol", 1, "9123")
    assert store.USERS.raw(cfg, "101") == {
        "password": "101", "display_name": "Carol",
        "follow_me": {"destinations": {"a": "9123"}, "strategy": 1}}
    store.set_user(cfg, "101", display_name=None)  # None: back to the default
    assert store.get_users(cfg)["101"].display_name == ""
    assert "users:" in (cfg / "users.yaml").read_text().split("# ---")[-1]


def test_remove_user(cfg: Path) -> None:
    store.remove_user(cfg, "101")
    text = (cfg / "users.yaml").read_text()
    assert '"101"' not in text.split("users:\n")[-1]
    assert list(store.get_users(cfg)) == ["100", "102"]
    assert "Reference: every key of a user" in text


def test_missing_entries_and_duplicates_raise_one_line_errors(cfg: Path) -> None:
    with pytest.raises(KeyError) as info:
        store.remove_user(cfg, "999")
    assert str(info.value) == "no user '999' in users.yaml"
    with pytest.raises(KeyError):
        store.set_user(cfg, "999", password="x")
    with pytest.raises(store.EntryExists, match="^user '100' already exists in users.yaml$"):
        store.add_user(cfg, "100", password="x")
    with pytest.raises(KeyError):
        store.USERS.get(cfg, "999")


@pytest.mark.parametrize("edit,expected", [
    (lambda d: store.set_user(d, "101", max_concurrent_calls="two"),
     ("users.yaml", "max_concurrent_calls", "must be an integer >= 0, got 'two'")),
    (lambda d: store.set_user(d, "101", pasword="x"),
     ("users.yaml", "pasword", "unknown key; did you mean 'password'?")),
    (lambda d: store.set_user(d, "101", external_line="nope"),
     ("users.yaml", "external_line", "no external line 'nope' in lines.yaml")),
    (lambda d: store.add_user(d, "103", display_name="no password"),
     ("users.yaml", "103", "password is required")),
    (lambda d: store.add_line(d, "provider", account="2001"),
     ("lines.yaml", "provider", "server is required for a type 0 line (the provider's "
                                "address)")),
], ids=["wrong type", "unknown key", "dangling reference", "required", "cross-field"])
def test_an_invalid_edit_is_refused_and_nothing_is_written(
        cfg: Path, edit: object, expected: tuple[str, str, str]) -> None:
    before = {p.name: p.read_bytes() for p in cfg.iterdir()}
    with pytest.raises(ConfigError) as info:
        edit(cfg)  # type: ignore[operator]
    [issue] = info.value.errors
    assert (issue.file, issue.key, issue.message) == expected
    assert issue.line is not None  # a line of the refused text
    assert {p.name: p.read_bytes() for p in cfg.iterdir()} == before


def test_lines_and_trunks_tables(cfg: Path) -> None:
    line = store.add_line(cfg, "provider", account="2001", server="sip.example.com",
                          outbound_proxy={"enabled": True, "address": "proxy.example.com"})
    assert line.outbound_proxy.port == 5060
    text = (cfg / "lines.yaml").read_text()
    assert text.endswith("lines:\n  provider:\n    account: \"2001\"\n"
                         "    server: sip.example.com\n    outbound_proxy:\n"
                         "      enabled: true\n      address: proxy.example.com\n")
    store.add_trunk(cfg, "carrier", address="192.0.2.50", tel_uri=True)
    store.ROUTING_GROUPS.add(cfg, "out", members=["provider", "carrier"])
    store.set_user(cfg, "100", external_line="provider")
    snap = load_snapshot(cfg)
    assert snap.trunks["carrier"].tel_uri and snap.routing_groups["out"].members == (
        "provider", "carrier")
    assert "routing_groups:\n  out:\n    members: [provider, carrier]\n" in (
        cfg / "trunks.yaml").read_text()
    # A line still in use cannot go.
    with pytest.raises(ConfigError, match="external_line: no external line 'provider'"):
        store.remove_line(cfg, "provider")
    store.set_line(cfg, "provider", max_outgoing_calls=8)
    assert store.get_lines(cfg)["provider"].max_outgoing_calls == 8
    assert set(store.get_trunks(cfg)) == {"carrier"}
    store.ROUTING_GROUPS.remove(cfg, "out")
    store.remove_trunk(cfg, "carrier")
    assert store.get_trunks(cfg) == {}


def test_a_missing_users_file_is_created_with_the_preset_users(cfg: Path) -> None:
    (cfg / "users.yaml").unlink()
    assert set(store.get_users(cfg)) == {"100", "101", "102"}
    store.add_user(cfg, "200", password="pw")
    assert set(load_snapshot(cfg).users) == {"100", "101", "102", "200"}
    assert (cfg / "users.yaml").stat().st_mode & 0o777 == 0o600  # passwords inside


def test_set_option_edits_a_nested_system_key(cfg: Path) -> None:
    store.set_option(cfg, "system.yaml", "timers.t1", 0.25)
    assert load_snapshot(cfg).system.timers.t1 == 0.25
    assert "  t1: 0.25\n" in (cfg / "system.yaml").read_text()
    with pytest.raises(ConfigError, match="udp_port: must be an integer"):
        store.set_option(cfg, "system.yaml", "udp_port", -1)


def test_atomic_write_leaves_no_temp_file_and_keeps_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("old\n")
    path.chmod(0o640)
    store.atomic_write(path, "new\n")
    assert path.read_text() == "new\n"
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["users.yaml"]


def test_a_failed_write_keeps_the_old_file_whole(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("old\n")

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.atomic_write(path, "new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["users.yaml"]


def test_a_broken_file_is_reported_not_overwritten(cfg: Path) -> None:
    (cfg / "users.yaml").write_text("users:\n  \"100\":\n    password: a: b\n")
    with pytest.raises(ConfigError, match="users.yaml line 3: YAML syntax error"):
        store.add_user(cfg, "103", password="x")
    assert (cfg / "users.yaml").read_text() == "users:\n  \"100\":\n    password: a: b\n"


def test_command_line_items_are_typed_by_the_schema(cfg: Path) -> None:
    items = store.USERS.parse_items({
        "forward_busy.number": "0086", "max_duration": "600", "voicemail": "true",
        "allowed_ips": "192.0.2.1, 10.0.0.0/8", "display_name": "", "password": "0123"})
    assert items == {"forward_busy.number": "0086", "max_duration": 600, "voicemail": True,
                     "allowed_ips": ["192.0.2.1", "10.0.0.0/8"], "display_name": None,
                     "password": "0123"}
    user = store.set_user(cfg, "100", **items)
    assert (user.forward_busy.number, user.password, user.allowed_ips) == (
        "0086", "0123", ("192.0.2.1", "10.0.0.0/8"))
    assert store.LINES.parse_items({"type": "1", "incoming.transfer_to": "auto_attendant"}) == {
        "type": 1, "incoming.transfer_to": "auto_attendant"}
    assert [store.parse_scalar(t) for t in ("600", "true", "null", "0086", "1_000", "x")] == [
        600, True, None, 86, "1_000", "x"]
