# SPDX-License-Identifier: GPL-2.0-or-later
"""The diagnostics report behind ``Manager.GetDiagnostics``: data, and an ESC-style text dump.

Pure: it reads the registry, the event ring and values the daemon collected (versions,
log lines) and returns plain data; the D-Bus layer types it. Secrets cannot appear:
the registry holds none, and log lines are redacted where they are written.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from enum import Enum

from escd.events import EventRecord
from escd.model import TokenInfo
from escd.tokens import ReaderRecord, TokenRecord, TokenRegistry


def _name(value: Enum) -> str:
    return value.name.lower().replace("_", "-")


def build_report(
    registry: TokenRegistry,
    events: Sequence[EventRecord],
    log_lines: Sequence[str],
    versions: Mapping[str, str],
    config_files: Sequence[str],
    *,
    as_text: bool = False,
) -> dict[str, object]:
    """The report as ``a{sv}``-ready plain data (``text`` added when ``as_text``)."""
    report: dict[str, object] = {
        "version": versions.get("escd", ""),
        "versions": dict(versions),
        "pcsc_state": _name(registry.pcsc_state),
        "readers": [_reader(reader) for reader in registry.readers()],
        "tokens": [_token(token) for token in registry.tokens()],
        "events": [_event(event) for event in events],
        "log": list(log_lines),
        "config_files": list(config_files),
    }
    if as_text:
        report["text"] = render_text(registry, events, log_lines, versions, config_files)
    return report


def _reader(reader: ReaderRecord) -> dict[str, object]:
    return {
        "index": reader.index,
        "name": reader.name,
        "state": _name(reader.state),
        "token": reader.token_id or "",
    }


def _token(token: TokenRecord) -> dict[str, object]:
    info = token.info
    data: dict[str, object] = {
        "id": token.token_id,
        "cuid": info.cuid or "",
        "reader": token.reader,
        "atr": info.atr.hex(),
        "state": _name(info.state),
        "applet": _name(info.applet),
        "applet_version": "{}.{}".format(*info.applet_version),
        "pin_tries_left": info.pin_tries_left,
        "phone_home_url": info.phone_home_url,
        "token_name": info.token_name,
        "problem": info.problem,
        "certificates": [
            {"subject": c.subject, "issuer": c.issuer, "serial": c.serial, "sha256": c.sha256}
            for c in info.certificates
        ],
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
) -> str:
    """A plain-text dump in the spirit of ESC's Advanced Info window."""
    lines = [f"escd {versions.get('escd', '')}"]
    lines.append(
        "Components: "
        + ", ".join(f"{name} {value}" for name, value in versions.items() if name != "escd")
    )
    lines.append("Configuration files: " + (", ".join(config_files) or "(defaults)"))
    lines.append(f"PC/SC service: {_name(registry.pcsc_state)}")
    lines.append("")
    lines.append("Readers:")
    for reader in registry.readers() or []:
        token = f", token {reader.token_id}" if reader.token_id else ""
        lines.append(f"  [{reader.index}] {reader.name}: {_name(reader.state)}{token}")
    if not registry.readers():
        lines.append("  (none)")
    lines.append("")
    lines.append("Tokens:")
    for record in registry.tokens():
        lines.extend(_token_text(record.token_id, record.info))
    if not registry.tokens():
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


def _token_text(token_id: str, info: TokenInfo) -> list[str]:
    rows = [
        ("Key ID (CUID)", info.cuid or "(none)"),
        ("Reader", info.reader),
        ("ATR", info.atr.hex(" ").upper()),
        ("State", _name(info.state)),
        ("Applet", _name(info.applet)),
        ("Smart Card Applet Version", "{}.{}".format(*info.applet_version)),
        ("PIN tries left", "unknown" if info.pin_tries_left < 0 else str(info.pin_tries_left)),
        ("Phone Home URL", info.phone_home_url or "(none)"),
        ("Certificates", str(len(info.certificates))),
    ]
    if info.life_cycle is not None:
        rows.append(("Life cycle", f"0x{info.life_cycle:02X}"))
    if info.problem:
        rows.append(("Problem", info.problem))
    return [f"  {token_id}"] + [f"    {name}: {value}" for name, value in rows]
