"""The one exception untrusted input may raise."""
from __future__ import annotations


class BadMessage(Exception):
    """Bytes from the wire that are not an acceptable SIP message.

    ``reason`` goes into the reason phrase of the answer ("400 Bad Via header");
    ``status`` is the code to answer with when the message was a request (400,
    or 505/513/416/420... where the RFC names another), or ``None`` to drop it.
    """

    def __init__(self, reason: str, status: int | None = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
