"""minisip: an open-source SIP PBX."""
__version__ = "0.1.0"
