# SPDX-License-Identifier: GPL-2.0-or-later
"""The diagnostics report behind ``Manager.GetDiagnostics``: data, and an ESC-style text dump.

Pure: it reads the registry, the event ring and values the daemon collected (versions,
log lines) and returns plain data; the D-Bus layer types it. Secrets cannot appear:
the registry holds none, and log lines are redacted where they are written.

The content follows the ESC manual's "Diagnosing Problems" (3.6): client and component
versions, the number of cards, and per token the applet version, CUID, state, Phone
Home URL, issuer, ATR, TPS URL, enrollment UI URL, each certificate in detail, and the
recent events (insertions, removals, operations with their TPS status, errors, crypto
start-up). ``only`` restricts the tokens and events to one token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from escd.events import EventRecord
from escd.model import CertificateInfo, enum_word
from escd.tokens import ReaderRecord, TokenRecord, TokenRegistry


def build_report(
    registry: TokenRegistry,
    events: Sequence[EventRecord],
    log_lines: Sequence[str],
    versions: Mapping[str, str],
    config_files: Sequence[str],
    *,
    as_text: bool = False,
    only: str | None = None,
    phone_home: Callable[[str], Mapping[str, object]] | None = None,
    trust: Sequence[Mapping[str, object]] = (),
) -> dict[str, object]:
    """The report as ``a{sv}``-ready plain data (``text`` added when ``as_text``).

    ``only`` is a token id: the report then holds that token and its events alone.
    ``phone_home`` gives a token's stored phone-home answer and the source of each value
    (``report["phone_home"][<id>]``); ``trust`` lists imported CAs and pins.
    """
    tokens = registry.tokens()
    if only is not None:
        tokens = [token for token in tokens if token.token_id == only]
        events = [event for event in events if event.token_id == only]
    report: dict[str, object] = {
        "version": versions.get("escd", ""),
        "versions": dict(versions),
        "pcsc_state": enum_word(registry.pcsc_state),
        "cards": len(registry.tokens()),
        "readers": [_reader(reader) for reader in registry.readers()],
        "tokens": [_token(token, events) for token in tokens],
        "events": [_event(event) for event in events],
        "log": list(log_lines),
        "config_files": list(config_files),
    }
    if phone_home is not None:
        report["phone_home"] = {
            token.token_id: dict(phone_home(token.token_id)) for token in tokens
        }
    if trust:
        report["trust"] = [dict(entry) for entry in trust]
    if as_text:
        report["text"] = render_text(
            registry, events, log_lines, versions, config_files, tokens=tokens
        )
    return report


def _reader(reader: ReaderRecord) -> dict[str, object]:
    return {
        "index": reader.index,
        "name": reader.name,
        "state": enum_word(reader.state),
        "token": reader.token_id or "",
    }


def _token(token: TokenRecord, events: Sequence[EventRecord]) -> dict[str, object]:
    info = token.info
    data: dict[str, object] = {
        "id": token.token_id,
        "cuid": info.cuid or "",
        "reader": token.reader,
        "atr": info.atr.hex(),
        "state": enum_word(info.state),
        "applet": enum_word(info.applet),
        "applet_version": "{}.{}".format(*info.applet_version),
        "pin_tries_left": info.pin_tries_left,
        "phone_home_url": token.phone_home_url or info.phone_home_url,
        "card_phone_home_url": info.phone_home_url,
        "phone_home_state": enum_word(token.phone_home_state),
        "issuer": token.issuer_name,
        "tps_url": token.tps_url,
        "enrollment_ui_url": token.enrollment_ui_url,
        "enrolled_token_browser_url": token.enrolled_token_browser_url,
        "enrolled_token_url": token.enrolled_token_url,
        "ca_chain_url": token.ca_chain_url,
        "token_type": token.token_type,
        "token_name": info.token_name,
        "problem": info.problem,
        "certificates": [_certificate(c) for c in info.certificates],
        "events": [_event(e) for e in events if e.token_id == token.token_id],
    }
    optional: dict[str, object | None] = {
        "msn": info.msn,
        "life_cycle": info.life_cycle,
        "applet_release": _pair(info.applet_release),
        "build_id": f"{info.build_id:08x}" if info.build_id is not None else None,
        "total_memory": info.total_memory,
        "free_memory": info.free_memory,
    }
    data.update({key: value for key, value in optional.items() if value is not None})
    return data


def _certificate(cert: CertificateInfo) -> dict[str, object]:
    return {
        "label": cert.label,
        "subject": cert.subject,
        "issuer": cert.issuer,
        "serial": cert.serial,
        "not_before": _iso(cert.not_before),
        "not_after": _iso(cert.not_after),
        "sha256": cert.sha256,
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _pair(value: tuple[int, int] | None) -> str | None:
    return None if value is None else f"{value[0]}.{value[1]}"


def _event(event: EventRecord) -> dict[str, object]:
    return {
        "time": event.time,
        "kind": str(event.kind),
        "message": event.message,
        "token": event.token_id,
        "reader": event.reader,
    }


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def render_text(
    registry: TokenRegistry,
    events: Sequence[EventRecord],
    log_lines: Sequence[str],
    versions: Mapping[str, str],
    config_files: Sequence[str],
    *,
    tokens: Sequence[TokenRecord] | None = None,
) -> str:
    """A plain-text dump in the spirit of ESC's Advanced Info window, for bug reports."""
    tokens = registry.tokens() if tokens is None else tokens
    lines = [f"escd version: {versions.get('escd', '')}"]
    lines.append(
        "Components: "
        + ", ".join(f"{name} {value}" for name, value in versions.items() if name != "escd")
    )
    lines.append("Configuration files: " + (", ".join(config_files) or "(defaults)"))
    lines.append(f"PC/SC service: {enum_word(registry.pcsc_state)}")
    lines.append(f"Number of cards: {len(registry.tokens())}")
    lines.append("")
    lines.append("Readers:")
    for reader in registry.readers() or []:
        token = f", token {reader.token_id}" if reader.token_id else ""
        lines.append(f"  [{reader.index}] {reader.name}: {enum_word(reader.state)}{token}")
    if not registry.readers():
        lines.append("  (none)")
    lines.append("")
    lines.append("Tokens:")
    for record in tokens:
        lines.extend(_token_text(record))
    if not tokens:
        lines.append("  (none)")
    lines.append("")
    lines.append("Recent events:")
    for event in events:
        where = " ".join(part for part in (event.token_id, event.reader) if part)
        lines.append(f"  {_stamp(event.time)} {event.kind}: {event.message}  {where}".rstrip())
    if log_lines:
        lines.append("")
        lines.append("Recent log:")
        lines.extend(f"  {line}" for line in log_lines)
    return "\n".join(lines) + "\n"


