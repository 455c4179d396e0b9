"""The SIP message layer, sans-IO: bytes in, messages out, and back (never imports trio).

- ``parser``: ``parse_message_untrusted`` (one datagram) and ``StreamFramer`` (TCP/TLS)
- ``message``: ``Request``, ``Response``, ``make_response``, lazy cached header views
- ``headers``: ``Headers`` (ordered, repeated, bytes-preserving), ``canonical``
- ``uri``: ``URI``, ``Address``, ``Via`` and their ``parse_*_untrusted``
- ``sdp``: RFC 4566 ``SessionDescription``; ``digest``: RFC 8760 authentication
- ``status``: ``SIPStatus``; ``errors``: ``BadMessage``; ``peer``: ``Peer``
"""
