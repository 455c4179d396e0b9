"""The automatic attendant end to end: scripted phones (pyphone) key numbers as
RFC 4733 events or SIP INFO; sipp plays a busy phone. What the caller hears is
compared with the prompts, frame for frame."""
from __future__ import annotations

import socket
import time
from array import array
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from minisip.media import g711
from minisip.media.player import load_audio
from minisip.media.prompts import prompt_path
from minisip.sip.sdp import parse_sdp_untrusted
from tests.helpers import ServerProcess, free_port, run_sipp, start_sipp
from tests.interop.apps import (
    app_server, heard, pcm, prompt_pcm, wait_heard, wait_playing, wait_quiet,
)
from tests.interop.baresip import dominant_frequency
from tests.interop.pyphone import PyPhone

pytestmark = pytest.mark.interop

ROUTE = '  "800": {route: service, target: auto_attendant}\n'
FAST = {"digit_timeout: 5": "digit_timeout: 1"}


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def start(stack: ExitStack, server: ServerProcess) -> ServerProcess:
    server.start()
    stack.callback(server.stop)
    return server


def phone(stack: ExitStack, server: ServerProcess, user: str, register: bool = False) -> PyPhone:
    p = stack.enter_context(PyPhone(server.port, user, user))
    stack.callback(server.stop)  # before the phone closes: it answers its shutdown's BYEs
    if register:
        assert p.register().status == 200, server.log()
    return p


def key(caller: PyPhone, digits: str, info: bool = False) -> None:
    for d in digits:
        if info:
            assert caller.send_info_digit(d).status == 200
        else:
            caller.send_rtp_events(d)


def test_a_caller_keying_101_is_connected_to_101(tmp_path: Path, stack: ExitStack) -> None:
    server = start(stack, app_server(tmp_path, {"100": "", "101": ""}, FAST, ROUTE))
    b = phone(stack, server, "101", register=True)
    a = phone(stack, server, "100")
    assert a.call("800").status == 200, server.log()
    wait_heard(a, prompt_pcm("en", "welcome")[:3200])  # the welcome begins
    key(a, "101#")  # keys interrupt the welcome
    b.answer_incoming()
    said = pcm(heard(a))
    welcome, connecting = prompt_pcm("en", "welcome"), prompt_pcm("en", "connecting")
    i = said.find(connecting)
    assert i >= 0 and welcome.startswith(said[:i]), "not part of the welcome, then 'connecting'"
    assert prompt_pcm("en", "ringback").startswith(said[i + len(connecting):]), \
        "after 'connecting' only the ring-back tone until 101 answered"
    time.sleep(0.2)
    a.send_audio(0.4, 500)
    b.send_audio(0.4, 700)
    time.sleep(0.2)
    assert len([r for r in b.rtp_log if r.packet.ssrc == a.ssrc]) >= 15
    assert len([r for r in a.rtp_log if r.packet.ssrc == b.ssrc]) >= 15
    assert b.dialog is not None and b.dialog.remote_uri.startswith("<sip:100@")
    assert a.bye().status == 200
    b.wait_requests("BYE", 1)


def test_the_number_rings_back_to_the_caller_and_is_offered_the_callers_codec(
        tmp_path: Path, stack: ExitStack) -> None:
    server = start(stack, app_server(tmp_path, {"100": "", "101": ""}, FAST, ROUTE))
    b = phone(stack, server, "101", register=True)
    a = phone(stack, server, "100")
    a.codecs = (8, 0)  # PCMA first: the attendant answers in PCMA
    assert a.call("800").status == 200, server.log()
    assert a.remote_sdp is not None and a.remote_sdp.payload_types()[0] == 8
    wait_playing(a)
    key(a, "101#")
    invite = b.ring_incoming()
    # the relay passes packets as they are: 101 may only answer in the caller's codec
    offered = parse_sdp_untrusted(invite.body).audio()
    assert offered is not None and offered.payload_types() == [8, 101], invite.body
    # after 'connecting' the caller hears 101 ring: ITU-T E.180's 425 Hz, in PCMA
    ring = g711.alaw_decode(load_audio(prompt_path("en", "ringback"), "PCMA"))[:16000]
    assert abs(dominant_frequency(list(array("h", ring[:1600])), 8000) - 425) <= 10
    wait_heard(a, ring, timeout=15)
    assert {r.packet.payload_type for r in heard(a)} == {8}
    assert a.bye().status == 200
    b.wait_requests("CANCEL", 1)


def test_a_wrong_number_hears_invalid_and_tries_again_with_sip_info(tmp_path: Path,
                                                                    stack: ExitStack) -> None:
    server = start(stack, app_server(tmp_path, {"100": "", "101": ""}, FAST, ROUTE))
    b = phone(stack, server, "101", register=True)
    a = phone(stack, server, "100")
    assert a.call("800", sdp_dtmf=False).status == 200, server.log()  # keys come as INFO
    wait_playing(a)
    key(a, "555#", info=True)
    wait_heard(a, prompt_pcm("en", "invalid_number"))
    wait_heard(a, prompt_pcm("en", "welcome")[:3200], since=time.monotonic())  # once more
    key(a, "101", info=True)  # no #: the digit timeout ends the number
    b.answer_incoming(timeout=10)
    assert b.dialog is not None and a.bye().status == 200


