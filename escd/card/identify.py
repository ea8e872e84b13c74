# SPDX-License-Identifier: GPL-2.0-or-later
"""Token identification: what is this card, in ESC's terms.

Owns the rule that turns card answers into a ``TokenInfo``: SELECT the CoolKey applet;
without it, a card manager with a CPLC makes ``NO_APPLET`` and anything else
``UNKNOWN``; with it, GET LIFE CYCLE decides (``0x0F`` is ``ENROLLED``, every other value
``UNINITIALIZED``, a protocol major below 1 is ESC's "AppletNotFound"); then the
details: status, build ID, Phone Home URL, PIN tries, the certificates in ``z0``, and
the CUID from the CPLC (or the ``z0`` header).

Pure and synchronous: it only talks through the ``CardConnection`` it is given, from
the caller's worker thread, inside the caller's PC/SC transaction. It never logs and
never lets a card's answers raise: a card that is not a CoolKey token or answers
garbage comes back as ``UNKNOWN`` with ``problem`` set. Only the connection failing
(``CardRemovedError``, ``PcscUnavailableError``) propagates. It sends no PIN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TypeVar

from escd.card.coolkey import CoolKeySession, Cplc
from escd.card.objects import (
    AttributeType,
    CertificateObject,
    ObjectEntry,
    certificate_info,
    decode_combined_object,
    decode_separate_object,
    object_index,
    object_name,
)
from escd.card.transport import CardConnection
from escd.errors import ApduError, CardError, CardRemovedError, MalformedResponseError
from escd.model import AppletKind, CertificateInfo, TokenInfo, TokenState

T = TypeVar("T")


@dataclass(slots=True)
class _Outcome:
    """What one call of ``identify`` has learned so far (local to that call)."""

    info: TokenInfo
    problems: list[str] = field(default_factory=list)

    def update(self, **changes: Any) -> None:
        self.info = replace(self.info, **changes)

    def result(self) -> TokenInfo:
        return replace(self.info, problem="; ".join(self.problems))


def _attempt(action: Callable[[], T]) -> T | CardError:
    """Run one card step; a card error is returned, a removed card is raised."""
    try:
        return action()
    except CardRemovedError:
        raise
    except CardError as err:
        return err


def identify(connection: CardConnection, reader: str) -> TokenInfo:
    """Read a card and classify it; see the module docstring for the rule."""
    outcome = _Outcome(TokenInfo(reader=reader, atr=connection.atr, state=TokenState.UNKNOWN))
    session = CoolKeySession(connection)

    selected = _attempt(session.select_applet)
    if isinstance(selected, ApduError | MalformedResponseError):
        _identify_without_applet(session, outcome)
        return outcome.result()
    if isinstance(selected, CardError):
        # The exchange itself failed (a mute card, a reader error): nothing was answered.
        outcome.problems.append(f"the card could not be read ({selected.message})")
        return outcome.result()

    life = _attempt(session.read_life_cycle)
    if isinstance(life, CardError):
        # Something answers the CoolKey AID but not its protocol: ESC says AppletNotFound,
        # escd keeps it apart as UNKNOWN.
        outcome.update(applet=AppletKind.OTHER)
        outcome.problems.append(f"the applet does not answer GET LIFE CYCLE ({life.message})")
        _read_cuid(session, outcome, reselect=False)
        return outcome.result()

    outcome.update(life_cycle=life.life_cycle, applet_version=life.protocol_version)
    if life.protocol_major < 1:
        # Pre-1.0 (MUSCLE-era) applets: ESC's HAS_APPLET needs firmware major >= 1 (ESC
        # CoolKeyHandler.cpp, MapGetFlags).
        outcome.update(state=TokenState.NO_APPLET, applet=AppletKind.OTHER)
        outcome.problems.append(
            f"applet protocol {life.protocol_major}.{life.protocol_minor} is older than 1.0"
        )
        _read_cuid(session, outcome, reselect=True)
        return outcome.result()

    probe = _attempt(session.is_coolkey)
    outcome.update(
        state=TokenState.ENROLLED if life.personalized else TokenState.UNINITIALIZED,
        applet=AppletKind.COOLKEY if probe is True else AppletKind.OTHER,
    )
    _read_details(session, outcome)
    z0_cuid = _read_certificates(session, outcome) if life.personalized else None
    _read_cuid(session, outcome, reselect=True, z0_cuid=z0_cuid)
    return outcome.result()


def _identify_without_applet(session: CoolKeySession, outcome: _Outcome) -> None:
    cplc = _attempt(session.read_cplc)
    if isinstance(cplc, CardError):
        outcome.problems.append(
            f"no CoolKey applet and no GlobalPlatform CPLC ({cplc.message}): not a CoolKey token"
        )
        return
    outcome.update(state=TokenState.NO_APPLET, cuid=cplc.cuid_hex, msn=cplc.msn.hex())


def _read_details(session: CoolKeySession, outcome: _Outcome) -> None:
    status = _attempt(session.read_status)
    if isinstance(status, CardError):
        outcome.problems.append(f"GET STATUS failed ({status.message})")
    else:
        outcome.update(
            applet_release=status.applet_version,
            total_memory=status.total_memory,
            free_memory=status.free_memory,
        )
    build_id = _attempt(session.read_build_id)
    if not isinstance(build_id, CardError):
        outcome.update(build_id=build_id)
    issuer = _attempt(session.read_issuer_info)
    if isinstance(issuer, CardError):
        outcome.problems.append(f"GET ISSUER INFO failed ({issuer.message})")
    else:
        outcome.update(phone_home_url=issuer.phone_home_url)
    # GET PIN REMAINING TRIES is optional (only CoolKey's CardEdge.java has it): no answer
    # means "unknown", not a fault.
    tries = _attempt(session.read_pin_tries)
    if isinstance(tries, int):
        outcome.update(pin_tries_left=tries)


def _read_certificates(session: CoolKeySession, outcome: _Outcome) -> bytes | None:
    """Token name and certificates from ``z0`` (or separate ``C<n>`` objects); z0's CUID."""
    entries = _attempt(session.list_objects)
    if isinstance(entries, CardError):
        outcome.problems.append(f"LIST OBJECTS failed ({entries.message})")
        return None
    raw = _attempt(partial(session.read_combined_object, entries))
    if isinstance(raw, CardError):
        outcome.problems.append(f"reading z0 failed ({raw.message})")
        return None
    if raw is None:
        _read_separate_certificates(session, outcome, entries)
        return None
    combined = _attempt(partial(decode_combined_object, raw))
    if isinstance(combined, CardError):
        outcome.problems.append(f"z0 is malformed ({combined.message})")
        return None
    outcome.update(
        token_name=combined.token_name,
        certificates=_certificate_infos(combined.certificates, outcome),
    )
    return combined.cuid


