# SPDX-License-Identifier: GPL-2.0-or-later
"""``escctl format|enroll|reset-pin|renew|unblock [TOKEN]``: one TPS operation, start to end.

escctl registers itself as the agent of its own connection (escd asks the agent of the
client that started a job first), subscribes to the job's predictable path
(``handle_token``), starts the operation, shows a progress line with the TPS stage, and
answers escd's prompts with ``escd.ctl.prompts.TerminalAgent``. Ctrl+C cancels the job
and waits for it to end. On failure it prints the error name, escd's message and the
status code with its source.

Must not: print or keep a secret beyond the one run (secrets from files travel as
``Secret`` until the agent's reply).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO

from dbus_fast import DBusError, Variant

from escd.ctl import output
from escd.ctl.agent import ESCCTL_CAPABILITIES, register_agent
from escd.ctl.client import JOB_CANCELED, JOB_SUCCEEDED, EscdClient, JobView
from escd.ctl.console import (
    EXIT_CANCELED,
    EXIT_FAILED,
    EXIT_NO_TOKEN,
    EXIT_OK,
    complain,
    say,
)
from escd.ctl.prompts import Presets, TerminalAgent, fingerprint_argument, read_secret_file
from escd.dbus_service.names import ERROR_NO_SUCH_TOKEN, token_id_from_path

#: escctl command → Token method.
METHODS = {
    "format": "Format",
    "enroll": "Enroll",
    "reset-pin": "ResetPin",
    "renew": "Renew",
    "unblock": "Unblock",
}
_HELP = {
    "format": "erase the token and load the applet, through the TPS",
    "enroll": "enroll the token with the TPS (keys, certificates, a new PIN)",
    "reset-pin": "set a new PIN on an enrolled token, through the TPS",
    "renew": "renew the certificates of an enrolled token (if the TPS allows it)",
    "unblock": "unblock an enrolled token (if the TPS allows it)",
}
#: How long escctl waits for a job it canceled to end (escd closes and re-reads first).
CANCEL_WAIT = 15.0

EPILOG = (
    "escd asks for what the TPS needs (user id, password, a new PIN, the format "
    "confirmation) through escctl: at the terminal (secrets without echo), or from "
    "--user, --password-file, --pin-file and --yes. A TPS whose certificate escd does "
    "not trust is shown (subject, issuer, SHA-256, validity) with 'Trust this server? "
    "[y/N]'; yes pins exactly that certificate (escctl trust list shows it). Without "
    "input it is not trusted, unless --trust-server gives its SHA-256. Exit status: 0 "
    "succeeded, 1 failed "
    "(the error name, escd's message and the TPS or local status are printed), 3 escd not "
    "reachable, 4 no such token, 5 canceled (Ctrl+C, a declined prompt, format not "
    "confirmed)."
)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for command, text in _HELP.items():
        parser = commands.add_parser(command, help=text, description=text + ".", epilog=EPILOG)
        parser.add_argument(
            "token",
            nargs="?",
            default="",
            metavar="TOKEN",
            help="CUID, unique CUID prefix or reader name (optional with one token present)",
        )
        parser.add_argument("--tps", metavar="URL", help="use this TPS URL for this run")
        parser.add_argument(
            "--token-type", metavar="TYPE", help="use this token type (TPS profile)"
        )
        parser.add_argument("--user", metavar="UID", help="the user id for the TPS login")
        parser.add_argument(
            "--password-file",
            type=Path,
            metavar="FILE",
            help="read the TPS login password from the first line of FILE",
        )
        add_trust_server_argument(parser, "the TPS")
        if command in ("enroll", "reset-pin"):
            parser.add_argument(
                "--pin-file",
                type=Path,
                metavar="FILE",
                help="read the new PIN from the first line of FILE",
            )
        if command == "format":
            parser.add_argument(
                "--yes", action="store_true", help="do not ask before erasing the token"
            )
            parser.add_argument(
                "--force",
                action="store_true",
                help="format even when the administrator hides Format (policy.hide_format)",
            )


def add_trust_server_argument(parser: argparse.ArgumentParser, server: str) -> None:
    parser.add_argument(
        "--trust-server",
        type=fingerprint_argument,
        metavar="FINGERPRINT",
        help=f"if {server} presents a certificate escd does not trust, trust (pin) it "
        "without asking, but only if its SHA-256 is FINGERPRINT (AB:CD:… as 'escctl trust "
        "add-server' shows it)",
    )


def new_handle_token() -> str:
    """A ``handle_token`` for a job escctl starts: no other run of escctl uses it."""
    return f"escctl_{os.getpid()}_{secrets.token_hex(4)}"


def trust_hint(result: dict[str, Any]) -> str | None:
    """What to do about a job that failed because a server was not trusted."""
    if not str(result.get("error", "")).endswith(".TlsUntrusted"):
        return None
    return (
        "to trust that server: answer y when escctl asks, run again with --trust-server "
        "FINGERPRINT, or escctl trust add-server URL (or trust import CA)"
    )


class ProgressDisplay:
    """One progress line on a terminal (redrawn), or one line per stage otherwise.

    Nothing is drawn while a prompt is on the screen: ``pause`` called by the agent's
    answer (a task of its own) holds the line until that task ends. Job updates keep
    arriving meanwhile (some sent before the prompt), and a redraw would overwrite the
    question.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._on_line = False
        self._last = ""
        self._prompt: asyncio.Task[Any] | None = None

    def show(self, view: JobView) -> None:
        if view.completed or view.state >= JOB_SUCCEEDED:
            return  # the result is printed on its own
        prompt = self._prompt
        if prompt is not None and not prompt.done() and prompt is not asyncio.current_task():
            return
        line = output.progress_line(view)
        if not self._tty:
            # Without a terminal, one line per stage: a format sends an update per block.
            stage = view.tps_task if view.progress_valid else output.job_state_name(view.state)
            if stage != self._last:
                self._stream.write(line + "\n")
                self._stream.flush()
            self._last = stage
            return
        if line != self._last:
            self._stream.write("\r" + line + "\x1b[K")
            self._stream.flush()
            self._on_line = True
            self._last = line

    def pause(self) -> None:
        """Leave the progress line before something else is written (a prompt)."""
        self._prompt = asyncio.current_task()
        if self._tty and self._on_line:
            self._stream.write("\n")
            self._stream.flush()
            self._on_line = False
            self._last = ""


