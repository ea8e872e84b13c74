# SPDX-License-Identifier: GPL-2.0-or-later
"""A whole simulated CoolKey card: power, APDU dispatch, persistence, and ready-made cards.

``SimulatedCard`` is what a reader hosts (``escd.sim.vpcd`` puts it into a real pcscd,
``escd.sim.reader`` into the in-process backend): ``transmit(apdu) -> response`` with
the ATR, power-on/reset semantics and the failure knobs; it composes the card manager
(``escd.sim.gp``) and the CoolKey applet (``escd.sim.applet``) over one
``CardState`` (``escd.sim.state``). With a ``path`` the state is written atomically
after every command that changed it, so a card survives restarts.

Factories for the three states a token can be in (ESC's Unformatted, Formatted, Enrolled):

* ``blank_card()``      no CoolKey package or instance (the ISD answers everything);
* ``formatted_card()``  applet installed, life cycle 07, no objects, optional Phone Home URL;
* ``enrolled_card()``   life cycle 0F, PIN 0 set, an on-card RSA key pair and a signing
  certificate from ``escd.sim.ca`` (a throw-away CA unless given one) in a real ``z0``
  (built with ``escd.card.objects``), whose object version follows its content.

Must not: log APDU data, PINs or keys (only ``describe_apdu``), or sleep other than the
"slow card" knob.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from escd.card.apdu import CommandApdu, StatusWord
from escd.card.coolkey import IssuerInfo
from escd.card.objects import COMBINED_OBJECT_ID, TokenCertificate, build_token_objects
from escd.errors import MalformedApduError
from escd.log import describe_apdu
from escd.sim.applet import CoolKeyApplet
from escd.sim.applet_keys import rsa_key_slots
from escd.sim.ca import CertificateAuthority, parse_dn
from escd.sim.command import SwError
from escd.sim.gp import CardManager
from escd.sim.loadfile import SHIPPED_FILE_SIZE, LoadFile
from escd.sim.scp import ScpProtocol, StaticKeys
from escd.sim.state import (
    ANYONE_ACL,
    RA_ACL,
    AppletState,
    CardContext,
    CardObject,
    CardState,
    FailureKnobs,
    LifeCycle,
    PackageState,
    Pin,
    RuntimeState,
    Selected,
)
from escd.sim.tps_config import KeyUse
from escd.statefile import write_json_atomic

logger = logging.getLogger(__name__)

#: Default key versions: SCP01 cards report key info 01 01, SCP02 cards FF 02, as GP
#: 2.1.1 cards with the developer keys do; the TKS takes key info 01 01 and key version
#: FF for the undiversified developer keys (Dogtag SecureChannelProtocol.java).
DEFAULT_KEY_VERSION = {ScpProtocol.SCP01: 0x01, ScpProtocol.SCP02: 0xFF}
DEFAULT_PIN = "1234"
#: What the TPS gives CREATE PIN (``pin.maxRetries=127`` in Dogtag's TPS CS.cfg).
DEFAULT_PIN_TRIES = 0x7F


class SimulatedCard:
    """One simulated card. ``transmit`` is thread-safe; state changes are saved to ``path``."""

    def __init__(
        self, state: CardState, *, path: Path | None = None, knobs: FailureKnobs | None = None
    ) -> None:
        self._context = CardContext(state, RuntimeState(), knobs or FailureKnobs())
        self._manager = CardManager(self._context)
        self._applet = CoolKeyApplet(self._context, self._manager)
        self._lock = threading.RLock()
        self.path = path
        self.powered = False
        self._saved: str | None = None
        if path is not None:
            self.save()

    @classmethod
    def load(cls, path: Path, *, knobs: FailureKnobs | None = None) -> SimulatedCard:
        """A card from its JSON file (``ValueError`` if the file is not a card)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            state = CardState.from_json(data)
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a simulated card file: {err}") from err
        card = cls(state, knobs=knobs)
        # The file holds this state already: take it as saved rather than write it again.
        card.path = path
        card._saved = json.dumps(state.to_json(), sort_keys=True)
        return card

    @classmethod
    def open(
        cls, path: Path, create: CardState | None = None, *, knobs: FailureKnobs | None = None
    ) -> SimulatedCard:
        """The card in ``path`` if it exists, else ``create`` saved there."""
        if path.exists():
            return cls.load(path, knobs=knobs)
        if create is None:
            raise FileNotFoundError(path)
        return cls(create, path=path, knobs=knobs)

    @property
    def state(self) -> CardState:
        return self._context.state

    @property
    def runtime(self) -> RuntimeState:
        return self._context.runtime

    @property
    def knobs(self) -> FailureKnobs:
        return self._context.knobs

    @property
    def atr(self) -> bytes:
        return self._context.state.atr

    # -- power -----------------------------------------------------------------------------

    def power_on(self) -> None:
        """Cold start: the ISD is selected, no channel, no login, as on a real GP card."""
        with self._lock:
            self._context.runtime.clear()
            self.powered = True

    def reset(self) -> None:
        """Warm reset: the same RAM loss as a power cycle."""
        self.power_on()

    def power_off(self) -> None:
        with self._lock:
            self._context.runtime.clear()
            self.powered = False

    # -- APDUs -----------------------------------------------------------------------------

    def transmit(self, apdu: bytes) -> bytes:
        """Answer one command APDU (response data + SW1 SW2). Never raises."""
        with self._lock:
            if self._context.knobs.apdu_delay > 0:
                # The one deliberate delay: the "slow card" knob, for timeout tests.
                time.sleep(self._context.knobs.apdu_delay)
            response = self._answer(apdu)
            self._persist_if_changed()
            return response

    def _answer(self, apdu: bytes) -> bytes:
        try:
            command = CommandApdu.decode(apdu)
        except MalformedApduError:
            return StatusWord.WRONG_LENGTH.to_bytes(2, "big")
        try:
            data = self._dispatch(command)
        except SwError as status:
            return status.sw.to_bytes(2, "big")
        except Exception:
            # A bug in the simulator must still get an answer, or pcscd's slot hangs.
            logger.exception("simulated card failed on %s", describe_apdu(apdu))
            return StatusWord.NO_PRECISE_DIAGNOSIS.to_bytes(2, "big")
        return data + StatusWord.SUCCESS.to_bytes(2, "big")

    def _dispatch(self, command: CommandApdu) -> bytes:
        runtime, state = self._context.runtime, self._context.state
        if command.cla == 0x00 and command.ins == 0xA4 and command.p1 == 0x04:
            return self._manager.select(command)
        if runtime.selected is Selected.COOLKEY and state.applet is not None:
            return self._applet.process(command)
        runtime.selected = Selected.ISD
        return self._manager.process(command)

    # -- persistence -----------------------------------------------------------------------

    def save(self, path: Path | None = None) -> None:
        """Write the card state (atomically, mode 0600) to ``path`` or the card's own path."""
        with self._lock:
            target = path or self.path
            if target is None:
                raise ValueError("no file to save the card to")
            data = self._context.state.to_json()
            write_json_atomic(target, data)
            if target == self.path:
                self._saved = json.dumps(data, sort_keys=True)

    def _persist_if_changed(self) -> None:
        # Comparing the serialised state is simpler and safer than tracking every
        # mutation in the handlers; it costs a few tens of microseconds per APDU.
        if self.path is None:
            return
        data = self._context.state.to_json()
        text = json.dumps(data, sort_keys=True)
        if text != self._saved:
            write_json_atomic(self.path, data)
            self._saved = text


