"""The dial plan as a table: (config snippets, caller, dialed) -> the Route's fields.

Snapshots come from the real loader: the shipped configs copied to a temporary
directory, with the files a case names replaced by its YAML text.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from minisip.config.loader import load_snapshot
from minisip.config.schema import FeatureCodes, Snapshot, specs
from minisip.pbx.dialplan import (
    FEATURES, Route, RouteKind, outgoing_group_of, refine_for_exit, route_call,
)

SHIPPED = Path(__file__).resolve().parents[2] / "configs"

L, E, G, RG, T, S, X = (RouteKind.LOCAL_USER, RouteKind.EXTERNAL_LINE,
                        RouteKind.OUTGOING_GROUP, RouteKind.ROUTING_GROUP,
                        RouteKind.SIP_TRUNK, RouteKind.SERVICE, RouteKind.REJECT)

USERS = """
users:
  "100": {password: p100}
  "101": {password: p101, call_right: 5}
  "102": {password: p102, call_right: 4, external_line: private}
  "103": {password: p103, call_right: 6, forward_busy: {enabled: true},
          operator_break_in: true}
"""

LINES = """
lines:
  provider: {account: "2001", server: sip1.example.com, outgoing_group_id: 1}
  backup: {account: "2002", server: sip2.example.com, outgoing_group_id: 1}
  private: {account: "2003", server: sip3.example.com, outgoing_group_id: 2,
            all_users_can_use: false}
"""

TRUNKS = """
trunks:
  plain: {address: 192.0.2.40}
  carrier: {address: 192.0.2.50, outgoing_group_id: 3}
  carrier2: {address: 192.0.2.51, outgoing_group_id: 1}
routing_groups:
  mixed: {members: [carrier, provider]}
  same: {members: [carrier2, backup]}
"""

DIALPLAN = """
analyze_caller:
  "10": {transition: 4}
  "103": {transition: 5}
analyze_called:
  "12": {route: local_user, target: "100"}
  "123": {route: local_user, target: "101"}
  "0": {route: sip_trunk, target: plain, transition: 1}
  "00": {route: outgoing_group, target: "1", call_right: 5}
  "02": {route: outgoing_group, target: "2"}
  "8": {route: local_user, transition: 2}
  "7": {route: routing_group, target: mixed, transition: 2}
  "6": {route: routing_group, target: same, transition: 2}
  "5": {route: external_line, target: provider, transition: 3}
  "555": {route: service, target: voicemail}
  "556": {route: service, target: "hunt_group:sales"}
transitions:
  1: {type: replace, start: 0, length: 1, string: "0086"}
  2: {type: delete, start: 0, length: 1}
  3: {type: insert, start: 1, string: "21"}
  4: {type: insert, start: 0, string: "0755"}
  5: {type: replace, start: 0, length: 3, string: "8000"}
  6: {type: delete, start: 0, length: 2}
  7: {type: replace, start: 0, length: 4, string: "+44"}
  8: {type: replace, start: 0, length: 4, string: "+86"}
  9: {type: replace, start: 0, length: 7, string: "88880000"}
refine_called:
  - {outgoing_group_id: 1, prefix: "00", transition: 6}
  - {outgoing_group_id: 1, prefix: "0044", transition: 7}
  - {outgoing_group_id: 3, prefix: "0086", transition: 8}
refine_caller:
  - {outgoing_group_id: 1, prefix: "0755", transition: 9}
"""

SERVICES = """
hunt_groups:
  sales: {number: "300", members: ["100", "101"]}
ring_groups:
  1: {number: "301"}
call_park: {first_slot: 1, last_slot: 50}
"""

BASE = {"users.yaml": USERS, "lines.yaml": LINES, "trunks.yaml": TRUNKS,
        "dialplan.yaml": DIALPLAN, "services.yaml": SERVICES}

#: users without a specific line, for configs with no or other lines
PLAIN_USERS = {"users.yaml": 'users:\n  "100": {password: p100}\n  "101": {password: p101}\n'}
NO_LINES = {**PLAIN_USERS, "lines.yaml": "lines: {}\n",
            "trunks.yaml": "trunks: {}\nrouting_groups: {}\n",
            "dialplan.yaml": "analyze_called: {}\n"}
RESTRICTED_LINE = {**PLAIN_USERS, "trunks.yaml": "trunks: {}\nrouting_groups: {}\n",
                   "dialplan.yaml": "analyze_called: {}\n",
                   "lines.yaml": "lines:\n  only: {account: a, server: s.example.com, "
                                 "all_users_can_use: false}\n"}
CHAINED = {**PLAIN_USERS, "trunks.yaml": "trunks: {}\nrouting_groups: {}\n",
           "dialplan.yaml": "analyze_called: {}\n", "lines.yaml": """
