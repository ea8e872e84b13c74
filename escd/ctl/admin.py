# SPDX-License-Identifier: GPL-2.0-or-later
"""``escctl`` commands for trust, ESC migration and per-token settings.

    escctl trust import FILE [--yes]      show a CA certificate or chain (PEM, DER,
                                          PKCS#7), ask, then trust it
    escctl trust add-server URL [--yes]   show the certificate a server presents, ask,
                                          then pin its SHA-256 for that host and port
    escctl trust list [--json]            imported and shared CAs, server pins
    escctl trust remove ID                stop trusting one entry of the list
    escctl import-esc-prefs [PATH] [--json]
                                          import ESC's esc-prefs.js / prefs.js (all of
                                          the user's profiles when PATH is omitted)
    escctl settings TOKEN [--tps-url URL] [--phone-home-url URL] ... [--clear KEY]
                                          show or set the values set by hand for a token
    escctl phone-home [TOKEN] [--force] [--url URL] [--trust-server FINGERPRINT]
                                          phone home now (Token.PhoneHome, a job); asks
                                          at the terminal for a URL when none is known,
                                          and whether to trust an untrusted server

Everything goes through the daemon's Manager methods; nothing is trusted without the
user answering "y" to a question that shows subject and fingerprint (or ``--yes``). The
question is read from standard input, so ``echo y | escctl trust import FILE`` works.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from dbus_fast import DBusError, Variant

from escd.ctl.agent import ESCCTL_CAPABILITIES, register_agent
from escd.ctl.client import JOB_SUCCEEDED, EscdClient, JobView, plain
from escd.ctl.console import EXIT_FAILED, EXIT_OK, EXIT_USAGE, complain, say
from escd.ctl.operations import add_trust_server_argument, new_handle_token, trust_hint
from escd.ctl.output import job_failure
from escd.ctl.prompts import Presets, StdinLines, TerminalAgent
from escd.dbus_service.names import (
    ERROR_NO_SUCH_TOKEN,
    MANAGER_INTERFACE,
    MANAGER_PATH,
    token_id_from_path,
)
from escd.model import enum_word
from escd.phonehome.cache import ADMIN_FIELDS as TOKEN_SETTINGS

_TOKEN_ID = re.compile(r"[0-9a-fA-F]{20}|atr_[0-9a-f]+_[0-9a-f]+")

Command = Callable[[EscdClient, argparse.Namespace], Coroutine[Any, Any, int]]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``trust``, ``import-esc-prefs`` and ``settings`` to escctl's parser."""
    trust = commands.add_parser(
        "trust",
        help="CA certificates and server pins for TPS and phone-home connections",
        description="Whom escd trusts besides the system CAs (ESC's Authorities and Servers tabs).",
    )
    actions = trust.add_subparsers(dest="trust_command", metavar="ACTION", required=True)
    imports = actions.add_parser(
        "import",
        help="trust a CA certificate or chain (PEM, DER or PKCS#7)",
        description="Show the certificates in FILE (as a Dogtag CA's 'Import CA "
        "Certificate Chain' page gives them), ask, then trust them.",
    )
    imports.add_argument(
        "file", metavar="FILE", type=Path, help="the CA certificate or chain (PEM, DER or PKCS#7)"
    )
    imports.add_argument("--yes", action="store_true", help="do not ask")
    add_server = actions.add_parser(
        "add-server",
        help="pin the certificate a server presents (ESC's 'Add Exception')",
        description="Fetch the certificate the https server at URL presents, show it, "
        "ask, then accept exactly that certificate (its SHA-256) for that host and port.",
    )
    add_server.add_argument("url", metavar="URL", help="https URL or host[:port]")
    add_server.add_argument("--yes", action="store_true", help="do not ask")
    listing = actions.add_parser("list", help="list trusted CAs and pinned servers")
    listing.add_argument("--json", action="store_true", help="print JSON")
    remove = actions.add_parser("remove", help="stop trusting one entry")
    remove.add_argument("id", metavar="ID", help="an id from 'escctl trust list'")

    legacy = commands.add_parser(
        "import-esc-prefs",
        help="import the settings of the Enterprise Security Client (ESC)",
        description="Read ESC's esc-prefs.js and profile prefs.js as data (never "
        "executed) and import what escd has a place for; every skipped preference is "
        "listed with the reason. Running it again changes nothing.",
    )
    legacy.add_argument(
        "path",
        nargs="?",
        default="",
        metavar="PATH",
        help="a prefs.js or esc-prefs.js file, an ESC profile directory or ~/.redhat/esc "
        "(default: the installed esc-prefs.js and all of your ESC profiles)",
    )
    legacy.add_argument("--json", action="store_true", help="print the report as JSON")

    settings = commands.add_parser(
        "settings",
        help="show or set a token's values set by hand",
        description="Values set here win over what phone home says, and escd never "
        "changes them. The token need not be inserted when given by its CUID.",
    )
    settings.add_argument("token", metavar="TOKEN", help="CUID, unique CUID prefix or reader name")
    for key in TOKEN_SETTINGS:
        settings.add_argument(
            "--" + key.replace("_", "-"),
            dest=key,
            metavar="VALUE",
            help=f"set {key.replace('_', ' ')}",
        )
    settings.add_argument(
        "--clear",
        action="append",
        default=[],
        metavar="KEY",
        choices=[key.replace("_", "-") for key in TOKEN_SETTINGS],
        help="clear one value (repeatable): "
        + ", ".join(k.replace("_", "-") for k in TOKEN_SETTINGS),
    )
    settings.add_argument("--json", action="store_true", help="print JSON")

    phone_home = commands.add_parser(
        "phone-home",
        help="ask the token's Phone Home server which TPS manages it, now",
        description="Phone home for the token (ESC's issuer lookup) and show what escd "
        "knows afterwards. When no Phone Home URL is known, escd asks for one here; when "
        "the server presents a certificate escd does not trust, escctl shows it and asks "
        "'Trust this server? [y/N]' (yes pins exactly that certificate; without input it "
        "is not trusted).",
    )
    phone_home.add_argument(
        "token",
        nargs="?",
        default="",
        metavar="TOKEN",
        help="CUID, unique CUID prefix or reader name (optional with one token present)",
    )
    phone_home.add_argument(
        "--force", action="store_true", help="fetch even when the stored answer is fresh"
    )
    phone_home.add_argument(
        "--url", metavar="URL", help="use this Phone Home URL (remembered when it works)"
    )
    add_trust_server_argument(phone_home, "the Phone Home server")


