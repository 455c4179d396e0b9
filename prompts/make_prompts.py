#!/usr/bin/env python3
"""Make minisip's voice prompts and hold music: 8 kHz mono 16-bit WAV.

    python3 prompts/make_prompts.py            # needs espeak-ng and sox (Debian packages)
    python3 prompts/make_prompts.py --music    # only the hold music, beep and ring-back (stdlib)

Speech: espeak-ng (voice en-us for English, cmn for Mandarin) writes 22 kHz
WAV; sox converts it to 8 kHz mono 16-bit, band-limits it to the telephone
band, normalises to -3 dBFS and trims leading/trailing silence (keeping 0.1 s).
Hold music, the beep and the ring-back tone are synthesised here with the standard library: sine
partials with soft envelopes over a I-vi-IV-V progression, built to loop
seamlessly (it starts and ends in silence on the same chord).
The results are committed, so a checkout needs neither tool.
"""
from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import wave
from array import array
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Names with a slash are in a subfolder (digits/); every name is a .wav file.
RATE = 8000

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "welcome": "Welcome. Please enter the extension number.",
        "busy": "The number you dialed is busy. Please try again later.",
        "not_available": "The person you are calling is not available.",
        "no_answer": "There is no answer. Please try again later.",
        "leave_message": "Please leave a message after the tone.",
        "goodbye": "Thank you for calling. Goodbye.",
        "invalid_number": "The number you dialed is invalid. "
                          "Please check the number and dial again.",
        "parked_at_slot": "Your call has been parked at slot",
        "setting_saved": "Your setting has been saved.",
        "connecting": "Please hold while your call is connected.",
        "message_saved": "Your message has been saved.",
        "you_have": "You have",
        "new_message": "new message.",
        "new_messages": "new messages.",
        "and": "and",
        "saved_message": "saved message.",
        "saved_messages": "saved messages.",
        "message_from": "Message from",
        "received_at": "received at",
        "voicemail_menu": "To delete this message, press 7. To keep it, press 9. "
                          "For the next message, press the pound key.",
        "message_deleted": "Message deleted.",
        "no_more_messages": "You have no more messages.",
        # numbers and times (minisip/media/prompts.py says how they are put together)
        "digits/hundred": "hundred",
        "digits/oh": "oh",
        **{f"digits/{n}": w for n, w in enumerate(
            ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
             "seventeen", "eighteen", "nineteen"], start=10)},
        **{f"digits/{10 * n}": w for n, w in enumerate(
            ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"],
            start=2)},
    },
    "zh": {
        "welcome": "欢迎致电，请输入分机号码。",
        "busy": "您拨打的电话正忙，请稍后再拨。",
        "not_available": "您拨打的用户暂时无法接通。",
        "no_answer": "您拨打的电话无人接听，请稍后再拨。",
        "leave_message": "请在提示音后留言。",
        "goodbye": "感谢您的来电，再见。",
        "invalid_number": "您拨打的号码无效，请核对后再拨。",
        "parked_at_slot": "您的通话已停泊，停泊位号码是",
        "setting_saved": "您的设置已保存。",
        "connecting": "正在为您接通，请稍候。",
        "message_saved": "您的留言已保存。",
        "you_have": "您有",
        "new_message": "条新留言。",
        "new_messages": "条新留言。",
        "and": "和",
        "saved_message": "条已保存的留言。",
        "saved_messages": "条已保存的留言。",
        "message_from": "留言来自",
        "received_at": "收到时间",
        "voicemail_menu": "删除这条留言请按7，保留请按9，听下一条请按井号键。",
        "message_deleted": "留言已删除。",
        "no_more_messages": "没有更多留言了。",
        "digits/10": "十",
        "digits/hundred": "百",
        "o_clock": "点",
        "minutes": "分",
    },
}
DIGITS = {
    "en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "zh": ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九"],
}
VOICES = {"en": ("en-us", "150"), "zh": ("cmn", "150")}


