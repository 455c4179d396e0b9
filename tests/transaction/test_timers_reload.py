"""New SIP timers (a reload) apply to new transactions; running ones keep theirs."""
from __future__ import annotations

from minisip.transaction.layer import TransactionLayer
from minisip.transaction.timers import Timers

from tests.transaction.helpers import UDP, request


def test_a_transaction_keeps_the_timers_it_began_with() -> None:
    layer = TransactionLayer(Timers(t1=0.5, t2=4.0, t4=5.0))
    layer.send_request(request("OPTIONS", branch="z9hG4bK-old"), UDP, 0.0)
    layer.timers = Timers(t1=0.1, t2=0.4, t4=1.0)
    layer.send_request(request("OPTIONS", branch="z9hG4bK-new", call_id="c2"), UDP, 0.0)
    layer.data_to_send()
    assert layer.get_timer() == 0.1  # Timer E of the new transaction: the new T1
    layer.handle_timer(0.1)
    assert len(layer.data_to_send()) == 1  # only the new one retransmitted
    deadlines = []
    now = 0.1
    while (t := layer.get_timer()) is not None and t <= 0.5:
        deadlines.append(t)
        now = t
        layer.handle_timer(now)
    assert 0.5 in deadlines  # the old one's first retransmission: still T1 = 0.5