async def confirm(question: str, assume_yes: bool) -> bool:
    """Ask, and read the answer from standard input without blocking the loop (Ctrl+C
    still works); no input at all is no."""
    if assume_yes:
        return True
    print(f"{question} [y/N] ", end="", flush=True)
    try:
        answer = await StdinLines(sys.stdin.fileno()).readline()
    except (AttributeError, OSError, ValueError, EOFError):
        print(flush=True)  # end the question's line
        return False
    return answer.strip().lower() in ("y", "yes")


def _date(seconds: object) -> str:
    value = int(seconds) if isinstance(seconds, int) else 0
    return time.strftime("%Y-%m-%d", time.gmtime(value)) if value else "unknown"


async def _manager(client: EscdClient, member: str, signature: str = "", *body: Any) -> Any:
    return plain(await client.call(MANAGER_PATH, MANAGER_INTERFACE, member, signature, [*body]))


# -- trust ------------------------------------------------------------------------------


def _certificate_lines(cert: Mapping[str, Any]) -> list[str]:
    return [
        f"  subject: {cert.get('subject', '')}",
        f"  issuer:  {cert.get('issuer', '')}",
        f"  SHA-256: {cert.get('fingerprint', '')}",
        f"  valid:   {_date(cert.get('not_before'))} to {_date(cert.get('not_after'))}",
    ]