def test_a_user_who_is_an_attendant_answers_0_reaches_the_operator_and_a_menu_key_its_number(
        tmp_path: Path, stack: ExitStack) -> None:
    server = start(stack, app_server(
        tmp_path, {"100": "", "101": "", "102": "", "800": "auto_attendant: true"},
        {**FAST, 'operator: ""': 'operator: "102"',
         "  menu: {}": '  menu:\n    "5": {number: "101", description: "support"}'}))
    op = phone(stack, server, "102", register=True)
    b = phone(stack, server, "101", register=True)
    a = phone(stack, server, "100")
    assert a.call("800").status == 200, server.log()  # the user 800 is the attendant
    wait_playing(a)
    key(a, "0#")
    op.answer_incoming()
    assert a.bye().status == 200
    c = phone(stack, server, "100")
    assert c.call("800").status == 200
    wait_playing(c)
    key(c, "5#")
    b.answer_incoming()
    assert c.bye().status == 200


def test_attempts_run_out_and_the_caller_hears_goodbye(tmp_path: Path, stack: ExitStack) -> None:
    server = start(stack, app_server(tmp_path, {"100": ""},
                                     {**FAST, "max_attempts: 3": "max_attempts: 2"}, ROUTE))
    a = phone(stack, server, "100")
    assert a.call("800").status == 200
    wait_playing(a)
    key(a, "9#")  # invalid once; then silence: the second attempt
    a.wait_requests("BYE", 1, timeout=30)
    said = pcm(heard(a))
    for prompt in ("invalid_number", "welcome", "goodbye"):
        assert prompt_pcm("en", prompt)[:8000] in said, prompt


def test_the_number_handed_on_keeps_its_services_voicemail_takes_it(tmp_path: Path,
                                                                    stack: ExitStack) -> None:
    server = start(stack, app_server(tmp_path, {"100": "", "101": "voicemail: true"},
                                     FAST, ROUTE))
    a = phone(stack, server, "100")
    assert a.call("800").status == 200
    wait_playing(a)
    key(a, "101#")  # 101 is offline: its voicemail answers the caller already answered
    wait_heard(a, prompt_pcm("en", "not_available", "leave_message")[:8000])
    key(a, "1")  # skips the greeting
    wait_quiet(a)
    a.send_audio(1.0)
    key(a, "#")
    a.wait_requests("BYE", 1, timeout=20)
    r = server.cli("voicemail", "list", "--user", "101")
    assert r.returncode == 0 and " 100 " in r.stdout, r.stdout + r.stderr


def test_a_busy_number_brings_the_caller_back_to_the_welcome(tmp_path: Path,
                                                             stack: ExitStack) -> None:
    server = start(stack, app_server(tmp_path, {"100": "", "101": ""}, FAST, ROUTE))
    port = free_port((socket.SOCK_DGRAM,))
    busy = start_sipp("uas_busy.xml", port=port, timeout=30, workdir=tmp_path)
    reg = run_sipp("register_contact.xml", server.port, users=[("101", "101")],
                   extra=("-key", "contact_port", str(port)), workdir=tmp_path)
    assert reg.ok, reg.output
    a = phone(stack, server, "100")
    assert a.call("800").status == 200
    wait_playing(a)
    key(a, "101#")
    assert busy.wait().ok
    since = time.monotonic() - 0.5
    wait_heard(a, prompt_pcm("en", "busy")[:8000], since=since)
    wait_heard(a, prompt_pcm("en", "welcome")[:3200], since=since)
    assert a.bye().status == 200


def test_prompts_speak_the_voice_prompts_language(tmp_path: Path, stack: ExitStack) -> None:
    server = start(stack, app_server(tmp_path, {"100": ""}, FAST, ROUTE,
                                     system={"voice_prompts: en": "voice_prompts: zh"}))
    a = phone(stack, server, "100")
    assert a.call("800").status == 200
    wait_heard(a, prompt_pcm("zh", "welcome")[:8000])
    assert a.bye().status == 200


def test_a_trunk_whose_calls_go_to_the_attendant(tmp_path: Path, stack: ExitStack) -> None:
    """An outside caller on a trunk with incoming.transfer_to: auto_attendant keys 101."""
    server = app_server(tmp_path, {"100": "", "101": ""}, FAST)
    carrier = stack.enter_context(PyPhone(server.port, "0211234", ""))
    (server.config_dir / "trunks.yaml").write_text(
        f"trunks:\n  carrier:\n    address: 127.0.0.1\n    port: {carrier.sip_port}\n"
        "    incoming:\n      transfer_to: auto_attendant\n")
    start(stack, server)
    b = phone(stack, server, "101", register=True)
    assert carrier.call("5550000").status == 200, server.log()  # trusted: no challenge
    wait_playing(carrier)
    key(carrier, "101#")
    invite = b.answer_incoming()
    assert invite.from_addr.uri.user == "0211234"
    assert carrier.bye().status == 200
