"""The loader: shipped configs and their defaults; every kind of bad edit reported as
file, line, key and message; missing files; the slow path (ruamel) keeps lines."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from minisip.config import schema
from minisip.config.loader import ConfigError, ConfigIssue, load_snapshot
from minisip.config.schema import FILES, NestedC, TableC, ListC

from tests.helpers import CONFIGS


def test_shipped_configs_load_with_the_manuals_defaults() -> None:
    snap = load_snapshot(CONFIGS)
    s = snap.system
    assert {n: u.password for n, u in snap.users.items()} == {
        "100": "100", "101": "101", "102": "102"}
    assert (s.outgroup_prefix, s.voice_prompts) == ("9", "en")
    assert (s.udp_port, s.tcp_port, s.tls_port) == (5060, 5060, 6060)
    assert s.listen == ("0.0.0.0", "::")
    assert (s.sip_address, s.domain, s.realm, s.data_dir) == ("", "", "minisip", "../data")
    assert (s.timers.t1, s.timers.t2, s.timers.t4) == (0.5, 4.0, 5.0)
    assert (s.registration.min_expires, s.registration.max_expires,
            s.registration.default_expires) == (60, 3600, 3600)
    assert s.max_contacts_per_user == 3
    assert s.relay_media == "auto"
    assert snap.lines == {} and snap.trunks == {} and snap.routing_groups == {}
    park = snap.services.call_park
    assert (park.first_slot, park.last_slot, park.park_timer) == (1, 99, 60)
    codes = snap.services.feature_codes
    assert (codes.forward_busy, codes.forward_unreachable, codes.forward_no_answer,
            codes.forward_unconditional) == ("*90", "*91", "*92", "*93")
    assert (codes.directed_pickup, codes.group_pickup, codes.call_park, codes.break_in,
            codes.one_number_join) == ("*40", "*50", "*70", "*75", "*74")
    u = snap.users["100"]
    assert u == schema.User(password="100")  # everything else is the schema default
    assert u.follow_me.strategy == 0 and u.ringing_group_id == 0 and u.pickup_group_id == 0
    assert set(snap.sources) == set(FILES)


def test_shipped_values_equal_the_schema_defaults() -> None:
    """The sample files spell out defaults; they must be the schema's (one truth)."""
    snap = load_snapshot(CONFIGS)
    assert snap.system == schema.SystemConfig()
    assert snap.dialplan == schema.DialPlan()
    assert snap.services == schema.Services()


def _leaf_keys(cls: type) -> set[str]:
    out = set()
    for path, spec in schema.walk(cls):
        if not isinstance(spec.check, NestedC):
            out.add(path.rsplit(".", 1)[-1])
        if isinstance(spec.check, (TableC, ListC)) and "." not in path:
            out.add(path)  # a top-level table; a nested one shows as its leaf key
    return out


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_option_is_documented_in_the_shipped_file(name: str) -> None:
    text = (CONFIGS / name).read_text()
    missing = [k for k in sorted(_leaf_keys(FILES[name]))
               if not re.search(rf"(^|[\s{{,]){re.escape(k)}:", text, re.M)]
    assert not missing, f"{name} does not show: {missing}"


