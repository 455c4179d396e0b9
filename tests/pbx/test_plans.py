"""The services' plans as a table: (config, live state, call, outcomes) -> steps walked.

Each case names the YAML it adds to the shipped configuration, who is online
and busy, the call (caller, dialled number) and the outcomes its steps end
with; the expected column is what :func:`walk` prints: one line per step
("label: targets") and the End reached.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from minisip.config.loader import load_snapshot
from minisip.config.schema import Snapshot
from minisip.pbx.dialplan import route_call
from minisip.pbx.services import local_user, plan_route
from minisip.pbx.services.black_white_list import REFUSED, screen
from minisip.pbx.services.feature_codes import change
from minisip.pbx.services.plan import (
    Ctx, End, Outcome, Step, combine, outcome_of, walk,
)

SHIPPED = Path(__file__).resolve().parents[2] / "configs"
B, N, U, F = Outcome.BUSY, Outcome.NO_ANSWER, Outcome.UNREACHABLE, Outcome.FAILED


class FakeLive:
    def __init__(self, online: set[str], busy: set[str]) -> None:
        self._online, self._busy = online, busy
        self.cursor: dict[str, int] = {}

    def online(self, user: str) -> bool:
        return user in self._online

    def busy(self, user: str) -> bool:
        return user in self._busy

    def hunt_start(self, group: str) -> int:
        return self.cursor.get(group, -1) + 1

    def hunt_tried(self, group: str, index: int) -> None:
        self.cursor[group] = index


def user(name: str, extra: str = "") -> str:
    return f'  "{name}": {{password: p{name}{", " + extra if extra else ""}}}\n'


def users(*entries: str) -> str:
    return "users:\n" + "".join(entries)


_cache: dict[tuple[tuple[str, str], ...], Snapshot] = {}


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> Any:
    def get(files: dict[str, str]) -> Snapshot:
        key = tuple(sorted(files.items()))
        if key not in _cache:
            d = tmp_path_factory.mktemp("cfg")
            for f in SHIPPED.glob("*.yaml"):
                shutil.copy(f, d / f.name)
            for name, text in files.items():
                (d / name).write_text(text)
            _cache[key] = load_snapshot(d)
        return _cache[key]
    return get


ALL = {"100", "101", "102", "103", "104"}
BASIC = users(*(user(n) for n in sorted(ALL)))

FWD = users(
    user("100"),
    user("101", 'forward_busy: {enabled: true, number: "102"}, '
                'forward_no_answer: {enabled: true, number: "103"}, '
                'forward_unreachable: {enabled: true, number: "104"}'),
    user("102", 'forward_busy: {enabled: true, number: "101"}'),
    user("103", 'forward_unconditional: {enabled: true, number: "104"}'),
    user("104", 'voicemail: true'),
)
LOOP = users(
    user("100"),
    user("101", 'forward_unconditional: {enabled: true, number: "102"}'),
    user("102", 'forward_unconditional: {enabled: true, number: "101"}'),
)
LONG = users(user("100"), *(user(str(n), f'forward_unconditional: {{enabled: true, '
                                       f'number: "{n + 1}"}}') for n in range(101, 108)),
             user("108"))
NO_RIGHT = users(user("100"), user("101", 'forward_busy: {enabled: false, number: "102"}'),
                 user("102"))
FOLLOW = {i: users(user("100"), user("101", f'follow_me: {{strategy: {i}, interval: 5, '
                                            'destinations: {a: "102", b: "103"}}, '
                                            'no_answer_time: 20, voicemail: true'),
                   user("102"), user("103")) for i in (0, 1, 2)}
RING = users(user("100"), user("101", "ringing_group_id: 1"),
             user("102", "ringing_group_id: 1"), user("103", "ringing_group_id: 1"),
             user("104", "ringing_group_id: 1, suppress_ring_group: true"))
RING_SERVICES = 'ring_groups:\n  1: {number: "600", no_answer_time: 12}\n'
HUNT_SERVICES = ('hunt_groups:\n'
                 '  sales: {number: "700", members: ["101", "102", "103"], ring_time: 7}\n'
                 '  desk: {number: "701", members: ["101", "102", "103"], ring_time: 5,'
                 ' strategy: circular}\n')
MULTI = users(user("100"), user("101", "one_number_multi_devices: false"))
DND = users(user("100"), user("101", 'do_not_disturb: true, '
                                     'forward_busy: {enabled: true, number: "102"}'),
            user("102", "do_not_disturb: true, voicemail: true"), user("103"))
OUT = users(user("100"), user("101", 'forward_no_answer: {enabled: true, number: "92002"}'))
COMBO = users(
    user("100"),
    user("101", 'follow_me: {strategy: 1, destinations: {a: "102"}}, voicemail: true, '
                'forward_busy: {enabled: true, number: "103"}'),
    user("102"), user("103"),
    user("104", 'forward_no_answer: {enabled: true, number: "700"}, ringing_group_id: 2, '
                'do_not_disturb: false'),
    user("105", 'ringing_group_id: 2, forward_busy: {enabled: true, number: "101"}'),
    user("106", 'forward_unconditional: {enabled: true, number: "600"}'),
    user("107", 'do_not_disturb: true, follow_me: {destinations: {a: "102"}}'),
)
OPERATOR = users(user("100"), user("101", 'forward_busy: {enabled: true, number: "104"}'),
                 user("102", "operator_overstep: true"), user("103", "operator_break_in: true"),
                 user("104"))
COMBO_SERVICES = ('ring_groups:\n  2: {number: "600"}\n' + HUNT_SERVICES)
LINES = 'lines:\n  provider: {account: "2001", server: 127.0.0.1, no_answer_time: 40}\n'
APPS = {"users.yaml": users(user("100"), user("101", "voicemail: true"), user("102"),
                            user("800", 'auto_attendant: true, voicemail: true, '
                                        'forward_unconditional: {enabled: true, number: "102"}'
                                 )),
        "dialplan.yaml": 'analyze_called:\n'
                         '  "555": {route: service, target: voicemail}\n'
                         '  "556": {route: service, target: "voicemail:101"}\n'
                         '  "557": {route: service, target: "voicemail:102"}\n'
                         '  "558": {route: service, target: auto_attendant}\n'}

CASES: list[tuple[str, dict[str, str], set[str], set[str], str, str, list[Outcome],
                  list[str]]] = [
    ("a user rings alone", {"users.yaml": BASIC}, ALL, set(), "100", "101", [N],
     ["101: user:101", "end 480 no answer"]),
    ("offline: unreachable", {"users.yaml": BASIC}, {"100"}, set(), "100", "101", [],
     ["end 480 unavailable"]),
    ("at its call limit: busy", {"users.yaml": BASIC}, ALL, {"101"}, "100", "101", [],
     ["end 486 busy"]),
    ("a refused target's failure is relayed", {"users.yaml": BASIC}, ALL, set(), "100",
     "101", [F], ["101: user:101", "end 0 failed"]),
    # forwarding
    ("busy forwarding", {"users.yaml": FWD}, ALL, set(), "100", "101", [B, N],
     ["101: user:101", "[forward_busy 101] 102: user:102", "end 480 no answer"]),
    ("busy forwarding back to a user in the chain is not taken", {"users.yaml": FWD},
     ALL, set(), "100", "101", [B, B], ["101: user:101", "[forward_busy 101] 102: user:102",
                                        "end 486 busy"]),
    ("no-answer forwarding follows an unconditional one, then voicemail",
     {"users.yaml": FWD}, ALL, set(), "100", "101", [N, N, N],
     ["101: user:101", "[forward_no_answer 101] [forward_unconditional 103] 104: user:104",
      "[forward_no_answer 101] [forward_unconditional 103] voicemail 104: "
      "app:voicemail(104)", "end 480 no answer"]),
    ("unreachable forwarding when offline", {"users.yaml": FWD}, ALL - {"101"}, set(),
     "100", "101", [N], ["[forward_unreachable 101] 104: user:104",
                         "[forward_unreachable 101] voicemail 104: app:voicemail(104)"]),
    ("unreachable forwarding when every device failed", {"users.yaml": FWD}, ALL, set(),
     "100", "101", [U], ["101: user:101", "[forward_unreachable 101] 104: user:104"]),
    ("busy before ringing takes busy forwarding", {"users.yaml": FWD}, ALL, {"101"},
     "100", "101", [N], ["[forward_busy 101] 102: user:102", "end 480 no answer"]),
    ("unconditional loop: the last user of the chain rings", {"users.yaml": LOOP}, ALL,
     set(), "100", "101", [N], ["[forward_unconditional 101] 102: user:102",
                                "end 480 no answer"]),
    ("a chain stops after 5 hops", {"users.yaml": LONG}, ALL | {"105", "106", "107", "108"},
     set(), "100", "101", [], ["[forward_unconditional 101] [forward_unconditional 102] "
                    "[forward_unconditional 103] [forward_unconditional 104] "
                    "[forward_unconditional 105] 106: user:106"]),
    ("a forwarding needs its right", {"users.yaml": NO_RIGHT}, ALL, set(), "100", "101",
     [B], ["101: user:101", "end 486 busy"]),
    ("forwarding to an outside number leaves on a line", {"users.yaml": OUT,
                                                          "lines.yaml": LINES},
     ALL, set(), "100", "101", [N, N],
     ["101: user:101", "[forward_no_answer 101] outgoing_group: number:2002", "end 480 no answer"]),
    # follow-me
    ("follow-me 0: all at once", {"users.yaml": FOLLOW[0]}, ALL, set(), "100", "101", [N],
     ["101: user:101, user:102, user:103", "voicemail 101: app:voicemail(101)"]),
    ("follow-me 1: in turn", {"users.yaml": FOLLOW[1]}, ALL, set(), "100", "101",
     [N, B, N], ["101: user:101", "follow_me 101 a: user:102", "follow_me 101 b: user:103",
                 "voicemail 101: app:voicemail(101)"]),
    ("follow-me 2: one more every interval", {"users.yaml": FOLLOW[2]}, ALL, set(), "100",
     "101", [N], ["101: user:101, user:102+5s, user:103+10s",
                  "voicemail 101: app:voicemail(101)"]),
    ("follow-me rings the destinations when the user is offline",
     {"users.yaml": FOLLOW[0]}, ALL - {"101"}, set(), "100", "101", [N],
     ["101: user:102, user:103", "voicemail 101: app:voicemail(101)"]),
    # ring groups
    ("a direct call rings the whole group", {"users.yaml": RING}, ALL, {"103"}, "100",
     "101", [N], ["101: user:101, user:102, user:104", "end 480 no answer"]),
    ("calls between members ring only the member", {"users.yaml": RING}, ALL, set(), "102",
     "101", [], ["101: user:101"]),
    ("suppress_ring_group: a direct call rings only that user", {"users.yaml": RING}, ALL,
     set(), "100", "104", [], ["104: user:104"]),
    ("the pilot number rings every member", {"users.yaml": RING,
                                             "services.yaml": RING_SERVICES},
     ALL, set(), "100", "600", [N],
     ["ring_group 1: user:101, user:102, user:103, user:104", "end 480 no answer"]),
    ("a pilot with every member busy", {"users.yaml": RING,
                                        "services.yaml": RING_SERVICES},
     {"100"}, {"101"}, "100", "600", [], ["end 486 busy"]),
    # hunt groups
    ("linear hunting skips busy members", {"users.yaml": BASIC,
                                           "services.yaml": HUNT_SERVICES},
     ALL, {"102"}, "100", "700", [N, N],
     ["hunt_group sales 101: user:101", "hunt_group sales 103: user:103", "end 486 busy"]),
    ("linear hunting without answer", {"users.yaml": BASIC, "services.yaml": HUNT_SERVICES},
     ALL - {"103"}, set(), "100", "700", [N, B],
     ["hunt_group sales 101: user:101", "hunt_group sales 102: user:102", "end 486 busy"]),
    ("linear hunting, nobody answers", {"users.yaml": BASIC,
                                        "services.yaml": HUNT_SERVICES},
     ALL, set(), "100", "700", [N, N, N],
     ["hunt_group sales 101: user:101", "hunt_group sales 102: user:102",
      "hunt_group sales 103: user:103", "end 480 no answer"]),
    # one number, multi devices
    ("only the latest device rings", {"users.yaml": MULTI}, ALL, set(), "100", "101", [],
     ["101: user:101(latest)"]),
    # do not disturb
    ("DND takes busy forwarding", {"users.yaml": DND}, ALL, set(), "100", "101", [],
     ["[forward_busy 101] voicemail 102: app:voicemail(102)"]),
    ("DND without forwarding: busy", {"users.yaml": DND}, ALL, set(), "103", "102", [],
     ["voicemail 102: app:voicemail(102)"]),
    # combinations
    ("follow-me 1, then busy forwarding: the user's busy step goes to follow-me first",
     {"users.yaml": COMBO, "services.yaml": COMBO_SERVICES}, ALL | {"105", "106", "107"},
     set(), "100", "101", [B, B, N],
     ["101: user:101", "follow_me 101 a: user:102", "[forward_busy 101] 103: user:103",
      "end 480 no answer"]),
    ("follow-me 1, then voicemail when nobody answered",
     {"users.yaml": COMBO, "services.yaml": COMBO_SERVICES}, ALL | {"105", "106", "107"},
     set(), "100", "101", [N, N], ["101: user:101", "follow_me 101 a: user:102",
                                   "voicemail 101: app:voicemail(101)"]),
    ("a ring group member's no-answer forwarding goes to a hunt group",
     {"users.yaml": COMBO, "services.yaml": COMBO_SERVICES}, ALL | {"105", "106", "107"},
     set(), "100", "104", [N, N],
     ["104: user:104, user:105", "[forward_no_answer 104] hunt_group sales 101: user:101",
      "[forward_no_answer 104] hunt_group sales 102: user:102"]),
    ("hunting rings members' devices, not their forwardings",
     {"users.yaml": COMBO, "services.yaml": COMBO_SERVICES}, ALL | {"105", "106", "107"},
     set(), "100", "700", [B], ["hunt_group sales 101: user:101",
                                "hunt_group sales 102: user:102"]),
    ("unconditional forwarding to a ring group pilot",
     {"users.yaml": COMBO, "services.yaml": COMBO_SERVICES}, ALL | {"105", "106", "107"},
     set(), "100", "106", [N], ["[forward_unconditional 106] ring_group 2: user:104, user:105",
                                "end 480 no answer"]),
    ("DND rings no follow-me destination", {"users.yaml": COMBO,
                                            "services.yaml": COMBO_SERVICES},
     ALL | {"105", "106", "107"}, set(), "100", "107", [], ["end 486 busy"]),
    # feature codes
    ("a forwarding code", {"users.yaml": FWD}, ALL, set(), "101", "*90*200#", [],
     ["feature forward_busy: app:feature_code(forward_busy=200)"]),
    ("a clearing code", {"users.yaml": FWD}, ALL, set(), "101", "*90#", [],
     ["feature forward_busy: app:feature_code(forward_busy=)"]),
    ("DND on", {"users.yaml": BASIC}, ALL, set(), "101", "*78", [],
     ["feature do_not_disturb_on: app:feature_code(do_not_disturb_on=)"]),
    ("a code without the right", {"users.yaml": BASIC}, ALL, set(), "101", "*90*200#", [],
     ["end 403 rejected"]),
    # apps: voicemail and the attendant
    ("a user who is an attendant is answered by it: nothing rings, nothing forwards", APPS,
     ALL | {"800"}, set(), "100", "800", [], ["auto_attendant 800: app:auto_attendant(800)"]),
    ("the attendant's route", APPS, ALL, set(), "100", "558", [],
     ["auto_attendant: app:auto_attendant"]),
    ("the voicemail route: the caller's own messages", APPS, ALL, set(), "101", "555", [],
     ["voicemail: app:voicemail"]),
    ("the voicemail code: the same", APPS, ALL, set(), "101", "*97", [],
     ["voicemail: app:voicemail"]),
    ("the voicemail code needs the voicemail right", APPS, ALL, set(), "102", "*97", [],
     ["end 403 rejected"]),
    ("an outside caller has no mailbox to listen to", APPS, ALL, set(), "0301234", "555", [],
     ["end 403 forbidden"]),
    ("voicemail:USER leaves USER a message at once", APPS, ALL, set(), "100", "556", [],
     ["voicemail 101: app:voicemail(101)"]),
    ("voicemail:USER without the voicemail right", APPS, ALL, set(), "100", "557", [],
     ["end 404 not found"]),
    # moving calls: park, retrieve, pick-up, join, break-in
    ("*70*nn parks in slot nn", {"users.yaml": BASIC}, ALL, set(), "101", "*70*5", [],
     ["park 5: app:park(5)"]),
    ("*70 parks in a slot minisip picks", {"users.yaml": BASIC}, ALL, set(), "101", "*70",
     [], ["park: app:park"]),
    ("*71*nn retrieves slot nn", {"users.yaml": BASIC}, ALL, set(), "101", "*71*5", [F],
     ["retrieve 5: call:retrieve(5)", "end 0 failed"]),
    ("*40*ext picks up ext's ringing call", {"users.yaml": BASIC}, ALL, set(), "101",
     "*40*102", [], ["pickup 102: call:pickup(102)"]),
    ("*50 picks up in the caller's group", {"users.yaml": BASIC}, ALL, set(), "101", "*50",
     [], ["group pickup: call:pickup"]),
    ("*74 joins the user's call", {"users.yaml": BASIC}, ALL, set(), "101", "*74", [],
     ["join: call:join"]),
    ("*74 needs one_number_multi_devices", {"users.yaml": MULTI}, ALL, set(), "101", "*74",
     [], ["end 403 rejected"]),
    ("*75*ext breaks in", {"users.yaml": OPERATOR}, ALL, set(), "103", "*75*101", [],
     ["break-in 101: call:break_in(101)"]),
    ("*75*ext into overstep protection", {"users.yaml": OPERATOR}, ALL, set(), "103",
     "*75*102", [], ["end 403 overstep"]),
    ("*75*ext without the right", {"users.yaml": OPERATOR}, ALL, set(), "100", "*75*101",
     [], ["end 403 rejected"]),
    ("an operator calling a busy user breaks in, else busy treatment",
     {"users.yaml": OPERATOR}, ALL, {"101"}, "103", "101", [F],
     ["break-in 101: call:break_in(101)", "[forward_busy 101] 104: user:104"]),
    ("an operator calling a busy user with overstep gets busy", {"users.yaml": OPERATOR},
     ALL, {"102"}, "103", "102", [], ["end 486 busy"]),
    ("anyone else calling a busy user gets busy treatment", {"users.yaml": OPERATOR},
     ALL, {"101"}, "100", "101", [], ["[forward_busy 101] 104: user:104"]),
]


@pytest.mark.parametrize("name, files, online, busy, caller, dialed, outcomes, expected",
                         CASES, ids=[c[0] for c in CASES])
def test_plan(snapshots: Any, name: str, files: dict[str, str], online: set[str],
              busy: set[str], caller: str, dialed: str, outcomes: list[Outcome],
              expected: list[str]) -> None:
    snap = snapshots(files)
    ctx = Ctx(snap, FakeLive(online, busy), caller)
    plan = plan_route(ctx, route_call(snap, caller, dialed))
    assert walk(plan, outcomes) == expected


def test_circular_hunting_starts_after_the_member_tried_last(snapshots: Any) -> None:
    snap = snapshots({"users.yaml": BASIC, "services.yaml": HUNT_SERVICES})
    live = FakeLive(ALL, set())
    firsts = []
    for _ in range(4):
        plan = plan_route(Ctx(snap, live, "100"), route_call(snap, "100", "701"))
        assert isinstance(plan, Step)
        firsts.append(plan.targets[0].name)
    assert firsts == ["101", "102", "103", "101"]


def test_a_hunt_step_rings_for_the_groups_ring_time(snapshots: Any) -> None:
    snap = snapshots({"users.yaml": BASIC, "services.yaml": HUNT_SERVICES})
    plan = plan_route(Ctx(snap, FakeLive(ALL, set()), "100"), route_call(snap, "100", "700"))
    assert isinstance(plan, Step) and plan.timeout == 7


@pytest.mark.parametrize("strategy, timeout", [(0, 20), (1, 20), (2, 30)])
def test_follow_me_step_lasts_until_the_last_destination_had_its_time(
        snapshots: Any, strategy: int, timeout: float) -> None:
    snap = snapshots({"users.yaml": FOLLOW[strategy]})
    plan = plan_route(Ctx(snap, FakeLive(ALL, set()), "100"), route_call(snap, "100", "101"))
    assert isinstance(plan, Step) and plan.timeout == timeout


def test_an_outside_step_uses_the_routes_candidates(snapshots: Any) -> None:
    snap = snapshots({"users.yaml": OUT, "lines.yaml": LINES})
    plan = plan_route(Ctx(snap, FakeLive(ALL, set()), "100"), route_call(snap, "100", "92002"))
    assert isinstance(plan, Step)
    (target,) = plan.targets
    assert target.route is not None and target.route.candidates == ("provider",)


LIST = """
black_white_list:
  - {caller_prefix: "0123", called_prefix: "*", rate: 100}
  - {caller_prefix: "01234", called_prefix: "*", rate: 0}
  - {caller_prefix: "*", called_prefix: "900", rate: 100}
  - {caller_prefix: "*", called_prefix: "9001", rate: 50}
  - {caller_prefix: "555", called_prefix: "101", rate: 100}