async def _trust_import(client: EscdClient, args: argparse.Namespace) -> int:
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        complain(f"cannot read {args.file}: {exc.strerror or exc}")
        return EXIT_FAILED
    (certs,) = await _manager(client, "ImportAuthority", "aya{sv}", data, {})
    new = [cert for cert in certs if cert["status"] == "new"]
    for cert in certs:
        say(f"{'CA certificate' if cert['status'] != 'rejected' else 'Certificate'}:")
        for line in _certificate_lines(cert):
            say(line)
        if cert["status"] == "already-trusted":
            say("  already trusted")
        elif cert["status"] == "rejected":
            say(f"  not imported: {cert['reason']}")
    if not new:
        say("nothing to import")
        return EXIT_OK if certs and all(c["status"] != "rejected" for c in certs) else EXIT_FAILED
    question = (
        f"Trust {'this CA' if len(new) == 1 else f'these {len(new)} CAs'} for TPS and "
        "phone-home connections?"
    )
    if not await confirm(question, args.yes):
        complain("not imported")
        return EXIT_FAILED
    (done,) = await _manager(
        client, "ImportAuthority", "aya{sv}", data, {"confirmed": Variant("b", True)}
    )
    for cert in done:
        if cert["status"] == "added":
            say(f"trusted: {cert['subject']} ({cert['fingerprint']})")
    return EXIT_OK


async def _trust_add_server(client: EscdClient, args: argparse.Namespace) -> int:
    (cert,) = await _manager(client, "FetchServerCertificate", "s", args.url)
    where = f"{cert['host']}:{cert['port']}"
    say(f"{where} presents this certificate (not verified):")
    for line in _certificate_lines(cert):
        say(line)
    if cert.get("pinned"):
        say(f"already pinned for {where}")
        return EXIT_OK
    question = f"Accept this certificate, and only this one, for {where}?"
    if not await confirm(question, args.yes):
        complain("not pinned")
        return EXIT_FAILED
    host = f"[{cert['host']}]" if ":" in cert["host"] else cert["host"]
    url = f"https://{host}:{cert['port']}"
    (entry,) = await _manager(
        client,
        "PinServer",
        "ssa{sv}",
        url,
        cert["fingerprint"],
        {"subject": Variant("s", cert["subject"])},
    )
    say(f"pinned {where}: {entry['fingerprint']}")
    return EXIT_OK


async def _trust_list(client: EscdClient, args: argparse.Namespace) -> int:
    (entries,) = await _manager(client, "ListTrust")
    if args.json:
        say(json.dumps(entries, indent=2))
        return EXIT_OK
    if not entries:
        say("no CA imported and no server pinned (the system CAs are trusted)")
        return EXIT_OK
    for entry in entries:
        if entry["kind"] == "server":
            what = f"server {entry['host']}:{entry['port']}"
        else:
            what = "CA (shared, read-only)" if entry["shared"] else "CA"
        say(entry["id"])
        say(f"  {what}: {entry['subject'] or '(no subject)'}")
        say(f"  SHA-256: {entry['fingerprint']}")
        if entry["not_after"]:
            say(f"  valid until {_date(entry['not_after'])}")
    return EXIT_OK


async def _trust_remove(client: EscdClient, args: argparse.Namespace) -> int:
    await _manager(client, "RemoveTrust", "s", args.id)
    say(f"no longer trusted: {args.id}")
    return EXIT_OK


_TRUST: dict[str, Command] = {
    "import": _trust_import,
    "add-server": _trust_add_server,
    "list": _trust_list,
    "remove": _trust_remove,
}


async def _trust(client: EscdClient, args: argparse.Namespace) -> int:
    return await _TRUST[args.trust_command](client, args)


# -- ESC import ----------------------------------------------------------------------------


