# SPDX-License-Identifier: GPL-2.0-or-later
"""How ``escctl`` prints: tables and key/value blocks for people, JSON for programs.

Pure formatting of the client's views; no D-Bus, no I/O besides returning strings.
"""

from __future__ import annotations

import json
import time
from typing import Any

from escd.ctl.client import JobView, ReaderView, Snapshot, TokenView, WatchEvent
from escd.model import enum_word


def token_dict(token: TokenView) -> dict[str, Any]:
    return {
        "id": token.token_id,
        "path": token.path,
        "cuid": token.cuid,
        "state": enum_word(token.state),
        "reader": token.reader_name,
        "atr": token.atr,
        "applet": enum_word(token.applet),
        "applet_version": "{}.{}".format(*token.applet_version),
        "pin_tries_left": token.pin_tries_left,
        "phone_home_url": token.phone_home_url,
        "phone_home_state": enum_word(token.phone_home_state),
        "issuer_name": token.issuer_name,
        "tps_url": token.tps_url,
        "enrollment_ui_url": token.enrollment_ui_url,
        "enrolled_token_url": token.enrolled_token_url,
        "ca_chain_url": token.ca_chain_url,
        "token_type": token.token_type,
        "certificates": [dict(cert) for cert in token.certificates],
    }


def reader_dict(reader: ReaderView) -> dict[str, Any]:
    return {"path": reader.path, "name": reader.name, "state": enum_word(reader.state)}


def list_json(snapshot: Snapshot) -> str:
    return json.dumps(
        {
            "pcsc_state": enum_word(snapshot.manager.pcsc_state),
            "readers": [reader_dict(r) for r in snapshot.readers.values()],
            "tokens": [token_dict(t) for t in snapshot.tokens.values()],
        },
        indent=2,
    )


def list_text(snapshot: Snapshot) -> str:
    """One line per token: id, state, applet version, reader."""
    rows = [("TOKEN", "STATE", "APPLET", "READER")]
    for token in snapshot.tokens.values():
        applet = "-" if token.applet_version == (0, 0) else "{}.{}".format(*token.applet_version)
        rows.append((token.token_id, enum_word(token.state), applet, token.reader_name))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def info_json(token: TokenView) -> str:
    return json.dumps(token_dict(token), indent=2)


def info_text(token: TokenView) -> str:
    tries = "unknown" if token.pin_tries_left < 0 else str(token.pin_tries_left)
    rows = [
        ("Token", token.token_id),
        ("CUID", token.cuid or "(none)"),
        ("State", enum_word(token.state)),
        ("Reader", token.reader_name),
        ("ATR", token.atr),
        ("Applet", enum_word(token.applet)),
        ("Applet version", "{}.{}".format(*token.applet_version)),
        ("PIN tries left", tries),
        ("Phone Home URL", token.phone_home_url or "(none)"),
        ("Phone home", enum_word(token.phone_home_state)),
        ("Issuer", token.issuer_name or "(unknown)"),
        ("TPS URL", token.tps_url or "(none)"),
        ("Enrollment UI", token.enrollment_ui_url or "(none)"),
        ("Enrolled URL", token.enrolled_token_url or "(none)"),
        ("Token type", token.token_type or "(none)"),
        ("Certificates", str(len(token.certificates))),
    ]
    if token.ca_chain_url:
        rows.insert(-1, ("CA chain URL", token.ca_chain_url))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name + ':':<{width + 1}} {value}" for name, value in rows]
    for cert in token.certificates:
        not_after = time.strftime("%Y-%m-%d", time.gmtime(int(cert.get("not_after", 0))))
        lines.append(f"  - {cert.get('subject', '')} (until {not_after})")
    return "\n".join(lines)


def watch_dict(event: WatchEvent) -> dict[str, Any]:
    data: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event.kind}
    if event.token is not None:
        data["token"] = token_dict(event.token)
    if event.reader is not None:
        data["reader"] = reader_dict(event.reader)
    if event.pcsc_state is not None:
        data["pcsc_state"] = enum_word(event.pcsc_state)
    if event.changed:
        data["changed"] = sorted(event.changed)
    return data


def watch_text(event: WatchEvent) -> str:
    """One line per event: time, what happened, to what."""
    stamp = time.strftime("%H:%M:%S")
    parts = [stamp, f"{event.kind:<14}"]
    token, reader = event.token, event.reader
    if event.kind in ("inserted", "removed") and token is not None:
        parts += [token.token_id, enum_word(token.state), repr(token.reader_name)]
    elif event.kind == "changed" and token is not None:
        parts.append(token.token_id)
        parts += [f"{key}={_changed_value(token, key)}" for key in sorted(event.changed)]
    elif reader is not None:
        parts += [repr(reader.name), enum_word(reader.state)]
    elif event.pcsc_state is not None:
        parts.append(enum_word(event.pcsc_state))
    return " ".join(parts).rstrip()


def _changed_value(token: TokenView, prop: str) -> str:
    values: dict[str, str] = {
        "State": enum_word(token.state),
        "Applet": enum_word(token.applet),
        "AppletVersion": "{}.{}".format(*token.applet_version),
        "PinTriesLeft": str(token.pin_tries_left),
        "Reader": repr(token.reader_name),
        "PhoneHomeUrl": token.phone_home_url,
        "PhoneHomeState": enum_word(token.phone_home_state),
        "IssuerName": token.issuer_name,
        "TpsUrl": token.tps_url,
        "TokenType": token.token_type,
        "Cuid": token.cuid,
        "Atr": token.atr,
    }
    return values.get(prop, "(changed)")


def json_line(event: WatchEvent) -> str:
    return json.dumps(watch_dict(event))


# -- operations -------------------------------------------------------------------------

_JOB_STATES = ("pending", "running", "waiting for input", "canceling", "succeeded", "failed")


def job_state_name(state: int) -> str:
    return _JOB_STATES[state] if 0 <= state < len(_JOB_STATES) else "canceled"


def progress_line(view: JobView, width: int = 24) -> str:
    """``[#########...............]  38%  PROGRESS_KEY_GENERATION`` (or the job's state)."""
    if not view.progress_valid:
        return f"[{'.' * width}]   -   {job_state_name(view.state)}"
    done = round(max(0.0, min(view.progress, 1.0)) * width)
    percent = round(view.progress * 100)
    stage = view.tps_task or f"stage {view.tps_stage}"
    return f"[{'#' * done}{'.' * (width - done)}] {percent:3d}%  {stage}"


def job_failure(operation: str, result: dict[str, Any]) -> str:
    """Why a job failed: the error name, escd's message and the status with its source."""
    error = str(result.get("error", "")) or "unknown error"
    message = str(result.get("message", ""))
    source = str(result.get("status_source", ""))
    status = result.get("tps_status", "")
    where = "TPS status" if source == "tps" else f"{source or 'local'} status"
    text = f"{operation} failed: {error}"
    if message:
        text += f": {message}"
    return f"{text} ({where} {status})"
