"""Feature codes that change a user's own settings from the phone.

``*90*200#`` sets busy forwarding to 200 and ``*90#`` clears it (the same for
*91 unreachable, *92 no answer, *93 unconditional); ``*78``/``*79`` turn do
not disturb on and off. The change is stored in users.yaml (the same
round-trip, atomic edit as ``minisip user set``), so the administrator sees
it, and the caller hears a confirmation. The dial plan has already checked
the user's right and the number.
"""
from __future__ import annotations

from typing import Any

#: feature code field name -> the users.yaml field it sets, and its value ("" = the argument)
SETTINGS: dict[str, tuple[str, Any]] = {
    "forward_busy": ("forward_busy.number", ""),
    "forward_unreachable": ("forward_unreachable.number", ""),
    "forward_no_answer": ("forward_no_answer.number", ""),
    "forward_unconditional": ("forward_unconditional.number", ""),
    "do_not_disturb_on": ("do_not_disturb", True),
    "do_not_disturb_off": ("do_not_disturb", False),
}


def change(code: str, argument: str) -> dict[str, Any]:
    """The users.yaml fields a dialled feature code sets (KeyError: not a settings code)."""
    key, value = SETTINGS[code]
    return {key: argument if value == "" else value}
