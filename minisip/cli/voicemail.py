"""``minisip voicemail list/show/play/delete``: the voice messages in the data dir.

Listing, showing and copying read the mailbox database and files directly (no
server needed; SQLite's WAL lets them read while the server writes). Deleting
goes through the running server when there is one, so that the user's message
waiting lamp follows; without a server it deletes in place.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from .common import emit_json, fail, request, table, target, write

if TYPE_CHECKING:
    from ..pbx.apps.mailbox import Mailbox, Message

ConfigDir = Annotated[Optional[Path], typer.Option(
    "--config-dir", help="Directory of the YAML configuration [default: configs].")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Directory of live state.")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
MessageId = Annotated[int, typer.Argument(help="The message's id (see `voicemail list`).")]

voicemail_app = typer.Typer(no_args_is_help=True,
                            help="Voice messages: list, show, copy to a WAV file, delete.")


def _mailbox(ctx: typer.Context, config_dir: Path | None, data_dir: Path | None) -> Mailbox:
    from ..pbx.apps.mailbox import Mailbox

    data = target(ctx, config_dir, data_dir).data_dir
    if not (data / "voicemail" / "voicemail.db").exists():
        fail(f"no voicemail in {data}")
    return Mailbox(data)


def _message(box: Mailbox, message_id: int) -> Message:
    m = box.get(message_id)
    if m is None:
        fail(f"no message {message_id}")
    return m


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@voicemail_app.command("list")
def list_(ctx: typer.Context, config_dir: ConfigDir = None, data_dir: DataDir = None,
          user: Annotated[Optional[str], typer.Option(help="Only this user's mailbox.")] = None,
          json: Json = False) -> None:
    """Messages, oldest first: id, mailbox, caller, time, seconds, new or heard."""
    box = _mailbox(ctx, config_dir, data_dir)
    rows = [m.as_dict() for m in box.messages(user)]
    box.close()
    if json:
        emit_json(rows)
        return
    table("messages", ["id", "user", "caller", "received", "seconds", "new"],
          [[r["id"], r["user"], r["caller"], _when(float(r["received"])),  # type: ignore[arg-type]
            r["duration"], "" if r["heard"] else "new"] for r in rows])


@voicemail_app.command()
def show(ctx: typer.Context, message_id: MessageId, config_dir: ConfigDir = None,
         data_dir: DataDir = None, json: Json = False) -> None:
    """One message: mailbox, caller, time, duration, heard, its file, its mail."""
    box = _mailbox(ctx, config_dir, data_dir)
    m = _message(box, message_id)
    info = m.as_dict()
    pending = box.pending_mail().get(m.id)
    info["mail"] = (f"waiting ({pending[0]} failed tries: {pending[1]})" if pending and pending[0]
                    else "waiting" if pending else ("sent" if m.mail_to else "not mailed"))
    info["mail_to"] = m.mail_to
    box.close()
    if json:
        emit_json(info)
        return
    info["received"] = _when(m.received)
    for key, value in info.items():
        write(f"{key + ':':<10} {value}")


@voicemail_app.command()
def play(ctx: typer.Context, message_id: MessageId,
         output: Annotated[Path, typer.Option("--output", "-o",
                                              help="WAV file to write (8 kHz mono).")],
         config_dir: ConfigDir = None, data_dir: DataDir = None) -> None:
    """Copy a message's recording to a WAV file (for any audio player)."""
    box = _mailbox(ctx, config_dir, data_dir)
    m = _message(box, message_id)
    box.close()
    try:
        shutil.copyfile(m.path, output)
    except OSError as exc:
        fail(f"cannot write {output}: {exc}")
    write(f"message {m.id} ({m.duration:.1f} s) written to {output}")


@voicemail_app.command()
def delete(ctx: typer.Context, message_id: MessageId, config_dir: ConfigDir = None,
           data_dir: DataDir = None) -> None:
    """Delete a message and its recording."""
    gone = request(target(ctx, config_dir, data_dir), "voicemail_delete", {"id": message_id},
                   required=False)
    if gone is None:  # no server (or it knows no such message): do it here
        box = _mailbox(ctx, config_dir, data_dir)
        found = box.delete(message_id)
        box.close()
        if found is None:
            fail(f"no message {message_id}")
    write(f"message {message_id} deleted")
