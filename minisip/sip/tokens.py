"""Random identifiers: tags, branches, Call-IDs, nonces.

RFC 3261 19.3 asks for cryptographically random tags (32 bits or more); the
same source serves branches, Call-IDs and the random part of nonces. Bytes come
from ``os.urandom`` 4 KB at a time, one getrandom call per few hundred
identifiers instead of one each (base32 of ``os.urandom`` per tag was 2 us of
every tag and branch a call makes).
"""
from __future__ import annotations

import os

_POOL_SIZE = 4096
_pool = b""
_pos = _POOL_SIZE


def random_hex(nbytes: int) -> str:
    """``nbytes`` random bytes as ``2 * nbytes`` lower-case hex digits."""
    global _pool, _pos
    if _pos + nbytes > len(_pool):
        _pool, _pos = os.urandom(_POOL_SIZE), 0
    start, _pos = _pos, _pos + nbytes
    return _pool[start:_pos].hex()
