"""SIP response codes and their reason phrases, like ``http.HTTPStatus``.

RFC 3261 (core), 3262 (PRACK), 3265/6665 (events), 3311 (UPDATE), 3329 (security
agreement), 3515 (REFER), 3903 (PUBLISH), 4028 (session timers), 4412 (resource
priority), 5626 (outbound).
"""
from __future__ import annotations

from enum import IntEnum


class SIPStatus(IntEnum):
    phrase: str

    def __new__(cls, value: int, phrase: str) -> SIPStatus:
        obj = int.__new__(cls, value)
        obj._value_ = value
        obj.phrase = phrase
        return obj

    TRYING = 100, "Trying"
    RINGING = 180, "Ringing"
    CALL_IS_BEING_FORWARDED = 181, "Call Is Being Forwarded"
    QUEUED = 182, "Queued"
    SESSION_PROGRESS = 183, "Session Progress"
    EARLY_DIALOG_TERMINATED = 199, "Early Dialog Terminated"

    OK = 200, "OK"
    ACCEPTED = 202, "Accepted"
    NO_NOTIFICATION = 204, "No Notification"

    MULTIPLE_CHOICES = 300, "Multiple Choices"
    MOVED_PERMANENTLY = 301, "Moved Permanently"
    MOVED_TEMPORARILY = 302, "Moved Temporarily"
    USE_PROXY = 305, "Use Proxy"
    ALTERNATIVE_SERVICE = 380, "Alternative Service"

    BAD_REQUEST = 400, "Bad Request"
    UNAUTHORIZED = 401, "Unauthorized"
    PAYMENT_REQUIRED = 402, "Payment Required"
    FORBIDDEN = 403, "Forbidden"
    NOT_FOUND = 404, "Not Found"
    METHOD_NOT_ALLOWED = 405, "Method Not Allowed"
    NOT_ACCEPTABLE = 406, "Not Acceptable"
    PROXY_AUTHENTICATION_REQUIRED = 407, "Proxy Authentication Required"
    REQUEST_TIMEOUT = 408, "Request Timeout"
    GONE = 410, "Gone"
    CONDITIONAL_REQUEST_FAILED = 412, "Conditional Request Failed"
    REQUEST_ENTITY_TOO_LARGE = 413, "Request Entity Too Large"
    REQUEST_URI_TOO_LONG = 414, "Request-URI Too Long"
    UNSUPPORTED_MEDIA_TYPE = 415, "Unsupported Media Type"
    UNSUPPORTED_URI_SCHEME = 416, "Unsupported URI Scheme"
    UNKNOWN_RESOURCE_PRIORITY = 417, "Unknown Resource-Priority"
    BAD_EXTENSION = 420, "Bad Extension"
    EXTENSION_REQUIRED = 421, "Extension Required"
    SESSION_INTERVAL_TOO_SMALL = 422, "Session Interval Too Small"
    INTERVAL_TOO_BRIEF = 423, "Interval Too Brief"
    FLOW_FAILED = 430, "Flow Failed"
    FIRST_HOP_LACKS_OUTBOUND_SUPPORT = 439, "First Hop Lacks Outbound Support"
    TEMPORARILY_UNAVAILABLE = 480, "Temporarily Unavailable"
    CALL_TRANSACTION_DOES_NOT_EXIST = 481, "Call/Transaction Does Not Exist"
    LOOP_DETECTED = 482, "Loop Detected"
    TOO_MANY_HOPS = 483, "Too Many Hops"
    ADDRESS_INCOMPLETE = 484, "Address Incomplete"
    AMBIGUOUS = 485, "Ambiguous"
    BUSY_HERE = 486, "Busy Here"
    REQUEST_TERMINATED = 487, "Request Terminated"
    NOT_ACCEPTABLE_HERE = 488, "Not Acceptable Here"
    BAD_EVENT = 489, "Bad Event"
    REQUEST_PENDING = 491, "Request Pending"
    UNDECIPHERABLE = 493, "Undecipherable"
    SECURITY_AGREEMENT_REQUIRED = 494, "Security Agreement Required"

    SERVER_INTERNAL_ERROR = 500, "Server Internal Error"
    NOT_IMPLEMENTED = 501, "Not Implemented"
    BAD_GATEWAY = 502, "Bad Gateway"
    SERVICE_UNAVAILABLE = 503, "Service Unavailable"
    SERVER_TIMEOUT = 504, "Server Time-out"
    VERSION_NOT_SUPPORTED = 505, "Version Not Supported"
    MESSAGE_TOO_LARGE = 513, "Message Too Large"
    PRECONDITION_FAILURE = 580, "Precondition Failure"

    BUSY_EVERYWHERE = 600, "Busy Everywhere"
    DECLINE = 603, "Decline"
    DOES_NOT_EXIST_ANYWHERE = 604, "Does Not Exist Anywhere"
    NOT_ACCEPTABLE_ANYWHERE = 606, "Not Acceptable"


_PHRASES: dict[int, str] = {s.value: s.phrase for s in SIPStatus}
# RFC 3261 21: an unknown code is treated as x00 of its class.
_CLASS_PHRASES = {1: "Trying", 2: "OK", 3: "Redirection", 4: "Client Error",
                  5: "Server Error", 6: "Global Failure"}


def reason_phrase(status: int) -> str:
    """The standard phrase for a code, or a generic one for its class."""
    p = _PHRASES.get(status)
    if p is not None:
        return p
    return _CLASS_PHRASES.get(status // 100, "Unknown")