def test_data_is_read_only() -> None:
    snap = load_snapshot(CONFIGS)
    with pytest.raises(TypeError):
        snap.users["999"] = snap.users["100"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        snap.system.udp_port = 1  # type: ignore[misc]


def test_missing_files_mean_defaults_and_are_logged(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="minisip.config"):
        snap = load_snapshot(tmp_path)
    assert snap.system == schema.SystemConfig()
    assert set(snap.users) == {"100", "101", "102"}  # the manual's preset users
    assert snap.sources == {}
    assert "users.yaml not found" in caplog.text and "lines.yaml not found" in caplog.text


def test_empty_files_mean_empty_tables(tmp_path: Path) -> None:
    (tmp_path / "users.yaml").write_text("# nobody yet\n")
    (tmp_path / "system.yaml").write_text("")
    snap = load_snapshot(tmp_path)
    assert snap.users == {} and snap.system == schema.SystemConfig()


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration directory not found"):
        load_snapshot(tmp_path / "nope")


LINES = """\
lines:
  provider:
    account: "2001"
    server: sip.example.com
"""

USERS_OK = """\
users:
  "100":
    password: "100"
  "101":
    password: "101"
"""

# (id, files written over the shipped ones, every message expected, exactly)
BAD_EDITS = [
    ("wrong type", {"users.yaml": USERS_OK + "    max_concurrent_calls: two\n"},
     ["users.yaml line 6: max_concurrent_calls: must be an integer >= 0, got 'two'"]),
    ("bool is not a number", {"users.yaml": USERS_OK + "    call_right: true\n"},
     ["users.yaml line 6: call_right: must be an integer from 0 to 255, got true"]),
    ("yes is not a boolean in YAML 1.2", {"users.yaml": USERS_OK + "    voicemail: yes\n"},
     ["users.yaml line 6: voicemail: must be true or false, got 'yes'"]),
    ("out of range", {"system.yaml": "udp_port: 70000\n"},
     ["system.yaml line 1: udp_port: must be an integer from 0 to 65535, got 70000"]),
    ("nested out of range", {"system.yaml": "timers:\n  t1: 0\n"},
     ["system.yaml line 2: timers.t1: must be a number > 0 and <= 60, got 0"]),
    ("not a choice", {"system.yaml": "voice_prompts: fr\n"},
     ["system.yaml line 1: voice_prompts: must be one of en, zh, got 'fr'"]),
    ("unknown key with did-you-mean", {"users.yaml": USERS_OK + "    pasword: x\n"},
     ["users.yaml line 6: pasword: unknown key; did you mean 'password'?"]),
    ("unknown nested key", {"system.yaml": "registration:\n  max_expire: 60\n"},
     ["system.yaml line 2: registration.max_expire: unknown key; "
      "did you mean 'max_expires'?"]),
    ("dangling external line", {"lines.yaml": LINES,
                                "users.yaml": USERS_OK + "    external_line: provdr\n"},
     ["users.yaml line 6: external_line: no external line 'provdr' in lines.yaml; "
      "did you mean 'provider'?"]),
    ("dangling chain", {"lines.yaml": LINES + "    chain_to_next_line: backup\n"},
     ["lines.yaml line 5: chain_to_next_line: no external line 'backup' in lines.yaml"]),
    ("dangling route target", {"dialplan.yaml": 'analyze_called:\n  "0":\n'
                                                "    route: sip_trunk\n    target: carrier\n"},
     ["dialplan.yaml line 4: target: no SIP trunk 'carrier' in trunks.yaml"]),
    ("dangling transition", {"dialplan.yaml": 'transitions:\n  1:\n    type: delete\n'
                                              '    length: 1\nanalyze_called:\n  "9":\n'
                                              "    route: local_user\n    transition: 2\n"},
     ["dialplan.yaml line 8: transition: no transition 2 in dialplan.yaml transitions"]),
    ("dangling routing group member", {"lines.yaml": LINES, "trunks.yaml":
                                       "routing_groups:\n  out:\n"
                                       "    members: [provider, nope]\n"},
     ["trunks.yaml line 3: members[1]: no external line or SIP trunk 'nope' in "
      "lines.yaml or trunks.yaml"]),
    ("forwarding number not dial characters",
     {"users.yaml": USERS_OK + "    forward_busy:\n      enabled: true\n      number: bob\n"},
     ["users.yaml line 8: forward_busy.number: must be a string of dial characters "
      "(0-9 * # +), got 'bob'"]),
    ("forwarding number unquoted",
     {"users.yaml": USERS_OK + "    forward_busy:\n      number: 0086123\n"},
     ["users.yaml line 7: forward_busy.number: must be a string of dial characters "
      "(0-9 * # +) in quotes, got the number 86123 (write \"86123\" with the digits "
      "you mean)"]),
    ("unquoted user name", {"users.yaml": USERS_OK + "  102:\n    password: x\n"},
     ["users.yaml line 6: 102: user names must be in quotes (YAML reads 102 as a "
      "number): write \"102\" with the digits you mean"]),
    ("unquoted dial-plan prefix", {"dialplan.yaml": "analyze_called:\n  9:\n"
                                                    "    route: local_user\n"},
     ["dialplan.yaml line 2: 9: called prefixes must be in quotes (YAML reads 9 as a "
      "number): write \"9\" with the digits you mean"]),
    ("quoted transition id", {"dialplan.yaml": 'transitions:\n  "1":\n    type: delete\n'
                                               "    length: 1\n"},
     ["dialplan.yaml line 2: 1: transition id must be an integer >= 1, got '1'"]),
    ("missing password", {"users.yaml": USERS_OK + '  "102":\n    display_name: Bob\n'},
     ["users.yaml line 6: 102: password is required"]),
    ("entry not a mapping", {"users.yaml": USERS_OK + '  "102": secret\n'},
     ["users.yaml line 6: 102: must be a mapping (key: value lines), got 'secret'"]),
    ("rule across fields", {"system.yaml": "registration:\n  default_expires: 30\n"},
     ["system.yaml line 2: registration.default_expires: must be from min_expires (60) "
      "to max_expires (3600), got 30"]),
    ("follow-me strategy 2 needs an interval",
     {"users.yaml": USERS_OK + "    follow_me:\n      strategy: 2\n      interval: 0\n"},
     ["users.yaml line 8: follow_me.interval: must be > 0 when strategy is 2"]),
    ("overlapping feature codes", {"services.yaml": 'feature_codes:\n  call_park: "*9"\n'},
     ["services.yaml line 1: feature_codes: voicemail '*97' and call_park's '*9' overlap "
      "(one is a prefix)",
      "services.yaml line 2: feature_codes.call_park: '*9' and forward_busy's '*90' overlap "
      "(one is a prefix)"]),
    ("duplicate list entry", {"services.yaml": 'black_white_list:\n'
                                               '  - caller_prefix: "1"\n'
                                               '    called_prefix: "*"\n'
                                               '  - caller_prefix: "1"\n'
                                               '    called_prefix: "*"\n'},
     ["services.yaml line 4: black_white_list[1]: duplicate entry: caller_prefix '1', "
      "called_prefix '*' already at line 2"]),
    ("YAML syntax error", {"users.yaml": USERS_OK + "    display_name: a: b\n"},
     ["users.yaml line 6: YAML syntax error: mapping values are not allowed here"]),
    ("duplicate key", {"users.yaml": USERS_OK + '  "100":\n    password: x\n'},
     ["users.yaml line 6: 100: duplicate key (first at line 2)"]),
    ("duplicate key in a file only ruamel reads",
     {"users.yaml": 'users:\n  "100": &u\n    password: a\n  "100":\n    password: b\n'},
     ["users.yaml line 4: 100: duplicate key"]),
    ("top level not a mapping", {"services.yaml": "- a\n"},
     ["services.yaml line 1: must be a mapping of keys at the top level, got a list"]),
    ("line and trunk with one name", {"lines.yaml": LINES, "trunks.yaml":
                                      "trunks:\n  provider:\n    address: 192.0.2.1\n"},
     ["trunks.yaml line 2: provider: is also the name of an external line in lines.yaml; "
      "routing groups could not tell them apart"]),
    ("chain loop", {"lines.yaml": LINES + "    chain_to_next_line: provider\n"},
     ["lines.yaml line 2: chain_to_next_line: lines chain in a loop: provider -> provider"]),
]


@pytest.mark.parametrize("files,expected", [c[1:] for c in BAD_EDITS],
                         ids=[c[0] for c in BAD_EDITS])
def test_bad_edit_is_reported_with_file_line_and_key(cfg: Path, files: dict[str, str],
                                                      expected: list[str]) -> None:
    for name, text in files.items():
        (cfg / name).write_text(text)
    with pytest.raises(ConfigError) as info:
        load_snapshot(cfg)
    assert [str(e) for e in info.value.errors] == expected
    assert str(info.value) == "\n".join(expected)


def test_every_problem_is_reported_not_only_the_first(cfg: Path) -> None:
    (cfg / "users.yaml").write_text(USERS_OK + "    max_duration: -1\n    voicemail: 1\n")
    (cfg / "system.yaml").write_text("tls_port: x\n")
    with pytest.raises(ConfigError) as info:
        load_snapshot(cfg)
    assert [(e.file, e.line, e.key) for e in info.value.errors] == [
        ("system.yaml", 1, "tls_port"), ("users.yaml", 6, "max_duration"),
        ("users.yaml", 7, "voicemail")]
    assert all(isinstance(e, ConfigIssue) for e in info.value.errors)


def test_a_file_outside_the_fast_subset_still_gets_line_numbers(cfg: Path) -> None:
    # A block scalar (|) is read by ruamel without lines; on an error, the file is read
    # again with the round-trip loader just to place the message.
    (cfg / "users.yaml").write_text('users:\n  "100":\n    password: |\n      multi\n'
                                    '  "101":\n    password: x\n    max_duration: -1\n')
    with pytest.raises(ConfigError) as info:
        load_snapshot(cfg)
    assert str(info.value) == ("users.yaml line 7: max_duration: must be an integer >= 0, "
                               "got -1")


def test_a_file_outside_the_fast_subset_loads_the_same(cfg: Path) -> None:
    (cfg / "users.yaml").write_text('users:\n  "100": &base\n    password: "a"\n'
                                    '    display_name: !!str Bob\n')
    snap = load_snapshot(cfg)
    assert snap.users["100"].display_name == "Bob"


def test_a_full_configuration_loads(cfg: Path) -> None:
    (cfg / "lines.yaml").write_text(LINES + "    outgoing_group_id: 1\n"
                                    "  gateway:\n    type: 1\n    account: fxo\n")
    (cfg / "trunks.yaml").write_text(
        "trunks:\n  carrier:\n    address: 192.0.2.50\n    outgoing_group_id: 2\n"
        "routing_groups:\n  out:\n    members: [provider, carrier]\n")
    (cfg / "users.yaml").write_text(
        USERS_OK + "    external_line: provider\n    allowed_ips: [192.0.2.0/24]\n"
        "    ringing_group_id: 3\n"
        "    follow_me:\n      strategy: 2\n      destinations: {a: \"9123\"}\n")
    (cfg / "dialplan.yaml").write_text(
        "analyze_called:\n"
        '  "9":\n    route: outgoing_group\n    target: 1\n    transition: 1\n'
        '  "8":\n    route: routing_group\n    target: out\n    call_right: 2\n'
        '  "600":\n    route: service\n    target: "ring_group:3"\n'
        "transitions:\n  1:\n    type: delete\n    length: 1\n"
        '  2:\n    type: replace\n    length: 1\n    string: "0086"\n'
        "refine_called:\n  - outgoing_group_id: 1\n    prefix: \"0\"\n    transition: 2\n")
    snap = load_snapshot(cfg)
    assert snap.users["101"].allowed_ips == ("192.0.2.0/24",)
    assert snap.users["101"].follow_me.destinations.a == "9123"
    assert snap.routing_groups["out"].members == ("provider", "carrier")
    prefix, route = snap.dialplan.called_route("92002") or ("", None)
    assert prefix == "9" and route is not None and route.target == "1"
    assert snap.dialplan.transitions[route.transition].apply("92002") == "2002"
    rule = snap.dialplan.refine(snap.dialplan.refine_called, 1, "013812345678")
    assert rule is not None
    assert snap.dialplan.transitions[rule.transition].apply("013812345678") == "008613812345678"
    assert snap.lines["gateway"].type == 1 and snap.lines["gateway"].server == ""
