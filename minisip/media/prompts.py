"""Where the voice prompts are: ``prompts/<language>/<name>.wav``, falling back to English.

Language-independent sounds (``hold_music``, ``beep``) live in ``prompts/``
itself. The root is the repository's ``prompts/`` unless ``MINISIP_PROMPTS``
or the ``root`` argument says otherwise. ``system.yaml``'s ``voice_prompts``
is the language.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..sip.digits import is_digits

DEFAULT_LANGUAGE = "en"
LANGUAGES = ("en", "zh")
PROMPTS = ("welcome", "busy", "not_available", "no_answer", "leave_message", "goodbye",
           "invalid_number", "parked_at_slot", "setting_saved", "connecting",
           # voicemail: "you have 2 new messages and 1 saved message", each message's
           # caller and time, the keys, what they did
           "message_saved", "you_have", "new_message", "new_messages", "and",
           "saved_message", "saved_messages",
           "message_from", "received_at", "voicemail_menu", "message_deleted",
           "no_more_messages")
#: the words numbers and times are made of, beyond digits/0 .. digits/9
NUMBER_WORDS: dict[str, tuple[str, ...]] = {
    "en": (*(f"digits/{n}" for n in range(10, 20)), *(f"digits/{n}" for n in range(20, 100, 10)),
           "digits/hundred", "digits/oh"),
    "zh": ("digits/10", "digits/hundred", "o_clock", "minutes"),
}


def prompts_root() -> Path:
    """$MINISIP_PROMPTS, else the checkout's prompts/ (development, editable install),
    else where ``pip install`` puts them (pyproject's data-files)."""
    env = os.environ.get("MINISIP_PROMPTS")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "prompts"
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "minisip" / "prompts"


def prompt_path(language: str, name: str, *, root: Path | None = None) -> Path:
    """The WAV for prompt ``name`` ("busy", "digits/7", "hold_music") in ``language``.

    Raises ``FileNotFoundError`` when neither the language, English nor the
    shared folder has it. Names may not climb out of the prompts folder.
    """
    base = root or prompts_root()
    rel = Path(name if name.endswith(".wav") else name + ".wav")
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"bad prompt name {name!r}")
    lang = language if language and "/" not in language and ".." not in language else ""
    candidates = (base / lang / rel if lang else None, base / DEFAULT_LANGUAGE / rel, base / rel)
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no prompt {name!r} for {language!r} under {base}")


def digit_paths(language: str, number: str | int, *, root: Path | None = None) -> list[Path]:
    """The prompts that read a number digit by digit ("parked at slot" + "7")."""
    return [prompt_path(language, f"digits/{d}", root=root) for d in str(number) if is_digits(d)]


def _en(n: int) -> list[str]:
    if n < 20:
        return [f"digits/{n}"]
    if n < 100:
        return [f"digits/{n - n % 10}"] + ([f"digits/{n % 10}"] if n % 10 else [])
    return [f"digits/{n // 100}", "digits/hundred"] + (_en(n % 100) if n % 100 else [])


def _zh(n: int) -> list[str]:
    tens, unit = divmod(n % 100, 10)
    if n < 10:
        return [f"digits/{n}"]
    if n < 100:  # 十, 十一, 二十, 二十一
        return ([f"digits/{tens}"] if tens > 1 else []) + ["digits/10"] + (
            [f"digits/{unit}"] if unit else [])
    out = [f"digits/{n // 100}", "digits/hundred"]
    if n % 100 == 0:
        return out
    if tens == 0:  # 一百零五
        return out + ["digits/0", f"digits/{unit}"]
    return out + [f"digits/{tens}", "digits/10"] + ([f"digits/{unit}"] if unit else [])


def number_prompts(language: str, n: int) -> list[str]:
    """The prompts that say ``n`` as a number ("twenty one", "二十一") up to 999;
    longer numbers digit by digit."""
    if not 0 <= n < 1000:
        return [f"digits/{d}" for d in str(n) if is_digits(d)]
    return _zh(n) if language == "zh" else _en(n)


def time_prompts(language: str, hour: int, minute: int) -> list[str]:
    """A time of day: "fourteen oh five", "十四点零五分"."""
    if language == "zh":
        out = [*_zh(hour), "o_clock"]
        if minute:
            out += (["digits/0"] if minute < 10 else []) + _zh(minute) + ["minutes"]
        return out
    if minute == 0:
        return [*_en(hour), "digits/hundred"]
    return [*_en(hour), *(["digits/oh"] if minute < 10 else []), *_en(minute)]