lines:
  a: {account: a, server: a.example.com, chain_to_next_line: c, outgoing_group_id: 1}
  b: {account: b, server: b.example.com}
  c: {account: c, server: c.example.com, outgoing_group_id: 1}
  d: {account: d, server: d.example.com, max_outgoing_calls: 0}
"""}
PREFIX_4 = {"system.yaml": 'outgroup_prefix: "4"\n'}
NO_PREFIX = {"system.yaml": 'outgroup_prefix: ""\n'}
OTHER_CODES = {"services.yaml": SERVICES + 'feature_codes: {forward_busy: "#72", call_park: ""}\n'}

Case = tuple[str, dict[str, str], str, str, dict[str, Any]]

CASES: list[Case] = [
    # -- local users and longest prefix ------------------------------------------------
    ("a user's number rings that user", {}, "100", "101",
     dict(kind=L, target="101", number="101", prefix="")),
    ("1234 matches 123, not 12", {}, "100", "1234",
     dict(kind=L, target="101", number="1234", prefix="123")),
    ("129 matches 12", {}, "100", "129", dict(kind=L, target="100", prefix="12")),
    ("1 matches neither 12 nor 123 and is no user", {}, "100", "1",
     dict(kind=X, status=404, reason="Number not found", number="1")),
    ("an unknown number is not found", {}, "100", "333",
     dict(kind=X, status=404, reason="Number not found")),
    ("a local_user route without target rings the user of the changed number", {},
     "100", "8101", dict(kind=L, target="101", number="101", prefix="8")),
    ("a local_user route to a number that is no user is not found", {}, "100", "8999",
     dict(kind=X, status=404, reason="Number not found", number="999", prefix="8")),
    ("nothing dialled is incomplete", {}, "100", "", dict(kind=X, status=484)),
    ("a hunt group's pilot number runs the hunt group", {}, "100", "300",
     dict(kind=S, target="hunt_group", argument="sales", number="300")),
    ("a ring group's pilot number runs the ring group", {}, "100", "301",
     dict(kind=S, target="ring_group", argument="1")),
    # -- services from the called table -------------------------------------------------
    ("a service route", {}, "100", "555", dict(kind=S, target="voicemail", argument="",
                                               prefix="555")),
    ("a service route with a parameter", {}, "100", "5561",
     dict(kind=S, target="hunt_group", argument="sales", number="5561")),
    # -- transitions ---------------------------------------------------------------------
    ("replace at 0 length 1 with 0086, to a SIP trunk", {}, "100", "013812345678",
     dict(kind=T, target="plain", number="008613812345678", candidates=("plain",),
          outgoing_group=0, prefix="0")),
    ("insert 21 at 1, to an external line", {}, "100", "5123",
     dict(kind=E, target="provider", number="521123", candidates=("provider",),
          outgoing_group=1)),
    ("delete the first digit", {}, "100", "8102", dict(kind=L, number="102")),
    # -- caller transitions --------------------------------------------------------------
    ("the caller's number gets 0755 inserted (prefix 10)", {}, "100", "101",
     dict(caller_number="0755100")),
    ("the longest caller prefix wins (103 over 10)", {}, "103", "101",
     dict(caller_number="8000")),
    ("the caller prefix 10 changes every number under it", {}, "101", "100",
     dict(caller_number="0755101")),
    ("a caller matching no rule is unchanged", {}, "200", "101",
     dict(kind=L, caller_number="200")),
    # -- call rights ---------------------------------------------------------------------
    ("equal call right passes", {}, "101", "0033123",
     dict(kind=G, target="1", number="33123")),
    ("higher call right passes", {}, "103", "0033123", dict(kind=G)),
    ("lower call right is refused", {}, "102", "0033123",
     dict(kind=X, status=403, reason="Call right too low for 00", prefix="00")),
    ("call right 0 is refused a prefix of right 5", {}, "100", "00441234",
     dict(kind=X, status=403, reason="Call right too low for 00")),
    # -- outgoing groups, routing groups, refine -----------------------------------------
    ("an outgoing group: lines then trunks of the group, refined by the longest prefix",
     {}, "101", "00441234",
     dict(kind=G, target="1", number="+441234", candidates=("provider", "backup", "carrier2"),
          outgoing_group=1, caller_number="88880000")),
    ("refine_called falls back to the shorter prefix", {}, "101", "0033123",
     dict(number="33123", prefix="00")),
    ("an outgoing group of only a restricted line is closed to others", {}, "100", "02555",
     dict(kind=X, status=503, reason="No external line available")),
    ("an outgoing group's restricted line is open to its bound user", {}, "102", "02555",
     dict(kind=G, target="2", number="02555", candidates=("private",), outgoing_group=2)),
    ("a routing group of one outgoing group is refined now", {}, "100", "60044123",
     dict(kind=RG, target="same", number="+44123", candidates=("carrier2", "backup"),
          outgoing_group=1, caller_number="88880000")),
    ("a routing group across groups is left for refine_for_exit", {}, "100", "70086123",
     dict(kind=RG, target="mixed", number="0086123", candidates=("carrier", "provider"),
          outgoing_group=None, caller_number="0755100")),
    ("a trunk's group without matching refine rule keeps the number", {}, "100", "0123",
     dict(number="0086123", outgoing_group=0)),
    # -- the outgroup prefix -------------------------------------------------------------
    ("9 and a number leave on the lines open to all, prefix removed", {}, "100", "9555123",
     dict(kind=G, target="", number="555123", prefix="9", candidates=("provider", "backup"),
          outgoing_group=1, caller_number="88880000")),
    ("the outgroup prefix goes out even when the rest is a user's number", {}, "100",
     "9101", dict(kind=G, number="101")),
    ("a user's specific external line is used alone", {}, "102", "9123",
     dict(kind=E, target="private", number="123", candidates=("private",),
          outgoing_group=2)),
    ("the prefix alone is incomplete", {}, "100", "9", dict(kind=X, status=484)),
    ("no line at all: 503", NO_LINES, "100", "9123",
     dict(kind=X, status=503, reason="No external line available", number="123")),
    ("no line open to this user: 503", RESTRICTED_LINE, "100", "9123",
     dict(kind=X, status=503)),
    ("a changed prefix goes out", PREFIX_4, "100", "4123",
     dict(kind=G, number="123", prefix="4")),
    ("with a changed prefix 9 is just a digit", PREFIX_4, "100", "9123",
     dict(kind=X, status=404)),
    ("an empty prefix: a user's number stays local", NO_PREFIX, "100", "101",
     dict(kind=L, target="101")),
    ("an empty prefix: other numbers go out whole", NO_PREFIX, "100", "2002",
     dict(kind=G, number="2002", prefix="", candidates=("provider", "backup"))),
    ("an empty prefix and no line: not found", {**NO_LINES, **NO_PREFIX}, "100", "2002",
     dict(kind=X, status=404)),
    ("an analyze_called prefix wins over the outgroup prefix", PREFIX_4, "100", "5123",
     dict(kind=E, target="provider")),
    ("a line's chain follows it; lines that cannot call out are left out", CHAINED,
     "100", "9123", dict(kind=G, candidates=("a", "c", "b"), outgoing_group=None)),
    # -- callers that are not local users ------------------------------------------------
    ("an outside caller reaches a user", {}, "2001", "101", dict(kind=L, target="101")),
    ("an outside caller cannot use the outgroup prefix", {}, "2001", "9123",
     dict(kind=X, status=404)),
    ("an outside caller has call right 0", {}, "2001", "0033", dict(kind=X, status=403)),
    ("an outside caller dials no feature codes", {}, "2001", "*74", dict(kind=X, status=404)),
    # -- feature codes -------------------------------------------------------------------
    ("*90*n# sets busy forwarding", {}, "103", "*90*200#",
     dict(kind=S, target="forward_busy", argument="200", prefix="*90", number="*90*200#")),
    ("*90*n without # too", {}, "103", "*90*200", dict(kind=S, argument="200")),
    ("*90# clears busy forwarding", {}, "103", "*90#",
     dict(kind=S, target="forward_busy", argument="")),
    ("forwarding needs the user's right", {}, "100", "*90*200#",
     dict(kind=X, status=403, reason="Service forward_busy not allowed")),
    ("a forwarding number must be digits", {}, "103", "*90*2*3#", dict(kind=X, status=484)),
    ("*40*ext picks up ext", {}, "100", "*40*101",
     dict(kind=S, target="directed_pickup", argument="101")),
    ("*40* without extension is incomplete", {}, "100", "*40*", dict(kind=X, status=484)),
    ("*50* picks up in the group", {}, "100", "*50*",
     dict(kind=S, target="group_pickup", argument="")),
    ("*70*nn parks in slot nn", {}, "100", "*70*12",
     dict(kind=S, target="call_park", argument="12")),
    ("*70 parks in a slot minisip picks", {}, "100", "*70",
     dict(kind=S, target="call_park", argument="")),
    ("*71 needs a slot", {}, "100", "*71", dict(kind=X, status=484)),
    ("a park slot outside call_park's range", {}, "100", "*70*51",
     dict(kind=X, status=404, reason="No park slot 51")),
    ("*71*nn retrieves", {}, "100", "*71*50", dict(kind=S, target="call_retrieve")),
    ("*74 joins", {}, "100", "*74", dict(kind=S, target="one_number_join")),
    ("*74 takes no argument", {}, "100", "*74*5", dict(kind=X, status=404)),
    ("*75*ext breaks in with the right", {}, "103", "*75*101",
     dict(kind=S, target="break_in", argument="101")),
    ("*75*ext without the right", {}, "100", "*75*101", dict(kind=X, status=403)),
    ("digits after a code without * are not that code", {}, "103", "*901",
     dict(kind=X, status=404, reason="Number not found")),
    ("a changed code", OTHER_CODES, "103", "#72*555#",
     dict(kind=S, target="forward_busy", argument="555", prefix="#72")),
    ("a code turned off is just digits", OTHER_CODES, "100", "*70*12",
     dict(kind=X, status=404)),
]


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """files -> Snapshot, loaded once per distinct set of files."""
    cache: dict[tuple[tuple[str, str], ...], Snapshot] = {}

    def get(files: dict[str, str]) -> Snapshot:
        key = tuple(sorted({**BASE, **files}.items()))
        if key not in cache:
            d = tmp_path_factory.mktemp("configs")
            shutil.copytree(SHIPPED, d, dirs_exist_ok=True)
            for name, text in key:
                (d / name).write_text(text)
            cache[key] = load_snapshot(d)
        return cache[key]
    return get


@pytest.mark.parametrize("files,caller,dialed,expected",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_route_call(snapshots: Any, files: dict[str, str], caller: str, dialed: str,
                    expected: dict[str, Any]) -> None:
    route = route_call(snapshots(files), caller, dialed)
    got = {k: getattr(route, k) for k in expected}
    assert got == expected, route


def test_refine_for_exit_refines_each_member_of_a_mixed_routing_group(snapshots: Any) -> None:
    snap = snapshots({})
    route = route_call(snap, "100", "70086123")
    out = [refine_for_exit(snap, route, outgoing_group_of(snap, name))
           for name in route.candidates]
    assert [(r.number, r.caller_number, r.outgoing_group) for r in out] == [
        ("+86123", "0755100", 3),  # carrier: group 3 refines 0086
        ("86123", "88880000", 1),  # provider: group 1 refines 00 and the caller
    ]


def test_refine_for_exit_is_a_no_op_for_the_group_already_refined(snapshots: Any) -> None:
    snap = snapshots({})
    route = route_call(snap, "101", "00441234")
    assert refine_for_exit(snap, route, 1) is route
    with pytest.raises(ValueError):
        refine_for_exit(snap, route, 3)


def test_refine_for_exit_refuses_routes_that_stay_inside(snapshots: Any) -> None:
    snap = snapshots({})
    with pytest.raises(ValueError):
        refine_for_exit(snap, route_call(snap, "100", "101"), 0)


def test_every_feature_code_has_a_table_row() -> None:
    assert set(FEATURES) == set(specs(FeatureCodes))


def test_shipped_configs_route_the_manual_users_to_each_other() -> None:
    snap = load_snapshot(SHIPPED)
    assert route_call(snap, "100", "102") == Route(RouteKind.LOCAL_USER, "102", "102",
                                                   caller_number="100")
    assert route_call(snap, "100", "9123").status == 503  # no lines shipped
