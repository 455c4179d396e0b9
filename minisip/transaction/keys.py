"""Transaction keys: how messages find their transaction (RFC 3261 17.1.3, 17.2.3).

Client side, a response matches the client transaction whose request had the
same top-Via ``branch`` and whose method equals the response's CSeq method. The
method is there because a CANCEL reuses the branch of the INVITE it cancels
(RFC 3261 9.1) yet is a transaction of its own: the TU sends CANCEL with
``send_request`` like any request, copying the INVITE's top Via, and gets
``ClientKey(branch, "CANCEL")`` next to the INVITE's ``ClientKey(branch, "INVITE")``.

Server side, a request carrying the RFC 3261 magic cookie ``z9hG4bK`` matches by
top-Via branch, top-Via sent-by (host and port, as written) and method, where an
ACK matches the INVITE. A CANCEL thus finds no transaction of its own and opens
a new one; ``key._replace(method="INVITE")`` names the INVITE it cancels.
Requests from RFC 2543 peers (no cookie) get a stand-in branch built from
Call-ID, From tag and CSeq number, with the same sent-by and method rule: enough
for retransmissions and the ACK of a non-2xx, without RFC 2543's full
Request-URI/To-tag comparison.

Responses the TU sends carry the request's Via, Call-ID, From and CSeq, so the
same function that keyed the request finds its server transaction again.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

MAGIC_COOKIE = "z9hG4bK"


class ClientKey(NamedTuple):
    branch: str
    method: str


class ServerKey(NamedTuple):
    branch: str  #: top-Via branch, or the RFC 2543 stand-in
    host: str  #: top-Via sent-by host
    port: int | None  #: top-Via sent-by port (None when absent)
    method: str  #: the request method, INVITE for an ACK


TransactionKey = ClientKey | ServerKey

_tuple_new = tuple.__new__


class _Via(Protocol):
    host: str
    port: int | None


class _Keyed(Protocol):
    @property
    def branch(self) -> str | None: ...
    @property
    def top_via(self) -> _Via: ...
    @property
    def call_id(self) -> str: ...
    @property
    def from_tag(self) -> str | None: ...
    @property
    def cseq(self) -> tuple[int, str]: ...


def server_key(msg: _Keyed, method: str) -> ServerKey:
    """The server transaction key of a request, or of a response the TU sends."""
    branch = msg.branch
    via = msg.top_via
    if branch is None or not branch.startswith(MAGIC_COOKIE):
        branch = f"2543/{msg.call_id}/{msg.from_tag}/{msg.cseq[0]}/{branch}"
    return _tuple_new(ServerKey, (branch, via.host, via.port, method))  # no Python __new__
