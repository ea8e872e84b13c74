# SPDX-License-Identifier: GPL-2.0-or-later
"""``escd probe``: read every card present directly over PC/SC and print what escd sees.

No daemon and no bus: one PC/SC context, each reader in turn, each card read by
``escd.card.identify`` inside one shared-mode transaction, then a readable table or
JSON (a list with one object per card; keys as in ``token_to_json``).

Exit status, like ``opensc-tool`` does it: 0 when pcscd answered, also with no reader or
no card (an empty answer is an answer) and when a card could not be read (each such card
gets one line, or an ``unknown`` entry with its ``problem`` in JSON); 1 when ``--reader``
names a reader pcscd does not have; 2 when pcscd is not available (one line on stderr).

Must not: send a PIN, write to a card, or keep a card beyond its transaction.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import TextIO

from escd.card.atr import describe_atr
from escd.card.identify import identify
from escd.errors import CardError, CardRemovedError, PcscUnavailableError
from escd.model import AppletKind, CertificateInfo, TokenInfo, TokenState, enum_word
from escd.pcsc.connection import PcscCardSession, list_readers, open_context, release_context

EXIT_OK = 0
EXIT_NO_SUCH_READER = 1
EXIT_PCSC_UNAVAILABLE = 2


class NoSuchReaderError(Exception):
    """``--reader`` names a reader pcscd does not have."""


@dataclass(frozen=True, slots=True)
class ReaderResult:
    """What probing one reader gave: a token, an empty slot, or why the card was unreadable."""

    reader: str
    token: TokenInfo | None = None
    error: str = ""

    @property
    def empty(self) -> bool:
        return self.token is None and not self.error


def run_probe(reader: str | None, as_json: bool) -> int:
    """Probe every reader (or only ``reader``); print the result; return the exit status."""
    try:
        results = probe(reader)
    except PcscUnavailableError as err:
        print(f"escd probe: pcscd is not available: {err.message}", file=sys.stderr)
        return EXIT_PCSC_UNAVAILABLE
    except NoSuchReaderError as err:
        print(f"escd probe: {err.args[0]}", file=sys.stderr)
        return EXIT_NO_SUCH_READER
    if as_json:
        write_json(results, sys.stdout)
    else:
        write_table(results, sys.stdout)
    return EXIT_OK


def probe(reader: str | None = None) -> list[ReaderResult]:
    """Read the card in every reader (or only ``reader``, which must exist)."""
    context = open_context()
    try:
        readers = list_readers(context)
        if reader is not None:
            if reader not in readers:
                known = ", ".join(repr(name) for name in readers) or "none"
                raise NoSuchReaderError(f"no reader named {reader!r} (readers: {known})")
            readers = [reader]
        return [probe_reader(context, name) for name in readers]
    finally:
        release_context(context)


def probe_reader(context: int, reader: str) -> ReaderResult:
    """Identify the card in one reader inside one transaction."""
    try:
        session = PcscCardSession(context, reader)
    except CardRemovedError:
        return ReaderResult(reader)
    except CardError as err:
        return ReaderResult(reader, error=err.message)
    try:
        session.begin_transaction()
        try:
            token = identify(session, reader)
        finally:
            session.end_transaction()
    except CardRemovedError:
        return ReaderResult(reader, error="the card was removed while it was read")
    except CardError as err:
        return ReaderResult(reader, error=err.message)
    finally:
        session.close()
    return ReaderResult(reader, token)


# -- output -----------------------------------------------------------------------------


def _version(version: tuple[int, int] | None) -> str | None:
    return None if version is None else f"{version[0]}.{version[1]}"


def certificate_to_json(certificate: CertificateInfo) -> dict[str, str]:
    return {
        "subject": certificate.subject,
        "issuer": certificate.issuer,
        "serial": certificate.serial,
        "not_before": certificate.not_before.isoformat(),
        "not_after": certificate.not_after.isoformat(),
        "sha256": certificate.sha256,
        "label": certificate.label,
    }


def token_to_json(token: TokenInfo) -> dict[str, object]:
    """The stable JSON form of a token (keys are part of the command's interface)."""
    return {
        "reader": token.reader,
        "atr": token.atr.hex().upper(),
        "cuid": token.cuid,
        "msn": token.msn,
        "state": enum_word(token.state),
        "applet": enum_word(token.applet),
        "applet_version": _version(token.applet_version),
        "applet_release": _version(token.applet_release),
        "build_id": None if token.build_id is None else f"{token.build_id:08x}",
        "life_cycle": token.life_cycle,
        "pin_tries_left": token.pin_tries_left,
        "phone_home_url": token.phone_home_url,
        "token_name": token.token_name,
        "total_memory": token.total_memory,
        "free_memory": token.free_memory,
        "certificates": [certificate_to_json(c) for c in token.certificates],
        "problem": token.problem,
    }


def write_json(results: list[ReaderResult], out: TextIO) -> None:
    """One object per card; an unreadable card is an ``unknown`` entry with its problem."""
    entries = []
    for result in results:
        if result.token is not None:
            entries.append(token_to_json(result.token))
        elif result.error:
            unreadable = TokenInfo(result.reader, b"", TokenState.UNKNOWN, problem=result.error)
            entries.append(token_to_json(unreadable))
    json.dump(entries, out, indent=2)
    out.write("\n")


_STATE_WORDS = {
    TokenState.UNKNOWN: "unknown (not a CoolKey token)",
    TokenState.NO_APPLET: "no applet (ESC: Unformatted)",
    TokenState.UNINITIALIZED: "uninitialized (ESC: Formatted)",
    TokenState.ENROLLED: "enrolled",
}
_APPLET_WORDS = {
    AppletKind.UNKNOWN: "none",
    AppletKind.COOLKEY: "CoolKey",
    AppletKind.OTHER: "other",
}


def format_token(token: TokenInfo) -> list[str]:
    """The table lines for one token."""
    rows: list[tuple[str, str]] = [
        ("ATR", f"{token.atr.hex(' ').upper()} ({describe_atr(token.atr)})"),
        ("State", _STATE_WORDS[token.state]),
        ("CUID", token.cuid or "-"),
        ("MSN", token.msn or "-"),
    ]
    if token.applet is not AppletKind.UNKNOWN:
        applet = f"{_APPLET_WORDS[token.applet]}, version {_version(token.applet_version)}"
        if token.applet_release is not None:
            applet += f", release {_version(token.applet_release)}"
        if token.build_id is not None:
            applet += f", build {token.build_id:08x}"
        rows.append(("Applet", applet))
    if token.life_cycle is not None:
        rows.append(("Life cycle", f"0x{token.life_cycle:02X}"))
    if token.total_memory is not None and token.free_memory is not None:
        rows.append(("Memory", f"{token.free_memory} of {token.total_memory} bytes free"))
    if token.applet is not AppletKind.UNKNOWN:
        tries = "unknown" if token.pin_tries_left < 0 else str(token.pin_tries_left)
        rows.append(("PIN tries left", tries))
        rows.append(("Phone home URL", token.phone_home_url or "-"))
    if token.token_name:
        rows.append(("Token name", token.token_name))
    for certificate in token.certificates:
        rows.append(("Certificate", certificate.subject))
        rows.append(("  Label", certificate.label or "-"))
        rows.append(("  Issuer", certificate.issuer))
        rows.append(("  Serial", certificate.serial))
        rows.append(("  Valid", f"{certificate.not_before:%Y-%m-%d} to "
                                f"{certificate.not_after:%Y-%m-%d}"))  # fmt: skip
        rows.append(("  SHA-256", certificate.sha256))
    if token.problem:
        rows.append(("Problem", token.problem))
    width = max(len(label) for label, _ in rows) + 2
    return [f"  {label + ':':<{width}}{value}" for label, value in rows]


def write_table(results: list[ReaderResult], out: TextIO) -> None:
    if not results:
        out.write("No smart-card readers found.\n")
        return
    for result in results:
        if result.token is not None:
            out.write(f"{result.reader}:\n")
            out.write("\n".join(format_token(result.token)) + "\n")
        elif result.error:
            out.write(f"{result.reader}: the card could not be read: {result.error}\n")
        else:
            out.write(f"{result.reader}: no card\n")
