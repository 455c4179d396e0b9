"""Media: RTP relay, minisip's own media endpoint, prompts, recorder, DTMF.

Sans-IO: ``rtp`` (packets, RFC 3550 statistics, the sending stream), ``g711``,
``dtmf`` (RFC 4733 and SIP INFO), ``sdp_media`` (offer/answer; SDP itself is sip/sdp.py),
``recorder`` (file only), ``prompts`` (paths).
trio: ``relay`` (PortPool, MediaIO -- the one receive loop for every media socket --,
RelaySession, wait_media_timeout), ``endpoint`` (MediaEndpoint), ``player`` (Player).
"""