def speak(text: str, language: str, out: Path) -> None:
    voice, speed = VOICES[language]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", speed, "-w", str(raw), text], check=True)
        subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16",
                        "-e", "signed-integer",
                        str(out), "highpass", "200", "lowpass", "3400", "norm", "-3",
                        "silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%",
                        "reverse", "pad", "0.1", "0.1"], check=True)


def write_wav(path: Path, samples: array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if sys.byteorder == "big":
        samples = array("h", samples)
        samples.byteswap()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.tobytes())


def _freq(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def hold_music(seconds_per_chord: float = 2.0, rounds: int = 2) -> array:
    """A gentle I-vi-IV-V in C: soft pad chords plus an arpeggio, 16 s per round."""
    chords = [(48, [60, 64, 67]), (45, [57, 60, 64]), (41, [57, 60, 65]), (43, [59, 62, 67])]
    n_chord = int(seconds_per_chord * RATE)
    total = n_chord * len(chords) * rounds
    out = [0.0] * total
    two_pi = 2 * math.pi
    for r in range(rounds):
        for c, (bass, triad) in enumerate(chords):
            start = (r * len(chords) + c) * n_chord
            # pad: the triad and the bass, slow attack and release (overlaps the next chord)
            length = n_chord + RATE // 4
            for midi, amp in [(bass, 0.16)] + [(m, 0.09) for m in triad]:
                f = _freq(midi)
                for i in range(length):
                    idx = start + i
                    if idx >= total:
                        break
                    t = i / RATE
                    env = min(1.0, t / 0.35) * min(1.0, (length - i) / (0.45 * RATE))
                    # a touch of second harmonic makes it less of a test tone
                    ph = two_pi * f * t
                    out[idx] += amp * env * (math.sin(ph) + 0.25 * math.sin(2 * ph))
            # arpeggio: the triad up an octave, one note every quarter of the chord
            step = n_chord // 4
            for k, midi in enumerate(triad + [triad[0] + 12]):
                f = _freq(midi + 12)
                note = int(0.45 * RATE)
                for i in range(note):
                    idx = start + k * step + i
                    if idx >= total:
                        break
                    t = i / RATE
                    env = min(1.0, t / 0.03) * math.exp(-4.0 * t)  # soft attack: no clicks
                    out[idx] += 0.12 * env * math.sin(two_pi * f * t)
    # fade in and out so that the loop point is silent on both sides
    fade = RATE // 5
    for i in range(fade):
        g = i / fade
        out[i] *= g
        out[total - 1 - i] *= g
    peak = max(abs(x) for x in out) or 1.0
    scale = 0.6 * 32767 / peak
    return array("h", (int(round(x * scale)) for x in out))


def beep(freq: float = 1000.0, seconds: float = 0.5) -> array:
    n = int(seconds * RATE)
    ramp = RATE // 100
    return array("h", (int(12000 * min(1.0, i / ramp, (n - i) / ramp)
                           * math.sin(2 * math.pi * freq * i / RATE)) for i in range(n)))


def ringback(freq: float = 425.0, on: float = 1.0, off: float = 4.0) -> array:
    """The ring-back tone of ITU-T E.180 (425 Hz, 1 s on, 4 s off), one cadence: what a
    caller handed on by an app hears while the number rings."""
    return beep(freq, on) + array("h", bytes(2 * int(off * RATE)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--music", action="store_true", help="only the synthesised sounds")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--only", nargs="*", help="make only these prompts (names as in TEXTS)")
    args = ap.parse_args(argv)
    write_wav(args.out / "hold_music.wav", hold_music())
    write_wav(args.out / "beep.wav", beep())
    write_wav(args.out / "ringback.wav", ringback())
    if args.music:
        return 0
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install -y espeak-ng sox", file=sys.stderr)
            return 1
    for language, texts in TEXTS.items():
        for name, text in texts.items():
            if args.only and name not in args.only:
                continue
            speak(text, language, args.out / language / f"{name}.wav")
        for d, word in enumerate(DIGITS[language]):
            if not args.only or f"digits/{d}" in args.only:
                speak(word, language, args.out / language / "digits" / f"{d}.wav")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
