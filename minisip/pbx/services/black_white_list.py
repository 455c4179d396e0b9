"""Black and white list (services.yaml ``black_white_list``).

The rule with the longest matching caller prefix wins ("*" matches every
number and is the shortest), then the longest called prefix among those. Its
``rate`` is the percentage of matching calls refused with 603: 100 is a black
list entry, 0 a white list entry (never refused, whatever shorter rules say).
"""
from __future__ import annotations

from collections.abc import Callable

from ...config.schema import ListRule, Snapshot
from .plan import End

REFUSED = End(603, "Declined", "black list")


def _length(prefix: str, number: str) -> int:
    """How well ``prefix`` matches: -1 not at all, 0 for "*"."""
    if prefix == "*":
        return 0
    return len(prefix) if number.startswith(prefix) else -1


def rule_for(snap: Snapshot, caller: str, called: str) -> ListRule | None:
    best: tuple[int, int] | None = None
    found = None
    for rule in snap.services.black_white_list:
        key = (_length(rule.caller_prefix, caller), _length(rule.called_prefix, called))
        if min(key) >= 0 and (best is None or key > best):
            best, found = key, rule
    return found


def screen(snap: Snapshot, caller: str, called: str,
           percent: Callable[[], float]) -> End | None:
    """REFUSED for a call the list refuses, else None. ``percent()`` draws 0 <= x < 100."""
    rule = rule_for(snap, caller, called)
    if rule is not None and percent() < rule.rate:
        return REFUSED
    return None