# -- factories ----------------------------------------------------------------------------


def random_cuid() -> bytes:
    """A CUID of an "Axalto" card (fabricator 4090, IC type 7001) with random batch/serial."""
    return bytes.fromhex("40907001") + os.urandom(6)


def blank_card(
    *,
    cuid: bytes | None = None,
    msn: bytes | None = None,
    protocol: ScpProtocol = ScpProtocol.SCP01,
    keys: StaticKeys | None = None,
    key_version: int | None = None,
) -> CardState:
    """A GP card with no CoolKey package or instance; developer keys unless given."""
    cuid = cuid if cuid is not None else random_cuid()
    version = key_version if key_version is not None else DEFAULT_KEY_VERSION[protocol]
    return CardState(
        cuid=cuid,
        msn=msn if msn is not None else cuid[6:10],
        protocol=protocol,
        key_version=version,
        key_sets={version: keys or StaticKeys.developer()},
    )


def formatted_card(
    *,
    phone_home_url: str | None = None,
    load_file: LoadFile | None = None,
    cuid: bytes | None = None,
    msn: bytes | None = None,
    protocol: ScpProtocol = ScpProtocol.SCP01,
    keys: StaticKeys | None = None,
    key_version: int | None = None,
) -> CardState:
    """A card after a TPS format: the applet in life cycle 07, no PINs, keys or objects."""
    state = blank_card(cuid=cuid, msn=msn, protocol=protocol, keys=keys, key_version=key_version)
    load_file = load_file or LoadFile(size=SHIPPED_FILE_SIZE)
    state.packages.append(
        PackageState(
            load_file.package_aid,
            len(load_file.encode()),
            load_file.applet_major,
            load_file.applet_minor,
            load_file.build_id,
        )
    )
    state.applet = AppletState(
        life_cycle=LifeCycle.SELECTABLE,
        applet_major=load_file.applet_major,
        applet_minor=load_file.applet_minor,
        build_id=load_file.build_id,
        package_aid=load_file.package_aid,
        issuer_info=IssuerInfo.from_url(phone_home_url or "").raw,
    )
    return state


