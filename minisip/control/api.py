"""The control socket's wire protocol: JSON objects in websocket text frames.

Theory of operation
-------------------
One JSON object per websocket message, in both directions.

Client -> server, a request::

    {"id": 1, "op": "status", "args": {...}}

``id`` is an int or a string chosen by the client (or null); it is echoed in the
reply. ``args`` is optional and must be an object. ``op`` names a handler the
server was started with, or one of the built-ins ``ping``, ``subscribe`` and
``unsubscribe``.

Server -> client, a reply (one per request, in request order)::

    {"id": 1, "ok": true, "result": ...}
    {"id": 1, "ok": false, "error": "one clear line"}

A listing (registrations, calls, CDRs, user states) is a reply in several
frames, so that no frame outgrows ``MAX_FRAME`` however many rows there are::

    {"id": 1, "ok": true, "rows": [{...}, ...], "more": true}
    {"id": 1, "ok": true, "rows": [...], "more": false}

The rows are taken in one piece when the request arrives (a consistent view)
and sent in pages of about ``PAGE_CHARS``; the client joins them. An error
frame may end a listing early.

A frame that cannot be read as a request still gets an error reply, with the id
echoed when one could be read and null otherwise. Nothing a client sends closes
the server; the connection stays usable.

Server -> client, an event, after a ``subscribe``::

    {"id": 2, "op": "subscribe",
     "args": {"topics": ["registrations", "calls"], "filter": {"user": "100"}}}
    ...
    {"event": "registration", "topic": "registrations", "data": {...}, "ts": 1700000000.1}
    {"event": "dropped", "topic": null, "data": {"count": 12}, "ts": ...}

A frame is a reply when it has ``"ok"`` and an event when it has ``"event"``.
``dropped`` says that ``count`` events were lost because this client read too
slowly; it comes at the place in the stream where the gap is.

Every function here that reads text from the wire ends in ``_untrusted`` and may
raise only ``BadMessage`` (house rule 4). This module imports neither trio nor
trio-websocket, so that the CLI can import it cheaply.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from minisip.sip.errors import BadMessage

__all__ = [
    "BUILTIN_OPS",
    "FILTER_KEYS",
    "TOPICS",
    "BadRequest",
    "ControlError",
    "Request",
    "Rows",
    "Subscription",
    "encode_error",
    "encode_event",
    "encode_request",
    "encode_result",
    "encode_rows",
    "parse_frame_untrusted",
    "parse_request_untrusted",
    "parse_subscribe_args_untrusted",
    "require_arg",
]

#: Topics a client may subscribe to. The server publishes on these names.
TOPICS: Final = frozenset({"users", "registrations", "calls", "reloads", "sip", "lines",
                          "presence"})
#: Keys of a subscription filter; an event passes when its data names the value.
FILTER_KEYS: Final = frozenset({"user", "call_id", "line"})
BUILTIN_OPS: Final = frozenset({"ping", "subscribe", "unsubscribe"})

#: Longest frame the server reads (the websocket layer closes on larger ones).
MAX_FRAME: Final = 256 * 1024
#: A listing's rows go out in frames of about this many characters.
PAGE_CHARS: Final = 64 * 1024
_MAX_OP: Final = 64
_MAX_ID: Final = 128
_MAX_ERROR: Final = 300

RequestId = int | str | None


class ControlError(Exception):
    """An operation failed; the message is one line meant for a person.

    Handlers raise it for expected failures ("no such user 999"): the server
    sends the message verbatim and logs no traceback. The client raises it when
    the server answers ``ok: false``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(BadMessage):
    """A request frame we cannot act on; carries the id when one was readable."""

    def __init__(self, reason: str, request_id: RequestId = None) -> None:
        super().__init__(reason, status=400)
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Request:
    id: RequestId
    op: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rows:
    """A handler's listing: sent as a series of frames (see the module doc)."""
    rows: list[Any]


