"""``minisip trace``: print SIP messages as the server sends and receives them."""
from __future__ import annotations

import json
import sys
import time
from typing import Any

from .common import Target, fail


def trace_line(frame: dict[str, Any]) -> str:
    """``12:00:01.234 <-- udp [::1]:5060``: when, which way, and the peer."""
    data = frame.get("data", {})
    ts = frame.get("ts") or 0.0
    when = time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"
    arrow = "<--" if data.get("direction") == "in" else "-->"
    host = str(data.get("host"))
    host = f"[{host}]" if ":" in host else host
    return f"{when} {arrow} {data.get('transport')} {host}:{data.get('port')}"


def run_trace(target: Target, user: str | None, call_id: str | None, count: int,
              as_json: bool) -> None:
    import trio

    from ..control.client import ControlError, ServerNotRunning, subscribe

    flt = {k: v for k, v in (("user", user), ("call_id", call_id)) if v}

    async def main() -> None:
        seen = 0
        async with subscribe(target.control_path, ["sip"], flt or None) as events:
            async for frame in events:
                data = frame.get("data", {})
                if frame.get("event") == "dropped":
                    sys.stdout.write(f"... {data.get('count')} messages dropped\n")
                    continue
                if as_json:
                    sys.stdout.write(json.dumps(frame) + "\n")
                else:
                    sys.stdout.write(trace_line(frame) + "\n" + data.get("text", "") + "\n")
                sys.stdout.flush()
                seen += 1
                if count and seen >= count:
                    return

    try:
        trio.run(main)
    except ServerNotRunning as exc:
        fail(str(exc))
    except ControlError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
