"""The outside world: external lines (manual section 4), SIP trunks and routing groups.

``registration`` registers type 0 lines to their providers; ``incoming`` tells
which line or trunk a request comes from; ``outgoing`` builds the leg of a call
through one; ``usage`` counts calls against the per-line limits; ``dns``
resolves providers' names; ``manager`` ties them to the running PBX.
"""