"""


@pytest.mark.parametrize("caller, called, draw, refused", [
    ("0123999", "101", 99.9, True),  # black list by caller
    ("0123456", "101", 0.0, False),  # the longer caller prefix is a white list entry
    ("777", "900555", 99.9, True),  # black list by called number
    ("777", "900155", 49.9, True),  # the longer called prefix refuses half
    ("777", "900155", 50.0, False),
    ("555", "101", 99.9, True),  # caller prefix first, then the called one
    ("555", "102", 0.0, False),
    ("777", "101", 0.0, False),  # no rule
])
def test_black_white_list(snapshots: Any, caller: str, called: str, draw: float,
                          refused: bool) -> None:
    snap = snapshots({"services.yaml": LIST})
    assert (screen(snap, caller, called, lambda: draw) == REFUSED) is refused


@pytest.mark.parametrize("status, outcome", [
    (486, B), (600, B), (603, B), (480, U), (404, U), (408, U), (503, U), (403, F), (488, F)])
def test_outcome_of_a_status(status: int, outcome: Outcome) -> None:
    assert outcome_of(status) is outcome


@pytest.mark.parametrize("outcomes, step", [
    ([U, U], U), ([U, B], B), ([U, F], F), ([N, B], N), ([], U), ([F], F)])
def test_a_step_ends_as_its_targets_did(outcomes: list[Outcome], step: Outcome) -> None:
    assert combine(outcomes) is step


@pytest.mark.parametrize("code, arg, fields", [
    ("forward_busy", "200", {"forward_busy.number": "200"}),
    ("forward_unconditional", "", {"forward_unconditional.number": ""}),
    ("do_not_disturb_on", "", {"do_not_disturb": True}),
    ("do_not_disturb_off", "", {"do_not_disturb": False}),
])
def test_feature_code_changes(code: str, arg: str, fields: dict[str, Any]) -> None:
    assert change(code, arg) == fields


def test_end_is_a_value() -> None:
    assert End(486, "Busy Here", "busy") == End(486, "Busy Here", "busy")


def test_a_ring_group_pilot_rings_for_the_groups_no_answer_time(snapshots: Any) -> None:
    snap = snapshots({"users.yaml": RING, "services.yaml": RING_SERVICES})
    plan = plan_route(Ctx(snap, FakeLive(ALL, set()), "100"), route_call(snap, "100", "600"))
    assert isinstance(plan, Step) and plan.timeout == 12


@pytest.mark.parametrize("limit, active, talking, waiting, busy", [
    (4, 0, 0, False, False),  # idle
    (4, 1, 0, False, False),  # ringing: a second call rings too
    (4, 1, 1, False, True),  # talking without call waiting: busy
    (4, 1, 1, True, False),  # talking with call waiting: the second call is offered
    (2, 2, 1, True, True),  # max_concurrent_calls stays the hard limit
    (0, 0, 0, True, True),  # no calls at all
])
def test_busy_with_and_without_call_waiting(snapshots: Any, limit: int, active: int,
                                            talking: int, waiting: bool, busy: bool) -> None:
    snap = snapshots({"users.yaml": users(user("100", f"max_concurrent_calls: {limit}, "
                                                      f"call_waiting: {str(waiting).lower()}"))})
    assert local_user.busy(snap.users["100"], active, talking) is busy
