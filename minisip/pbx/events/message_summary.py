"""The message-summary event package (RFC 3842): the message waiting lamp.

Voicemail provides the counts: ``mailbox_counts(user) -> (new, old)``
(0/0 until a voicemail service sets it) and calls ``EventService.mwi_changed``
when they change. Only a user's own phones may watch its mailbox.
"""
from __future__ import annotations

from collections.abc import Callable


class MessageSummaryPackage:
    event = "message-summary"
    content_type = "application/simple-message-summary"

    def __init__(self, domain: Callable[[], str],
                 mailbox_counts: Callable[[str], tuple[int, int]]) -> None:
        self.domain = domain
        self.mailbox_counts = mailbox_counts

    def body(self, user: str, version: int) -> bytes:
        new, old = self.mailbox_counts(user)
        return (f"Messages-Waiting: {'yes' if new else 'no'}\r\n"
                f"Message-Account: sip:{user}@{self.domain()}\r\n"
                f"Voice-Message: {new}/{old} (0/0)\r\n").encode()
