"""The Plan: who rings, together or in turn, for how long, and what comes next.

Theory of operation
-------------------
Every service of the manual is an answer to "who rings next, and when". The dial
plan says what a number means (a :class:`~minisip.pbx.dialplan.Route`); the
services turn that into a Plan; the call (the B2BUA) executes it.

A Plan is a chain of :class:`Step` s built lazily. A step rings its
:class:`Target` s together (a target may start ``delay`` seconds after the step,
for follow-me strategy 2) for at most ``timeout`` seconds. When nobody answered,
the executor tells the step how it ended (an :class:`Outcome`) and the step's
``next`` function, written by the service that made the step, returns the next
step or an :class:`End` (the final answer to the caller). Steps are made only
when they are about to run, so a forwarding chain or a hunt group sees the live
state (who is online, who is busy) of the moment its step starts, and a plan
costs nothing for the branches a call never takes.

The functions that make steps are pure: they read the config snapshot and a
:class:`Live` view of the PBX's state, and return data. Tests walk a plan with a
list of outcomes (:func:`walk`) and compare the steps it passes with a table.
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ...config.schema import Snapshot, User
from ..dialplan import Route


class Outcome(enum.Enum):
    """How a step ended when nobody answered."""
    BUSY = "busy"  #: a target said busy (486/600), or was busy before it rang
    NO_ANSWER = "no answer"  #: the step's timeout passed while targets rang
    UNREACHABLE = "unreachable"  #: nothing could ring: offline, every device failed
    FAILED = "failed"  #: refused for another reason (403, 404, 603, 5xx...)


class Kind(enum.Enum):
    USER = "user"  #: every device of a local user (its own services already applied)
    NUMBER = "number"  #: an outside number, through the lines of ``route``
    APP = "app"  #: minisip itself answers: voicemail, attendant, feature codes...
    #: the caller joins a live call (``name``: pickup, retrieve, join, break_in...)
    CALL = "call"


@dataclass(frozen=True, slots=True)
class Target:
    kind: Kind
    name: str  #: user name, outside number, or app name
    delay: float = 0.0  #: seconds after the step starts (follow-me strategy 2)
    route: Route | None = None  #: NUMBER: the dial plan's exit route
    argument: str = ""  #: APP: its parameter (whose mailbox, which code, ...)
    #: USER: ring only the most recently registered device (one_number_multi_devices off)
    latest_only: bool = False

    def __str__(self) -> str:
        text = f"{self.kind.value}:{self.name}"
        if self.latest_only:
            text += "(latest)"
        if self.argument:
            text += f"({self.argument})"
        return text + (f"+{self.delay:g}s" if self.delay else "")


@dataclass(frozen=True, slots=True)
class End:
    """The plan's last word: the final response to the caller."""
    status: int
    reason: str
    cause: str  #: for the CDR: "busy", "no answer", "unavailable", "loop", ...

    def __str__(self) -> str:
        return f"end {self.status} {self.cause}"


Next = Callable[[Outcome], "Step | End"]


@dataclass(frozen=True, slots=True)
class Step:
    targets: tuple[Target, ...]
    timeout: float  #: seconds before NO_ANSWER; 0 = no limit (apps, outside lines' own)
    label: str  #: what the step is, for `minisip calls` and the CDR ("forward_busy 200")
    next: Next = field(compare=False)
    #: the forwardings that led here, e.g. ("forward_busy 101",): the CDR's "forwarded from"
    via: tuple[str, ...] = ()

    def __str__(self) -> str:
        head = "".join(f"[{v}] " for v in self.via)
        return f"{head}{self.label}: " + ", ".join(map(str, self.targets))


Plan = Step | End


class Live(Protocol):
    """What the services may ask the running PBX (tests use a table)."""
    def online(self, user: str) -> bool: ...
    def busy(self, user: str) -> bool: ...
    #: where a circular hunt group starts: after the member tried last time
    def hunt_start(self, group: str) -> int: ...
    def hunt_tried(self, group: str, index: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Ctx:
    """The call being planned: read by every service."""
    snap: Snapshot
    live: Live
    caller: str  #: a user name, or the outside caller's number
    #: users this call was forwarded through, in order (the loop guard)
    chain: tuple[str, ...] = ()
    via: tuple[str, ...] = ()  #: the same with the kind of each forwarding, for Step.via

    @property
    def caller_user(self) -> User | None:
        return self.snap.users.get(self.caller)

    def step(self, targets: Iterable[Target], timeout: float, label: str,
             next_: Next) -> Step:
        return Step(tuple(targets), timeout, label, next_, self.via)


def end_with(end: End) -> Next:
    """A ``next`` that ends the plan whatever happened."""
    return lambda outcome: end


#: what the caller hears when a step ended this way and no service took over
#: (status 0: the best failure the step's targets answered is relayed as it is)
FINAL: dict[Outcome, End] = {
    Outcome.BUSY: End(486, "Busy Here", "busy"),
    Outcome.NO_ANSWER: End(480, "No Answer", "no answer"),
    Outcome.UNREACHABLE: End(480, "User is offline", "unavailable"),
    Outcome.FAILED: End(0, "", "failed"),
}


def finish(outcome: Outcome) -> End:
    return FINAL[outcome]


def outcome_of(status: int) -> Outcome:
    """The outcome a failed target's final status means."""
    if status in (486, 600, 603):  # 603: the user pressed reject, a PBX treats it as busy
        return Outcome.BUSY
    if status in (404, 408, 410, 480, 503, 504):
        return Outcome.UNREACHABLE
    return Outcome.FAILED


def combine(outcomes: Iterable[Outcome]) -> Outcome:
    """How a step ended from how each of its targets did: a busy target makes
    the step busy; only unreachable targets make it unreachable."""
    seen = set(outcomes)
    if Outcome.NO_ANSWER in seen:
        return Outcome.NO_ANSWER
    if Outcome.BUSY in seen:
        return Outcome.BUSY
    if seen == {Outcome.UNREACHABLE}:
        return Outcome.UNREACHABLE
    return Outcome.FAILED if seen else Outcome.UNREACHABLE


def walk(plan: Plan, outcomes: Iterable[Outcome], limit: int = 50) -> list[str]:
    """The steps a plan passes when its steps end with ``outcomes`` in turn, as text,
    ending with the End it reaches (or the last step when outcomes run out)."""
    out: list[str] = []
    it = iter(outcomes)
    for _ in range(limit):
        out.append(str(plan))
        if isinstance(plan, End):
            return out
        try:
            plan = plan.next(next(it))
        except StopIteration:
            return out
    raise RuntimeError("plan longer than limit: a loop?")
