"""``minisip trace``: print SIP messages as the server sends and receives them."""
from __future__ import annotations

import json
import sys

from .common import Target, fail


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
                    arrow = "<--" if data.get("direction") == "in" else "-->"
                    sys.stdout.write(f"{arrow} {data.get('transport')} {data.get('host')}:"
                                     f"{data.get('port')}\n{data.get('text', '')}\n")
                sys.stdout.flush()
                seen += 1
                if count and seen >= count:
                    return

    try:
        trio.run(main)
    except ServerNotRunning:
        fail(f"no minisip server is running (no control socket at {target.control_path})")
    except ControlError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
