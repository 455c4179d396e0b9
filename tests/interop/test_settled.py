"""What a UDP transaction still does once it settled into the layer (RFC 6026's Accepted,
a non-INVITE's Completed; ``transaction/layer.py``), with phones over a real socket."""
from __future__ import annotations

import json
import queue
import socket
import threading
from contextlib import ExitStack

import pytest

from minisip.sip.message import Response
from minisip.sip.parser import parse_message_untrusted
from tests.helpers import ServerProcess, eventually
from tests.interop.pyphone import PyPhone

pytestmark = pytest.mark.interop


def test_repeats_after_the_answer_get_what_the_settled_transactions_kept(
        server: ServerProcess) -> None:
    with ExitStack() as stack:
        a = stack.enter_context(PyPhone(server.port, "100", "100"))
        b = stack.enter_context(PyPhone(server.port, "101", "101"))
        other = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        other.bind(("127.0.0.1", 0))  # the caller behind a NAT that mapped it anew
        other.settimeout(1.0)
        assert a.register().status == 200 and b.register().status == 200
        sent: list[bytes] = []
        send = a._send
        a._send = lambda msg: (sent.append(msg.to_bytes()), send(msg))[1]  # type: ignore
        result: list[Response] = []
        t = threading.Thread(target=lambda: result.append(a.call("101")))
        t.start()
        invite = b.answer_incoming()
        t.join(10)
        assert result[0].status == 200

        # The callee repeats its 200 (as if the ACK were lost): the call ACKs it again,
        # through the settled INVITE client transaction (Accepted until Timer M).
        b._acked.clear()
        b.sip.sendto(b._answered[(invite.branch or "", "INVITE")], b.server)
        assert b._acked.wait(2.0)

        # A repeat of the answered INVITE (crossing the 200) is absorbed (Accepted until
        # Timer L): no answer, no second call.
        answered = [m for m in sent if m.startswith(b"INVITE ")][-1]
        other.sendto(answered, ("127.0.0.1", server.port))
        with pytest.raises(socket.timeout):
            other.recv(65535)
        with pytest.raises(queue.Empty):
            b._invites.get(timeout=0.2)
        calls = json.loads(server.cli("calls", "--json").stdout)
        assert [c["state"] for c in calls] == ["talking"]

        # A repeat of the BYE gets the same 200 (Completed until Timer J), where it came from.
        ok = a.bye()
        assert ok.status == 200
        bye = sent[-1]
        assert bye.startswith(b"BYE ")
        other.sendto(bye, ("127.0.0.1", server.port))
        again = parse_message_untrusted(other.recv(65535))
        assert isinstance(again, Response)
        assert again.top_via.params["rport"] == str(other.getsockname()[1])  # as it came

        def without_via(r: Response) -> list[bytes]:
            return [ln for ln in r.to_bytes().split(b"\r\n") if not ln.startswith(b"Via:")]
        assert without_via(again) == without_via(ok)
        assert eventually(lambda: json.loads(server.cli("calls", "--json").stdout) == [])