def enrolled_card(
    *,
    subject: str = "CN=Test User",
    pin: str = DEFAULT_PIN,
    pin_tries: int = DEFAULT_PIN_TRIES,
    key_bits: int = 2048,
    token_name: str | None = None,
    label: str | None = None,
    ca: CertificateAuthority | None = None,
    z0_version: int | None = None,
    compress: bool = True,
    phone_home_url: str | None = None,
    load_file: LoadFile | None = None,
    cuid: bytes | None = None,
    msn: bytes | None = None,
    protocol: ScpProtocol = ScpProtocol.SCP01,
    keys: StaticKeys | None = None,
    key_version: int | None = None,
) -> CardState:
    """An enrolled token: one certificate ``c0`` with its key pair in slots 0 (private)
    and 1 (public), records ``c0``/``k1``/``k0`` in a ``z0`` read by anyone.

    ``token_name`` and ``label`` default to the subject's CN and ``"signing key for
    <CN>"`` (Dogtag's patterns). ``z0_version`` defaults to a value derived from the z0
    content, so different content never reuses a version libcoolkeypk11 has cached.
    """
    state = formatted_card(
        phone_home_url=phone_home_url,
        load_file=load_file,
        cuid=cuid,
        msn=msn,
        protocol=protocol,
        keys=keys,
        key_version=key_version,
    )
    applet = state.applet
    assert applet is not None
    ca = ca or CertificateAuthority.generate()
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    certificate = ca.issue(key.public_key(), parse_dn(subject), KeyUse.SIGNING)
    der = certificate.public_bytes(serialization.Encoding.DER)
    common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(common_names[0].value) if common_names else subject
    name = token_name if token_name is not None else cn
    label = label if label is not None else f"signing key for {cn}"
    token_certificate = TokenCertificate(0, label, der, key_bits)
    if z0_version is None:
        content = build_token_objects(name, state.cuid, 0, [token_certificate]).encode()
        z0_version = int.from_bytes(hashlib.sha256(content).digest()[:2], "big")
    z0 = build_token_objects(
        name, state.cuid, z0_version, [token_certificate], compress=compress
    ).encode()
    applet.life_cycle = LifeCycle.PERSONALIZED
    applet.pins[0] = Pin(pin.encode("utf-8"), pin_tries, pin_tries)
    applet.pin_enabled = True
    # The private key in slot 0 is used by PIN 0's identity.
    applet.keys[0], applet.keys[1] = rsa_key_slots(key, 0, 1, 1 << 0)
    applet.objects.insert(
        0, CardObject(COMBINED_OBJECT_ID, bytearray(z0), ANYONE_ACL, RA_ACL, RA_ACL)
    )
    return state
