"""An external line in process (tests/pbx/harness.py): the provider is a phone at the
line's server address; the line registers with it, 100 dials out through it, and the
provider's caller reaches 101 through it."""
from __future__ import annotations

from pathlib import Path

from minisip.sip.digest import DigestAuthenticator
from tests.pbx.harness import Harness

PROVIDER = "198.51.100.200"
LINES = f"""lines:
  prov:
    account: "2001"
    password: "s3cret"
    server: "{PROVIDER}"
    incoming:
      destination_number: "101"
"""


def test_a_line_registers_carries_a_call_out_and_one_in(tmp_path: Path) -> None:
    h = Harness(tmp_path, files={"lines.yaml": LINES})
    prov = h.phone("2001", host=PROVIDER, port=5060)
    alice, bob = h.phone("100"), h.phone("101")
    assert alice.register().status == 200 and bob.register().status == 200
    h.start_lines()
    auth = DigestAuthenticator("provider", secret=b"p" * 32)
    register = prov.requests("REGISTER")[-1]
    prov.answer(register, 401, headers=auth.challenge(h.clock.now))
    again = prov.requests("REGISTER")[-1]
    assert again.headers.get("Authorization") and again.from_addr.uri.user == "2001"
    prov.answer(again, 200, headers=[("Contact", f"{again.headers.get('Contact')};expires=300")])
    assert h.server.lines.states()[0]["state"] == "online"

    # out: 100 dials 9 + 555 1234; the provider's INVITE comes from the line's account
    call = alice.call("95551234")
    out = prov.incoming()
    assert out is not None and out.invite.from_addr.uri.user == "2001"
    out.ring()
    out.answer()
    assert call.final().status == 200  # type: ignore[union-attr]
    call.ack()
    call.bye()
    assert prov.requests("BYE")

    # in: the provider's caller 0301 calls the account; the line sends it to 101
    far = h.phone("0301", host=PROVIDER, port=5060)  # the provider, speaking for 0301
    inbound = far.call("2001", auth=False)
    leg = bob.incoming()
    assert leg is not None and leg.invite.from_addr.uri.user == "0301"
    leg.answer()
    assert inbound.final().status == 200  # type: ignore[union-attr]
    inbound.ack()
    leg.bye()
    h.settle()
    # nothing left of the calls; the line stays registered (its refresh is the one timer)
    assert h.leftovers() == {"pbx_timers": 1}, h.leftovers()
    assert h.server.lines.states()[0]["state"] == "online"
    rows = h.server.cdr.query()
    assert {(r["kind"], r["line_out"] or r["line_in"]) for r in rows} >= {("T", "prov"),
                                                                           ("O", "prov")}
    h.close()
