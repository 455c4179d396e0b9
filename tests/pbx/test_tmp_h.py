from tests.pbx.harness import Harness
def test_basic(tmp_path):
    h = Harness(tmp_path)
    alice, bob = h.phone("100"), h.phone("101")
    assert alice.register().status == 200
    assert bob.register().status == 200
    call = alice.call("101")
    leg = bob.incoming()
    assert leg is not None
    leg.ring(); leg.answer()
    assert call.final().status == 200, [r.status for r in call.responses()]
    call.ack()
    assert h.calls.calls
    call.bye()
    assert [r.status for r in call.responses("BYE")] == [200]
    h.settle()
    assert h.leftovers() == {}, h.leftovers()
    h.close()
