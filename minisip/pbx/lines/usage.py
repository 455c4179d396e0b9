"""Live use of each line and trunk, and the limits that refuse a call (manual 4.3, 4.4).

``max_concurrent_calls`` counts calls in and out; a line's
``max_outgoing_calls`` counts outgoing calls only (0: the line takes no outgoing
call at all, the dial plan already leaves such a line out). A slot is taken when
a leg is sent or an incoming call admitted, and given back when the leg fails or
the call ends: the counters are exact, not sampled.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...config.schema import Line, Trunk
from .outgoing import Refusal


@dataclass
class Usage:
    calls: dict[str, int] = field(default_factory=dict)  #: exit -> calls in and out
    outgoing: dict[str, int] = field(default_factory=dict)  #: exit -> outgoing calls

    def refusal(self, name: str, exit_: Line | Trunk, *, outgoing: bool) -> Refusal | None:
        """Why ``name`` cannot take one more call now, or None when it can."""
        kind = "Line" if isinstance(exit_, Line) else "Trunk"
        n = self.calls.get(name, 0)
        if n >= exit_.max_concurrent_calls:
            return 486, f"{kind} {name} busy: {n} calls (max_concurrent_calls)"
        if outgoing and isinstance(exit_, Line):
            out = self.outgoing.get(name, 0)
            if out >= exit_.max_outgoing_calls:
                return 403, f"Line {name}: {out} outgoing calls (max_outgoing_calls)"
        return None

    def take(self, name: str, *, outgoing: bool) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if outgoing:
            self.outgoing[name] = self.outgoing.get(name, 0) + 1

    def give_back(self, name: str, *, outgoing: bool) -> None:
        for table, on in ((self.calls, True), (self.outgoing, outgoing)):
            if on:
                n = table.get(name, 0) - 1
                if n > 0:
                    table[name] = n
                else:
                    table.pop(name, None)
