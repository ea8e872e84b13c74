# SPDX-License-Identifier: GPL-2.0-or-later
"""``escctl``: the command-line frontend of escd. It only ever talks to the daemon over D-Bus.

    escctl list [--json]           the tokens present, one line each
    escctl info [TOKEN] [--json]   one token (CUID, unique CUID prefix or reader name;
                                   optional when exactly one token is present)
    escctl watch [--json]          insertions, removals and state changes as they happen
    escctl diagnose [TOKEN] [--json] [--log N]
                                   a support report to paste into a bug report (versions,
                                   pcscd, readers, tokens, recent events; never a secret)
    escctl trust import|add-server|list|remove ...
                                   CA certificates and server pins (escd.ctl.admin)
    escctl import-esc-prefs [PATH] [--json]
                                   import the settings of ESC
    escctl settings TOKEN [--tps-url URL] ... [--clear KEY]
                                   a token's values set by hand
    escctl phone-home [TOKEN] [--force] [--url URL] [--trust-server FINGERPRINT]
                                   phone home now, as escctl's own job
    escctl format|enroll|reset-pin|renew|unblock [TOKEN] [--tps URL] [--user UID]
           [--password-file FILE] [--pin-file FILE] [--yes] [--trust-server FINGERPRINT]
                                   a TPS operation as escctl's own job, with a progress
                                   line; escctl answers escd's prompts (escd.ctl.operations),
                                   including whether to trust a server escd does not

Exit codes: 0 success, 1 the daemon refused the request, 2 usage error, 3 the daemon is
not reachable (no session bus, or escd neither running nor activatable), 4 no such token
(unknown, ambiguous, or none present), 5 a TPS operation was canceled (Ctrl+C, a
declined prompt, format not confirmed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from dbus_fast import DBusError, Variant

from escd import __version__
from escd.ctl import admin, operations, output
from escd.ctl.client import DaemonUnreachableError, EscdClient, Snapshot
from escd.ctl.console import (
    EXIT_FAILED,
    EXIT_NO_DAEMON,
    EXIT_NO_TOKEN,
    EXIT_OK,
    complain,
    say,
)
from escd.dbus_service.names import ERROR_NO_SUCH_TOKEN
from escd.readers import PcscState

DIAGNOSE_LOG_LINES = 20


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="escctl",
        description="Command-line frontend of escd, the smart-card token daemon.",
    )
    parser.add_argument("--version", action="version", version=f"escctl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    listing = commands.add_parser("list", help="list the tokens present")
    listing.add_argument("--json", action="store_true", help="print JSON")
    info = commands.add_parser("info", help="show one token")
    info.add_argument(
        "token",
        nargs="?",
        default="",
        metavar="TOKEN",
        help="CUID, unique CUID prefix or reader name (optional with one token present)",
    )
    info.add_argument("--json", action="store_true", help="print JSON")
    watch = commands.add_parser("watch", help="print token changes as they happen")
    watch.add_argument("--json", action="store_true", help="print JSON lines")
    diagnose = commands.add_parser(
        "diagnose",
        help="print a support report (ESC's Advanced Info; no secrets)",
        description="Print what a bug report needs: escd and component versions, pcscd "
        "state, readers, tokens with phone-home data and certificates, recent events and "
        "log lines. It never contains a PIN, a password or APDU data.",
    )
    diagnose.add_argument(
        "token",
        nargs="?",
        default="",
        metavar="TOKEN",
        help="only this token (CUID, unique CUID prefix or reader name)",
    )
    diagnose.add_argument("--json", action="store_true", help="print the whole report as JSON")
    diagnose.add_argument(
        "--log",
        type=_count,
        default=DIAGNOSE_LOG_LINES,
        metavar="N",
        help=f"include the last N log lines (default {DIAGNOSE_LOG_LINES}, 0 for none)",
    )
    admin.add_parsers(commands)
    operations.add_parsers(commands)
    return parser


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("expected 0 or more")
    return value


def _pcsc_warning(snapshot: Snapshot) -> None:
    state = snapshot.manager.pcsc_state
    if state is PcscState.SERVICE_UNAVAILABLE:
        complain("warning: pcscd is not available; no card can be seen")
    elif state is PcscState.ACCESS_DENIED:
        complain("warning: pcscd refused escd access (polkit); no card can be seen")
    elif state is PcscState.NO_READERS:
        complain("warning: no card reader is connected")


async def _list(client: EscdClient, args: argparse.Namespace) -> int:
    snapshot = await client.snapshot()
    if args.json:
        say(output.list_json(snapshot))
        return EXIT_OK
    _pcsc_warning(snapshot)
    if not snapshot.tokens:
        say("no token present")
        return EXIT_OK
    say(output.list_text(snapshot))
    return EXIT_OK


async def _info(client: EscdClient, args: argparse.Namespace) -> int:
    path = await client.find_token(args.token)
    snapshot = await client.snapshot()
    token = snapshot.tokens.get(path)
    if token is None:  # removed between the two calls
        complain("the token was removed")
        return EXIT_NO_TOKEN
    say(output.info_json(token) if args.json else output.info_text(token))
    return EXIT_OK


async def _watch(client: EscdClient, args: argparse.Namespace) -> int:
    async for event in client.watch():
        if event.kind == "subscribed":
            if not args.json:
                say("watching escd; press Ctrl+C to stop")
            continue
        say(output.json_line(event) if args.json else output.watch_text(event))
    return EXIT_OK


async def _diagnose(client: EscdClient, args: argparse.Namespace) -> int:
    options = {"log_lines": Variant("u", args.log)}
    if args.token:
        options["token"] = Variant("s", args.token)
    if not args.json:
        options["format"] = Variant("s", "text")
    report = await client.diagnostics(options)
    if args.json:
        say(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(report.get("text", ""), end="", flush=True)
    return EXIT_OK


_COMMANDS: dict[str, Callable[[EscdClient, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "list": _list,
    "info": _info,
    "watch": _watch,
    "diagnose": _diagnose,
    **admin.COMMANDS,
    **operations.COMMANDS,
}


async def run(args: argparse.Namespace) -> int:
    try:
        client = await EscdClient.connect()
    except DaemonUnreachableError as exc:
        complain(str(exc))
        return EXIT_NO_DAEMON
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        return await _COMMANDS[args.command](client, args)
    except DaemonUnreachableError as exc:
        complain(str(exc))
        return EXIT_NO_DAEMON
    except DBusError as exc:
        complain(exc.text or exc.type)
        return EXIT_NO_TOKEN if exc.type == ERROR_NO_SUCH_TOKEN else EXIT_FAILED
    except asyncio.CancelledError:
        return EXIT_OK
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
