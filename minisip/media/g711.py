"""G.711 PCMU (mu-law) and PCMA (A-law), table driven, stdlib only.

Decoding maps each code byte to a little-endian 16-bit sample: two 256-entry
``bytes.translate`` tables give the low and the high byte, interleaved with
slice assignment, so the per-sample work runs in C. Encoding indexes a
65536-entry table by the unsigned 16-bit sample (``memoryview.cast('H')``)
through ``bytes(map(table.__getitem__, ...))``. The tables are built once at
import from the ITU-T G.711 reference segment rules (the classic Sun g711.c).
PCM throughout is signed 16-bit little-endian mono (WAV layout).
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable

_SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
_BIAS = 0x84
_CLIP = 8159

ULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5


def _segment(value: int, ends: tuple[int, ...]) -> int:
    for i, end in enumerate(ends):
        if value <= end:
            return i
    return len(ends)


def _linear_to_ulaw(sample: int) -> int:
    pcm = sample >> 2  # 14-bit
    if pcm < 0:
        pcm = -pcm
        mask = 0x7F
    else:
        mask = 0xFF
    if pcm > _CLIP:
        pcm = _CLIP
    pcm += _BIAS >> 2
    seg = _segment(pcm, _SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0x0F)) ^ mask


def _ulaw_to_linear(code: int) -> int:
    code = ~code & 0xFF
    t = ((code & 0x0F) << 3) + _BIAS
    t <<= (code & 0x70) >> 4
    return _BIAS - t if code & 0x80 else t - _BIAS


def _linear_to_alaw(sample: int) -> int:
    pcm = sample >> 3  # 13-bit
    if pcm >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm = -pcm - 1
    seg = _segment(pcm, _SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (pcm >> 1) & 0x0F if seg < 2 else (pcm >> seg) & 0x0F
    return aval ^ mask


def _alaw_to_linear(code: int) -> int:
    code ^= 0x55
    t = (code & 0x0F) << 4
    seg = (code & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if code & 0x80 else -t


def _decode_tables(fn: Callable[[int], int]) -> tuple[bytes, bytes, tuple[int, ...]]:
    values = tuple(fn(c) for c in range(256))
    lo = bytes((v & 0xFFFF) & 0xFF for v in values)
    hi = bytes(((v & 0xFFFF) >> 8) for v in values)
    return lo, hi, values


def _encode_table(fn: Callable[[int], int]) -> bytes:
    # index = unsigned 16-bit view of the signed sample
    return bytes(fn(i - 65536 if i >= 32768 else i) for i in range(65536))


_ULAW_LO, _ULAW_HI, ULAW_TO_LINEAR = _decode_tables(_ulaw_to_linear)
_ALAW_LO, _ALAW_HI, ALAW_TO_LINEAR = _decode_tables(_alaw_to_linear)


@functools.cache
def _ulaw_table() -> bytes:  # 64 KiB, built on first use (about 30 ms)
    return _encode_table(_linear_to_ulaw)


@functools.cache
def _alaw_table() -> bytes:
    return _encode_table(_linear_to_alaw)


_BIG_ENDIAN = sys.byteorder == "big"


def _decode(data: bytes, lo: bytes, hi: bytes) -> bytes:
    out = bytearray(2 * len(data))
    out[0::2] = data.translate(lo)
    out[1::2] = data.translate(hi)
    return bytes(out)


def _encode(pcm: bytes | bytearray | memoryview, table: bytes) -> bytes:
    view = memoryview(pcm)
    if view.nbytes % 2:
        raise ValueError("16-bit PCM must have an even number of bytes")
    if _BIG_ENDIAN:  # the table wants native order; PCM is little-endian
        swapped = bytearray(view.nbytes)
        swapped[0::2] = view[1::2]
        swapped[1::2] = view[0::2]
        view = memoryview(swapped)
    return bytes(map(table.__getitem__, view.cast("B").cast("H")))


def ulaw_decode(data: bytes) -> bytes:
    """PCMU codes -> 16-bit little-endian PCM."""
    return _decode(bytes(data), _ULAW_LO, _ULAW_HI)


def alaw_decode(data: bytes) -> bytes:
    """PCMA codes -> 16-bit little-endian PCM."""
    return _decode(bytes(data), _ALAW_LO, _ALAW_HI)


def ulaw_encode(pcm: bytes) -> bytes:
    """16-bit little-endian PCM -> PCMU codes."""
    return _encode(pcm, _ulaw_table())


def alaw_encode(pcm: bytes) -> bytes:
    """16-bit little-endian PCM -> PCMA codes."""
    return _encode(pcm, _alaw_table())


Codec = Callable[[bytes], bytes]

#: codec name (SDP encoding name, upper case) -> (static payload type, encode, decode, silence code)
CODECS: dict[str, tuple[int, Codec, Codec, int]] = {
    "PCMU": (0, ulaw_encode, ulaw_decode, ULAW_SILENCE),
    "PCMA": (8, alaw_encode, alaw_decode, ALAW_SILENCE),
}


def encoder_for(codec: str) -> Codec:
    return CODECS[codec.upper()][1]


def decoder_for(codec: str) -> Codec:
    return CODECS[codec.upper()][2]


def silence_for(codec: str) -> int:
    return CODECS[codec.upper()][3]
