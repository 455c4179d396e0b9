"""SUBSCRIBE/NOTIFY and MESSAGE: presence, busy lamps (dialog), MWI, text messages.

``framework`` is the RFC 6665 notifier, once; ``dialog``, ``presence`` and
``message_summary`` are the event packages on it; ``message`` is RFC 3428
MESSAGE with store-and-forward; ``service`` wires them to the PBX.
"""
from .service import EventService, may_watch

__all__ = ["EventService", "may_watch"]