def _presets(args: argparse.Namespace) -> Presets:
    password = getattr(args, "password_file", None)
    pin = getattr(args, "pin_file", None)
    return Presets(
        user=args.user,
        password=read_secret_file(password) if password is not None else None,
        pin=read_secret_file(pin) if pin is not None else None,
        yes=bool(getattr(args, "yes", False)),
        trust_server=getattr(args, "trust_server", None),
    )


async def _operation(client: EscdClient, args: argparse.Namespace) -> int:
    command = args.command
    try:
        presets = _presets(args)
    except OSError as exc:
        complain(f"cannot read {exc.filename}: {exc.strerror}")
        return EXIT_FAILED
    except ValueError as exc:  # not UTF-8; the text names the file, not its bytes
        complain(str(exc))
        return EXIT_FAILED
    token = await client.find_token(args.token)
    token_id = token_id_from_path(token)
    if command == "format" and not args.force:
        snapshot = await client.snapshot()
        if snapshot.manager.policy.get("hide_format"):
            complain(
                "the administrator hides Format (policy.hide_format); use --force to format anyway"
            )
            return EXIT_FAILED
    progress = ProgressDisplay(sys.stderr)
    agent = TerminalAgent(presets, interactive=True, before_prompt=progress.pause)
    await register_agent(client.bus, agent, capabilities=ESCCTL_CAPABILITIES)
    handle = new_handle_token()
    options: dict[str, Variant] = {"handle_token": Variant("s", handle)}
    if args.tps:
        options["tps_url"] = Variant("s", args.tps)
    if args.token_type:
        options["token_type"] = Variant("s", args.token_type)
    if command == "format" and presets.yes:
        options["confirmed"] = Variant("b", True)
    async with client.watch_job(client.job_path(handle)) as watch:
        try:
            job = await client.start_operation(token, METHODS[command], options)
        except DBusError as exc:
            complain(f"{command} refused: {exc.type}: {exc.text}")
            return EXIT_NO_TOKEN if exc.type == ERROR_NO_SUCH_TOKEN else EXIT_FAILED
        try:
            final = await _follow(watch.updates(), progress)
        except asyncio.CancelledError:
            _uncancel()
            progress.pause()
            agent.interrupt()
            complain(f"canceling the {command}...")
            ended = await _cancel(client, job, watch.updates())
            progress.pause()
            if ended is not None and ended.result:
                complain(output.job_failure(command, ended.result))
            return EXIT_CANCELED
    progress.pause()
    if final.state == JOB_SUCCEEDED:
        say(f"{command} of token {token_id} succeeded")
        return EXIT_OK
    if final.state == JOB_CANCELED:
        # A "no" at a prompt is the user's choice, not a failure to explain.
        complain(f"{command} of token {token_id} canceled")
        return EXIT_CANCELED
    complain(output.job_failure(command, final.result))
    hint = trust_hint(final.result)
    if hint is not None:
        complain(hint)
    return EXIT_FAILED


async def _follow(updates: AsyncIterator[JobView], progress: ProgressDisplay) -> JobView:
    async for view in updates:
        progress.show(view)
        if view.completed:
            return view
    raise RuntimeError("the job ended without Completed")


async def _cancel(client: EscdClient, job: str, updates: AsyncIterator[JobView]) -> JobView | None:
    with contextlib.suppress(DBusError, TimeoutError):
        async with asyncio.timeout(CANCEL_WAIT):
            await client.cancel_job(job)
            async for view in updates:
                if view.completed:
                    return view
    return None


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


COMMANDS: dict[str, Callable[[EscdClient, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    command: _operation for command in METHODS
}
