"""Micro-benchmark: us per parse and per serialize of a typical authenticated REGISTER.

Run: .venv/bin/python tests/sip/bench_parse.py   (not collected by pytest: no test_ prefix)
"""
from __future__ import annotations

import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from minisip.sip.digest import DigestAuthenticator, authorization_for, parse_credentials_untrusted
from minisip.sip.message import make_response
from minisip.sip.parser import parse_message_untrusted

REGISTER = (
    b"REGISTER sip:pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:100@pbx.example.com>\r\n"
    b"From: <sip:100@pbx.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@192.0.2.10\r\n"
    b"CSeq: 2 REGISTER\r\n"
    b"Contact: <sip:100@192.0.2.10:5062;transport=udp>;expires=3600;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"\r\n"
    b"Authorization: Digest username=\"100\", realm=\"minisip\", nonce=\"0000019a5f3c2d1e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f\", "
    b"uri=\"sip:pbx.example.com\", response=\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\", "
    b"algorithm=SHA-256, cnonce=\"0a4f113b\", qop=auth, nc=00000001\r\n"
    b"User-Agent: Yealink SIP-T46S 66.86.0.15\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, OPTIONS, INFO, SUBSCRIBE, UPDATE\r\n"
    b"Expires: 3600\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def best(fn: object, n: int) -> float:
    """Best of 9 runs, in CPU seconds per call (other processes' load does not count)."""
    t = timeit.Timer(fn, timer=time.process_time)  # type: ignore[arg-type]
    return min(t.repeat(number=n, repeat=9)) / n


def main() -> None:
    n = 5000
    parse = best(lambda: parse_message_untrusted(REGISTER), n)
    req = parse_message_untrusted(REGISTER)
    ser = best(req.to_bytes, n)
    resp = make_response(req, 200, to_tag="abc", headers=[("Contact", "<sip:100@192.0.2.10:5062>;expires=3600")])
    mk = best(lambda: make_response(req, 200, to_tag="abc", headers=[("Contact", "<sip:100@192.0.2.10:5062>;expires=3600")]), n)
    rser = best(resp.to_bytes, n)
    auth = DigestAuthenticator("minisip", secret=b"k" * 32)
    challenge = auth.challenge(1000.0)[0][1]
    value = authorization_for(challenge, "REGISTER", "sip:pbx.example.com", "100", "100")
    creds = parse_credentials_untrusted(value)
    cred = best(lambda: parse_credentials_untrusted(value), n)
    ha1 = "0" * 64
    verify = best(lambda: auth.verify(creds, "REGISTER", None, 1000.0, ha1=ha1), n)
    contacts = best(lambda: parse_message_untrusted(REGISTER).contacts, n) - parse
    print(f"parse REGISTER (eager checks):  {parse * 1e6:6.1f} us")
    print(f"  + Contact view:               {contacts * 1e6:6.1f} us")
    print(f"parse Digest credentials:       {cred * 1e6:6.1f} us")
    print(f"verify (SHA-256, cached HA1):   {verify * 1e6:6.1f} us")
    print(f"serialize REGISTER:             {ser * 1e6:6.1f} us")
    print(f"make_response 200:              {mk * 1e6:6.1f} us")
    print(f"serialize 200 response:         {rser * 1e6:6.1f} us")


if __name__ == "__main__":
    main()
