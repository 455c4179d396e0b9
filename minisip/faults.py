"""Faults: exceptions caught at an entry point, so one message cannot stop the server.

A fault is an exception of any type (a bug, not bad input: bad input raises
``BadMessage`` and is answered where it is read) that escaped the handling of
one unit of work: a SIP message or a timer in the driver, one RTP packet in the
media loop, one control request. Each entry point has one boundary that hands
the exception to ``Faults.record`` and carries on with the next unit.

Every fault is counted, by kind, and the last one is kept for ``minisip
status``. It is logged with its traceback the first time its place in the code
(exception type, file, line) is seen; later faults from the same place are
logged in one line with their count, so a peer repeating a crash input cannot
flood the log with tracebacks.
"""
from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("minisip.faults")

#: where in the code a fault came from: (exception type, file, line)
_Site = tuple[str, str, int]
_MAX_SITES = 1000
_TEXT = 200


@dataclass(frozen=True, slots=True)
class Fault:
    time: float  #: wall clock
    kind: str  #: "sip", "timer", "media", "control"
    text: str  #: "ValueError: ... (where)", short

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time, "kind": self.kind, "text": self.text}


@dataclass
class Faults:
    count: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    last: Fault | None = None
    clock: Callable[[], float] = time.time
    _sites: dict[_Site, int] = field(default_factory=dict)

    def record(self, kind: str, exc: BaseException, where: str = "") -> Fault:
        """Count ``exc``, keep it as the last fault, log it (see the module docstring)."""
        self.count += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        text = f"{type(exc).__name__}: {exc}"
        if where:
            text += f" ({where})"
        fault = Fault(self.clock(), kind, text[:_TEXT])
        self.last = fault
        site = _site(exc)
        seen = self._sites.get(site, 0)
        if seen == 0 and len(self._sites) >= _MAX_SITES:
            self._sites.clear()
        self._sites[site] = seen + 1
        if seen == 0:
            log.error("fault in %s handling, the server carries on: %s", kind, fault.text,
                      exc_info=exc)
        else:
            log.warning("fault in %s handling again (%d times from %s:%d): %s", kind,
                        seen + 1, site[1], site[2], fault.text)
        return fault

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "by_kind": dict(self.by_kind),
                "last": self.last.as_dict() if self.last is not None else None}


def _site(exc: BaseException) -> _Site:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return (type(exc).__name__, "", 0)
    last = frames[-1]
    return (type(exc).__name__, last.filename, last.lineno or 0)
