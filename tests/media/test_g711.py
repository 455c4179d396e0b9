"""G.711: known code points, round-trip error bounds, agreement with audioop where present."""
from __future__ import annotations

import math
import random
import struct
import warnings

import pytest

from minisip.media import g711


def pcm(samples: list[int]) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def unpcm(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 2}h", data))


@pytest.mark.parametrize("code,value", [
    (0xFF, 0), (0x7F, 0), (0x00, -32124), (0x80, 32124), (0xFE, 8), (0x7E, -8), (0xF0, 120),
])
def test_ulaw_known_code_points(code: int, value: int) -> None:
    assert unpcm(g711.ulaw_decode(bytes([code]))) == [value]


@pytest.mark.parametrize("code,value", [
    (0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0x54, -24),
])
def test_alaw_known_code_points(code: int, value: int) -> None:
    assert unpcm(g711.alaw_decode(bytes([code]))) == [value]


@pytest.mark.parametrize("sample,ulaw,alaw", [
    (0, 0xFF, 0xD5), (-1, 0x7E, 0x55), (32767, 0x80, 0xAA), (-32768, 0x00, 0x2A),
    (1000, 0xCE, 0xFA), (-1000, 0x4E, 0x7A),
])
def test_encode_known_samples(sample: int, ulaw: int, alaw: int) -> None:
    assert g711.ulaw_encode(pcm([sample])) == bytes([ulaw])
    assert g711.alaw_encode(pcm([sample])) == bytes([alaw])


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_every_code_decodes_and_re_encodes_to_itself(codec: str) -> None:
    enc, dec = g711.encoder_for(codec), g711.decoder_for(codec)
    codes = bytes(range(256))
    again = enc(dec(codes))
    if codec == "PCMU":  # 0x7F is -0: it decodes to 0, which encodes as +0 (0xFF)
        assert again == codes.replace(b"\x7f", b"\xff")
    else:
        assert again == codes


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_round_trip_error_stays_within_the_segment_step(codec: str) -> None:
    enc, dec = g711.encoder_for(codec), g711.decoder_for(codec)
    samples = list(range(-32768, 32768, 7))
    back = unpcm(dec(enc(pcm(samples))))
    for x, y in zip(samples, back):
        # companding: the step doubles each segment; half a step at most, plus clipping at the top
        bound = max(16, abs(x) // 16) if codec == "PCMU" else max(16, abs(x) // 16)
        assert abs(x - y) <= bound + (700 if abs(x) > 32000 else 0), (x, y)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_sine_survives_with_telephone_quality_snr(codec: str) -> None:
    enc, dec = g711.encoder_for(codec), g711.decoder_for(codec)
    samples = [int(12000 * math.sin(2 * math.pi * 440 * i / 8000)) for i in range(8000)]
    back = unpcm(dec(enc(pcm(samples))))
    signal = sum(x * x for x in samples)
    noise = sum((x - y) ** 2 for x, y in zip(samples, back))
    assert 10 * math.log10(signal / noise) > 35  # G.711 gives about 38 dB


def test_odd_length_pcm_is_refused() -> None:
    with pytest.raises(ValueError):
        g711.ulaw_encode(b"\x00\x01\x02")


def test_matches_audioop_where_python_still_has_it() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    rnd = random.Random(1)
    data = bytes(rnd.getrandbits(8) for _ in range(40000))
    assert g711.ulaw_encode(data) == audioop.lin2ulaw(data, 2)
    assert g711.alaw_encode(data) == audioop.lin2alaw(data, 2)
    codes = bytes(range(256))
    assert g711.ulaw_decode(codes) == audioop.ulaw2lin(codes, 2)
    assert g711.alaw_decode(codes) == audioop.alaw2lin(codes, 2)