def _read_separate_certificates(
    session: CoolKeySession, outcome: _Outcome, entries: list[ObjectEntry]
) -> None:
    """Older tokens keep each certificate's DER in ``C<n>`` and its label in ``c<n>``."""
    by_id = {entry.object_id: entry for entry in entries}
    found: list[CertificateObject] = []
    for entry in entries:
        if entry.object_id[:1] != b"C" or entry.size == 0:
            continue
        der = _attempt(partial(session.read_object, entry.object_id, entry.size))
        if isinstance(der, CardError):
            outcome.problems.append(f"reading {entry.name} failed ({der.message})")
            continue
        label = ""
        attributes = by_id.get(b"c" + entry.object_id[1:])
        if attributes is not None and attributes.size:
            label = _separate_label(session, attributes)
        index = object_index(entry.object_id) or 0
        found.append(CertificateObject(entry.object_id, index & 0x0F, label, der))
    outcome.update(certificates=_certificate_infos(tuple(found), outcome))


def _separate_label(session: CoolKeySession, entry: ObjectEntry) -> str:
    raw = _attempt(partial(session.read_object, entry.object_id, entry.size))
    if isinstance(raw, CardError):
        return ""
    record = _attempt(partial(decode_separate_object, raw))
    if isinstance(record, CardError):
        return ""
    label = record.bytes_attribute(AttributeType.LABEL)
    return label.decode("utf-8", errors="replace") if label else ""


def _certificate_infos(
    certificates: tuple[CertificateObject, ...], outcome: _Outcome
) -> tuple[CertificateInfo, ...]:
    infos: list[CertificateInfo] = []
    for certificate in certificates:
        info = _attempt(partial(certificate_info, certificate.der, certificate.label))
        if isinstance(info, CardError):
            outcome.problems.append(
                f"certificate {object_name(certificate.object_id)} could not be parsed"
            )
        else:
            infos.append(info)
    return tuple(infos)


def _read_cuid(
    session: CoolKeySession, outcome: _Outcome, *, reselect: bool, z0_cuid: bytes | None = None
) -> None:
    """CUID and MSN from the CPLC; the ``z0`` header's CUID when there is no CPLC."""
    cplc = _attempt(session.read_cplc)
    if reselect:
        # Leave the applet selected for whoever uses the card next, as libckyapplet does.
        _attempt(session.select_applet)
    if isinstance(cplc, Cplc):
        outcome.update(cuid=cplc.cuid_hex, msn=cplc.msn.hex())
        if z0_cuid is not None and z0_cuid != cplc.cuid:
            outcome.problems.append(f"z0 names CUID {z0_cuid.hex()}, the CPLC {cplc.cuid_hex}")
    elif z0_cuid is not None:
        outcome.update(cuid=z0_cuid.hex())
    else:
        outcome.problems.append(f"no CUID: GET DATA CPLC failed ({cplc.message})")