def _token_text(token: TokenRecord) -> list[str]:
    info = token.info
    rows = [
        ("Key ID (CUID)", info.cuid or "(none)"),
        ("Reader", info.reader),
        ("ATR", info.atr.hex().upper()),
        ("Status", info.state.name),
        ("Applet", enum_word(info.applet)),
        ("Smart Card Applet Version", "{}.{}".format(*info.applet_version)),
        ("PIN tries left", "unknown" if info.pin_tries_left < 0 else str(info.pin_tries_left)),
        ("Phone Home URL", token.phone_home_url or info.phone_home_url or "(none)"),
        ("Phone home", enum_word(token.phone_home_state)),
        ("Issuer", token.issuer_name or "(unknown)"),
        ("TPS URL", token.tps_url or "(unknown)"),
        ("TPS Enrollment UI URL", token.enrollment_ui_url or "(none)"),
        ("Token type", token.token_type or "(unknown)"),
    ]
    if token.enrolled_token_browser_url:
        rows.append(("Enrolled token browser URL", token.enrolled_token_browser_url))
    if info.life_cycle is not None:
        rows.append(("Life cycle", f"0x{info.life_cycle:02X}"))
    if info.problem:
        rows.append(("Problem", info.problem))
    rows.append(("Certificates", str(len(info.certificates))))
    lines = [f"  {token.token_id}"] + [f"    {name}: {value}" for name, value in rows]
    for number, cert in enumerate(info.certificates, 1):
        lines.append(f"    Certificate {number}: {cert.label or '(no label)'}")
        lines.extend(
            f"      {name}: {value}"
            for name, value in (
                ("Subject", cert.subject),
                ("Issuer", cert.issuer),
                ("Serial", cert.serial),
                ("Valid from", _iso(cert.not_before)),
                ("Valid until", _iso(cert.not_after)),
                ("SHA-256", cert.sha256),
            )
        )
    return lines