async def _import_esc_prefs(client: EscdClient, args: argparse.Namespace) -> int:
    # The daemon reads the files: hand it an absolute path.
    path = str(Path(args.path).expanduser().absolute()) if args.path else ""
    count, report = await _manager(client, "ImportLegacyPreferences", "sa{sv}", path, {})
    if args.json:
        say(json.dumps({"imported_count": count, **report}, indent=2))
        return EXIT_OK
    say("read: " + (", ".join(report["files"]) or "(nothing)"))
    if report["imported"]:
        say(f"imported ({count}):")
        for line in report["imported"]:
            say(f"  {line}")
    else:
        say("nothing new to import")
    if report["skipped"]:
        say("not imported:")
        for item in report["skipped"]:
            say(f"  {item['item']}: {item['reason']}")
    return EXIT_OK


# -- per-token settings --------------------------------------------------------------------


async def _token_id(client: EscdClient, query: str) -> str:
    """A present token by CUID, prefix or reader; else a full CUID as given."""
    try:
        path = await client.find_token(query)
    except DBusError as exc:
        if exc.type == ERROR_NO_SUCH_TOKEN and _TOKEN_ID.fullmatch(query):
            return query.lower()
        raise
    return token_id_from_path(path)


async def _settings(client: EscdClient, args: argparse.Namespace) -> int:
    token_id = await _token_id(client, args.token)
    changes = {key: getattr(args, key) for key in TOKEN_SETTINGS if getattr(args, key)}
    for key in args.clear:
        name = key.replace("-", "_")
        if name in changes:
            complain(f"--{key} is both set and cleared")
            return EXIT_USAGE
        changes[name] = ""
    if changes:
        settings = {key: Variant("s", value) for key, value in changes.items()}
        await _manager(client, "SetTokenSettings", "sa{sv}", token_id, settings)
    (current,) = await _manager(client, "GetTokenSettings", "s", token_id)
    if args.json:
        say(json.dumps({"token": token_id, "settings": current}, indent=2))
        return EXIT_OK
    say(f"Set by hand for {token_id}:")
    width = max(len(key) for key in TOKEN_SETTINGS)
    for key in TOKEN_SETTINGS:
        say(f"  {key.replace('_', '-') + ':':<{width + 2}} {current.get(key) or '(not set)'}")
    return EXIT_OK


# -- phone home ---------------------------------------------------------------------------


async def _phone_home(client: EscdClient, args: argparse.Namespace) -> int:
    token = await client.find_token(args.token)
    token_id = token_id_from_path(token)
    # escd asks the agent of the caller first: a URL prompt comes to this terminal.
    presets = Presets(trust_server=args.trust_server)
    await register_agent(
        client.bus, TerminalAgent(presets, interactive=True), capabilities=ESCCTL_CAPABILITIES
    )
    handle = new_handle_token()
    options = {"handle_token": Variant("s", handle), "force": Variant("b", args.force)}
    if args.url:
        options["url"] = Variant("s", args.url)
    final: JobView | None = None
    async with client.watch_job(client.job_path(handle)) as watch:
        await client.start_operation(token, "PhoneHome", options)
        async for view in watch.updates():
            if view.completed:
                final = view
                break
    snapshot = await client.snapshot()
    shown = snapshot.tokens.get(token)
    if final is not None and final.state == JOB_SUCCEEDED:
        say(f"phone home for {token_id}: {enum_word(shown.phone_home_state) if shown else 'done'}")
    else:
        result = final.result if final is not None else {}
        complain(job_failure("phone home", result))
        hint = trust_hint(result)
        if hint is not None:
            complain(hint)
    if shown is not None:
        for name, value in (
            ("Phone Home URL", shown.phone_home_url),
            ("Issuer", shown.issuer_name),
            ("TPS URL", shown.tps_url),
            ("Enrollment UI", shown.enrollment_ui_url),
            ("Token type", shown.token_type),
        ):
            say(f"  {name + ':':<16}{value or '(none)'}")
    return EXIT_OK if final is not None and final.state == JOB_SUCCEEDED else EXIT_FAILED


COMMANDS: dict[str, Command] = {
    "trust": _trust,
    "import-esc-prefs": _import_esc_prefs,
    "settings": _settings,
    "phone-home": _phone_home,
}