@dataclass(frozen=True, slots=True)
class Subscription:
    topics: frozenset[str]
    #: Only ``FILTER_KEYS``; empty means every event of the topics.
    filter: dict[str, str]


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity, which no other JSON reader does.
    raise ValueError(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _loads_untrusted(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise BadMessage("frame is not UTF-8") from None
    if len(text) > MAX_FRAME:
        raise BadMessage(f"frame longer than {MAX_FRAME} characters")
    try:
        return _DECODER.decode(text)
    except RecursionError:
        # "[[[[..." nested deeper than the interpreter's stack.
        raise BadMessage("JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and ints over 4300 digits
        raise BadMessage(f"not JSON: {_one_line(str(exc))}") from None


def _id_untrusted(obj: dict[str, Any]) -> RequestId:
    rid = obj.get("id")
    if rid is None:
        return None
    if isinstance(rid, bool) or not isinstance(rid, int | str):
        raise BadRequest("'id' must be an integer, a string or null")
    if isinstance(rid, str) and len(rid) > _MAX_ID:
        raise BadRequest(f"'id' longer than {_MAX_ID} characters")
    if isinstance(rid, int) and not -(2**53) <= rid <= 2**53:
        raise BadRequest("'id' out of range")
    return rid


def parse_request_untrusted(text: str | bytes) -> Request:
    """Read one request frame. Raises only ``BadMessage`` (a ``BadRequest``
    carrying the id when the frame had a usable one)."""
    obj = _loads_untrusted(text)
    if not isinstance(obj, dict):
        raise BadRequest(f"request must be a JSON object, not {_json_type(obj)}")
    rid = _id_untrusted(obj)
    op = obj.get("op")
    if op is None:
        raise BadRequest("missing 'op'", rid)
    if not isinstance(op, str):
        raise BadRequest(f"'op' must be a string, not {_json_type(op)}", rid)
    if not op or len(op) > _MAX_OP:
        raise BadRequest(f"'op' must be 1 to {_MAX_OP} characters", rid)
    args = obj.get("args")
    if args is None:
        args = {}
    elif not isinstance(args, dict):
        raise BadRequest(f"'args' must be an object, not {_json_type(args)}", rid)
    return Request(rid, op, args)


def parse_subscribe_args_untrusted(args: dict[str, Any]) -> Subscription:
    """Validate the args of ``subscribe``. Raises only ``BadMessage``."""
    unknown = set(args) - {"topics", "filter"}
    if unknown:
        raise BadMessage(f"subscribe: unknown argument {sorted(unknown)[0]!r}")
    topics = args.get("topics")
    if not isinstance(topics, list) or not topics:
        raise BadMessage("subscribe: 'topics' must be a non-empty list of strings")
    for topic in topics:
        if not isinstance(topic, str):
            raise BadMessage("subscribe: 'topics' must be a non-empty list of strings")
        if topic not in TOPICS:
            known = ", ".join(sorted(TOPICS))
            raise BadMessage(f"subscribe: unknown topic {topic[:40]!r} (known: {known})")
    raw_filter = args.get("filter")
    if raw_filter is None:
        raw_filter = {}
    if not isinstance(raw_filter, dict):
        raise BadMessage("subscribe: 'filter' must be an object")
    flt: dict[str, str] = {}
    for key, value in raw_filter.items():
        if key not in FILTER_KEYS:
            known = ", ".join(sorted(FILTER_KEYS))
            raise BadMessage(f"subscribe: unknown filter key {key[:40]!r} (known: {known})")
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise BadMessage(f"subscribe: filter {key!r} must be a non-empty string")
        flt[key] = value
    return Subscription(frozenset(topics), flt)


def require_arg(args: dict[str, Any], name: str, kind: type, *, default: Any = ...) -> Any:
    """Fetch ``args[name]`` checked against ``kind``, for handlers.

    Raises ``BadMessage`` (which the server answers with its reason, as for a
    ``ControlError``) when missing or of the wrong type.
    """
    if name not in args or args[name] is None:
        if default is ...:
            raise BadMessage(f"missing argument {name!r}")
        return default
    value = args[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        wanted = _py_json_name(kind)
        raise BadMessage(f"argument {name!r} must be {wanted}, not {_json_type(value)}")
    return value


def parse_frame_untrusted(text: str | bytes) -> dict[str, Any]:
    """Read one server -> client frame (a reply or an event), for the client."""
    obj = _loads_untrusted(text)
    if not isinstance(obj, dict):
        raise BadMessage(f"frame must be a JSON object, not {_json_type(obj)}")
    if "ok" in obj:
        if not isinstance(obj["ok"], bool):
            raise BadMessage("reply 'ok' must be a boolean")
        if not obj["ok"] and not isinstance(obj.get("error"), str):
            raise BadMessage("error reply without an 'error' string")
        if "rows" in obj and (not isinstance(obj["rows"], list)
                              or not isinstance(obj.get("more"), bool)):
            raise BadMessage("listing frame needs a 'rows' list and a boolean 'more'")
    elif "event" in obj:
        if not isinstance(obj["event"], str):
            raise BadMessage("event name must be a string")
    else:
        raise BadMessage("frame is neither a reply nor an event")
    return obj


# --- encoding ---------------------------------------------------------------


def _default(value: Any) -> Any:
    # Handlers may return frozen dataclasses, enums, paths, sets: say them in JSON.
    import dataclasses
    import enum

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# One encoder and decoder, built once: json.dumps/loads with options build a new
# one per call, a measurable share of a 0.2 ms round trip.
_ENCODER: Final = json.JSONEncoder(default=_default, separators=(",", ":"), allow_nan=False)
_dumps: Final = _ENCODER.encode


def encode_request(rid: RequestId, op: str, args: dict[str, Any] | None = None) -> str:
    return _dumps({"id": rid, "op": op, "args": args or {}})


def encode_result(rid: RequestId, result: Any) -> str:
    """Raises ``TypeError``/``ValueError`` when ``result`` has no JSON form."""
    return _dumps({"id": rid, "ok": True, "result": result})


def encode_rows(rid: RequestId, rows: list[Any], page_chars: int = PAGE_CHARS) -> Iterator[str]:
    """The frames of a listing: pages of about ``page_chars``, the last with ``more``
    false (an empty listing is one empty page). Raises ``TypeError``/``ValueError`` for
    a row with no JSON form, or one too long for a frame."""
    head = f'{{"id":{_dumps(rid)},"ok":true,"more":'
    page: list[str] = []
    size = 0
    for row in rows:
        text = _dumps(row)
        if len(text) > MAX_FRAME - len(head) - 64:
            raise ValueError(f"a row of {len(text)} characters does not fit in a frame")
        if page and size + len(text) > page_chars:
            yield f'{head}true,"rows":[{",".join(page)}]}}'
            page, size = [], 0
        page.append(text)
        size += len(text) + 1
    yield f'{head}false,"rows":[{",".join(page)}]}}'


def encode_error(rid: RequestId, message: str) -> str:
    return _dumps({"id": rid, "ok": False, "error": _one_line(message)})


def encode_event(event: str, topic: str | None, data: dict[str, Any], ts: float) -> str:
    if not math.isfinite(ts):
        ts = 0.0
    return _dumps({"event": event, "topic": topic, "data": data, "ts": ts})


def _one_line(message: str) -> str:
    line = " ".join(message.split())
    if len(line) > _MAX_ERROR:
        line = line[: _MAX_ERROR - 3] + "..."
    return line or "error"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _py_json_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "a boolean", float: "a number",
            list: "a list", dict: "an object"}.get(kind, kind.__name__)
