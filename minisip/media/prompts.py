"""Where the voice prompts are: ``prompts/<language>/<name>.wav``, falling back to English.

Language-independent sounds (``hold_music``, ``beep``) live in ``prompts/``
itself. The root is the repository's ``prompts/`` unless ``MINISIP_PROMPTS``
or the ``root`` argument says otherwise. ``system.yaml``'s ``voice_prompts``
is the language.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..sip.digits import is_digits

DEFAULT_LANGUAGE = "en"
LANGUAGES = ("en", "zh")
PROMPTS = ("welcome", "busy", "not_available", "no_answer", "leave_message", "goodbye",
           "invalid_number", "parked_at_slot", "setting_saved")


def prompts_root() -> Path:
    env = os.environ.get("MINISIP_PROMPTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "prompts"


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
