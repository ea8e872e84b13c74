# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated card's data: what survives power-off (``CardState``) and what does not.

Pure data and its JSON form; no command handling (``escd.sim.gp`` and
``escd.sim.applet`` own that) and no file I/O (``escd.sim.card`` writes the JSON).

* ``CardState``: ATR, CUID/MSN (and the CPLC built from them), the GP key sets and
  their versions, the SCP mode and SCP02 sequence counter, the non-volatile budget,
  loaded packages, and the installed CoolKey instance (``AppletState``: life cycle,
  versions, issuer info, PINs, key slots, objects with ACLs and a memory budget).
* ``RuntimeState``: RAM that a power-on or reset clears (selection, secure channel,
  login nonce, list cursors, the I/O buffer, a LOAD in progress).

Values kept here are secrets of a *simulated* card (PINs, private keys, static keys);
the JSON file is written with mode 0600 and nothing here is ever logged.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from enum import IntEnum, unique
from typing import Any

from escd.card.coolkey import ISSUER_INFO_LENGTH
from escd.card.coolkey import LifeCycle as LifeCycle  # the card's life cycle, re-exported
from escd.sim.loadfile import (
    COOLKEY_INSTANCE_AID,
    COOLKEY_PACKAGE_AID,
    SHIPPED_APPLET_VERSION,
    SHIPPED_BUILD_ID,
)
from escd.sim.scp import ScpProtocol, SecureChannelCard, StaticKeys

#: CoolKey "production" ATR: libcoolkeypk11 treats it as a CoolKey even without the
#: applet (ATR3 in CoolKey slot.cpp), no OpenSC driver claims it by ATR, and it
#: announces T=0.
COOLKEY_ATR = bytes.fromhex("3B769400 00FF6276 010000")
FORMAT_VERSION = 1
MAX_PINS = 8
MAX_KEYS = 24
IOBUF_SIZE = 900
#: Default applet object heap (``CardEdge`` ``mem_size``; the TPS installs with C9 ... 1388).
DEFAULT_APPLET_MEMORY = 5000
#: ObjectManager header (class, id, size, ACLs, next) plus the allocator's 2-byte length.
OBJECT_OVERHEAD = 16
#: Non-volatile memory for packages and instances (a 64K card, roughly).
DEFAULT_NV_MEMORY = 64 * 1024
#: Instance size the TPS asks for (``channel.instanceSize``, INSTALL parameter C8).
DEFAULT_INSTANCE_SIZE = 18000

# Identities (CardEdge.java): bit n = PIN n, RA = the secure channel, DEFAULT = anyone
# presenting the all-zero nonce.
RA_ACL = 1 << 14
DEFAULT_ACL = 1 << 15
ANYONE_ACL = 0xFFFF
NOBODY_ACL = 0x0000


@unique
class KeyType(IntEnum):
    """CardEdge key types (LIST KEYS byte 1)."""

    RSA_PUBLIC = 1
    RSA_PRIVATE = 2
    RSA_PRIVATE_CRT = 3


@unique
class Selected(IntEnum):
    ISD = 0
    COOLKEY = 1


@dataclass
class Pin:
    value: bytes
    max_tries: int
    tries_left: int

    def __repr__(self) -> str:
        return f"Pin(<redacted>, tries {self.tries_left}/{self.max_tries})"


@dataclass
class KeySlot:
    """An RSA key in a CardEdge key slot: SubjectPublicKeyInfo or PKCS#8 DER."""

    key_type: KeyType
    size: int
    der: bytes
    mate: int
    read_acl: int
    write_acl: int
    use_acl: int

    def __repr__(self) -> str:
        return f"KeySlot({self.key_type.name}, {self.size} bits, mate {self.mate})"


@dataclass
class CardObject:
    """A CoolKey object: 4-byte ID, contents, and read/write/delete ACLs."""

    object_id: bytes
    data: bytearray
    read_acl: int = ANYONE_ACL
    write_acl: int = RA_ACL
    delete_acl: int = RA_ACL

    @property
    def cost(self) -> int:
        return len(self.data) + OBJECT_OVERHEAD


@dataclass
class AppletState:
    """An installed CoolKey applet instance (``CardEdge`` persistent fields)."""

    life_cycle: int = LifeCycle.SELECTABLE
    applet_major: int = SHIPPED_APPLET_VERSION[0]
    applet_minor: int = SHIPPED_APPLET_VERSION[1]
    build_id: int = SHIPPED_BUILD_ID
    instance_aid: bytes = COOLKEY_INSTANCE_AID
    package_aid: bytes = COOLKEY_PACKAGE_AID
    instance_size: int = DEFAULT_INSTANCE_SIZE
    memory_size: int = DEFAULT_APPLET_MEMORY
    issuer_info: bytes = bytes(ISSUER_INFO_LENGTH)
    create_object_acl: int = RA_ACL
    create_key_acl: int = RA_ACL
    create_pin_acl: int = RA_ACL
    enable_acl_change: int = 0
    pin_enabled: bool = False
    pins: dict[int, Pin] = field(default_factory=dict)
    keys: dict[int, KeySlot] = field(default_factory=dict)
    #: Newest first, as the applet's linked list returns them.
    objects: list[CardObject] = field(default_factory=list)

    @property
    def free_memory(self) -> int:
        return self.memory_size - sum(obj.cost for obj in self.objects)

    @property
    def is_writable(self) -> bool:
        # CardEdge: isWritable = 2 only if the built-in ACLs let a PIN create objects and keys.
        return bool(self.create_object_acl & 0xFF) and bool(self.create_key_acl & 0xFF)

    def find_object(self, object_id: bytes) -> CardObject | None:
        return next((obj for obj in self.objects if obj.object_id == object_id), None)

    def mate_of(self, slot: int) -> int:
        key = self.keys.get(slot)
        return key.mate if key is not None else -1


@dataclass
class PackageState:
    """A loaded package (load file) and the version the simulator read from it."""

    aid: bytes
    size: int
    applet_major: int
    applet_minor: int
    build_id: int


@dataclass
class CardState:
    """Everything the card keeps across power cycles."""

    cuid: bytes
    msn: bytes
    atr: bytes = COOLKEY_ATR
    protocol: ScpProtocol = ScpProtocol.SCP01
    key_sets: dict[int, StaticKeys] = field(default_factory=dict)
    key_version: int = 0x01
    sequence_counter: int = 0
    nv_memory: int = DEFAULT_NV_MEMORY
    #: Answer the default SELECT with the ISD FCI instead of a bare 9000 (libckyapplet
    #: wants the bare 9000; the FCI exercises the TPS's other path).
    select_fci: bool = False
    packages: list[PackageState] = field(default_factory=list)
    applet: AppletState | None = None

    def __post_init__(self) -> None:
        if len(self.cuid) != 10:
            raise ValueError("CUID must be 10 bytes")
        if len(self.msn) != 4:
            raise ValueError("MSN must be 4 bytes")
        if not self.key_sets:
            self.key_sets[self.key_version] = StaticKeys.developer()

    @property
    def cplc(self) -> bytes:
        """GET DATA 9F7F answer: tag, length 2A, 42 bytes laid out so CUID/MSN read back."""
        fabricator, ic_type = self.cuid[0:2], self.cuid[2:4]
        batch, serial = self.cuid[4:6], self.cuid[6:10]
        body = (
            fabricator
            + ic_type
            + bytes.fromhex("0001")  # OS ID
            + bytes.fromhex("6208")  # OS release date (YDDD)
            + bytes.fromhex("0101")  # OS release level
            + bytes.fromhex("6210")  # IC fabrication date
            + serial
            + batch
            + bytes.fromhex("0000")  # IC module fabricator
            + bytes.fromhex("6215")  # IC module packaging date
            + bytes.fromhex("0000")  # ICC manufacturer
            + bytes.fromhex("6220")  # IC embedding date
            + bytes.fromhex("0000")  # IC pre-personalizer
            + bytes.fromhex("6225")  # IC pre-personalization date
            + bytes(4)  # IC pre-personalization equipment ID
            + bytes.fromhex("0000")  # IC personalizer
            + bytes.fromhex("6230")  # IC personalization date
            + self.msn  # IC personalization equipment ID = MSN
        )
        return b"\x9f\x7f\x2a" + body

    @property
    def nv_free(self) -> int:
        used = sum(package.size for package in self.packages)
        if self.applet is not None:
            used += self.applet.instance_size
        return self.nv_memory - used

    def find_package(self, aid: bytes) -> PackageState | None:
        return next((package for package in self.packages if package.aid == aid), None)

    # -- JSON ------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "cuid": self.cuid.hex(),
            "msn": self.msn.hex(),
            "atr": self.atr.hex(),
            "protocol": int(self.protocol),
            "key_version": self.key_version,
            "key_sets": {
                f"{version:02x}": {"enc": k.enc.hex(), "mac": k.mac.hex(), "kek": k.kek.hex()}
                for version, k in self.key_sets.items()
            },
            "sequence_counter": self.sequence_counter,
            "nv_memory": self.nv_memory,
            "select_fci": self.select_fci,
            "packages": [
                {
                    "aid": p.aid.hex(),
                    "size": p.size,
                    "applet_version": [p.applet_major, p.applet_minor],
                    "build_id": f"{p.build_id:08x}",
                }
                for p in self.packages
            ],
            "applet": None if self.applet is None else _applet_to_json(self.applet),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CardState:
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported card file format {data.get('format')!r}")
        return cls(
            cuid=bytes.fromhex(data["cuid"]),
            msn=bytes.fromhex(data["msn"]),
            atr=bytes.fromhex(data["atr"]),
            protocol=ScpProtocol(data["protocol"]),
            key_version=int(data["key_version"]),
            key_sets={
                int(version, 16): StaticKeys(
                    bytes.fromhex(k["enc"]), bytes.fromhex(k["mac"]), bytes.fromhex(k["kek"])
                )
                for version, k in data["key_sets"].items()
            },
            sequence_counter=int(data["sequence_counter"]),
            nv_memory=int(data["nv_memory"]),
            select_fci=bool(data["select_fci"]),
            packages=[
                PackageState(
                    bytes.fromhex(p["aid"]),
                    int(p["size"]),
                    int(p["applet_version"][0]),
                    int(p["applet_version"][1]),
                    int(p["build_id"], 16),
                )
                for p in data["packages"]
            ],
            applet=None if data["applet"] is None else _applet_from_json(data["applet"]),
        )


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _unb64(value: str) -> bytes:
    return base64.b64decode(value.encode("ascii"), validate=True)


def _applet_to_json(applet: AppletState) -> dict[str, Any]:
    return {
        "life_cycle": applet.life_cycle,
        "applet_version": [applet.applet_major, applet.applet_minor],
        "build_id": f"{applet.build_id:08x}",
        "instance_aid": applet.instance_aid.hex(),
        "package_aid": applet.package_aid.hex(),
        "instance_size": applet.instance_size,
        "memory_size": applet.memory_size,
        "issuer_info": _b64(applet.issuer_info),
        "builtin_acl": [
            applet.create_object_acl,
            applet.create_key_acl,
            applet.create_pin_acl,
            applet.enable_acl_change,
        ],
        "pin_enabled": applet.pin_enabled,
        "pins": {
            str(number): {"value": _b64(pin.value), "max": pin.max_tries, "left": pin.tries_left}
            for number, pin in applet.pins.items()
        },
        "keys": {
            str(number): {
                "type": int(key.key_type),
                "size": key.size,
                "der": _b64(key.der),
                "mate": key.mate,
                "acl": [key.read_acl, key.write_acl, key.use_acl],
            }
            for number, key in applet.keys.items()
        },
        "objects": [
            {
                "id": obj.object_id.hex(),
                "data": _b64(bytes(obj.data)),
                "acl": [obj.read_acl, obj.write_acl, obj.delete_acl],
            }
            for obj in applet.objects
        ],
    }


def _applet_from_json(data: dict[str, Any]) -> AppletState:
    create_object, create_key, create_pin, enable_change = data["builtin_acl"]
    return AppletState(
        life_cycle=int(data["life_cycle"]),
        applet_major=int(data["applet_version"][0]),
        applet_minor=int(data["applet_version"][1]),
        build_id=int(data["build_id"], 16),
        instance_aid=bytes.fromhex(data["instance_aid"]),
        package_aid=bytes.fromhex(data["package_aid"]),
        instance_size=int(data["instance_size"]),
        memory_size=int(data["memory_size"]),
        issuer_info=_unb64(data["issuer_info"]),
        create_object_acl=int(create_object),
        create_key_acl=int(create_key),
        create_pin_acl=int(create_pin),
        enable_acl_change=int(enable_change),
        pin_enabled=bool(data["pin_enabled"]),
        pins={
            int(number): Pin(_unb64(p["value"]), int(p["max"]), int(p["left"]))
            for number, p in data["pins"].items()
        },
        keys={
            int(number): KeySlot(
                KeyType(k["type"]),
                int(k["size"]),
                _unb64(k["der"]),
                int(k["mate"]),
                int(k["acl"][0]),
                int(k["acl"][1]),
                int(k["acl"][2]),
            )
            for number, k in data["keys"].items()
        },
        objects=[
            CardObject(
                bytes.fromhex(o["id"]),
                bytearray(_unb64(o["data"])),
                int(o["acl"][0]),
                int(o["acl"][1]),
                int(o["acl"][2]),
            )
            for o in data["objects"]
        ],
    )


@dataclass
class PendingLoad:
    """An INSTALL [for load] in progress, and the LOAD blocks received so far."""

    package_aid: bytes
    next_block: int = 0
    data: bytearray = field(default_factory=bytearray)


@dataclass
class RuntimeState:
    """RAM: cleared by power-on and reset (CardEdge's transient state and the GP channel)."""

    selected: Selected = Selected.ISD
    channel: SecureChannelCard | None = None
    #: Login nonce (all zero = nobody logged in) and the identities it authenticates.
    nonce: bytes = bytes(8)
    nonce_ids: int = 0
    login_counts: dict[int, int] = field(default_factory=dict)
    object_cursor: int = 0
    key_cursor: int = 0
    iobuf: bytearray = field(default_factory=lambda: bytearray(IOBUF_SIZE))
    iobuf_size: int = 0
    pending_load: PendingLoad | None = None

    def clear(self) -> None:
        fresh = RuntimeState()
        for name in RuntimeState.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))

    def drop_channel(self) -> None:
        self.channel = None

    def new_nonce(self) -> bytes:
        self.nonce = os.urandom(8)
        return self.nonce


@dataclass
class FailureKnobs:
    """Test switches that make the card fail the way real cards do.

    Not persisted: they describe a test, not the card.
    """

    #: The card computes with other static keys: the host's card-cryptogram check fails.
    wrong_static_keys: bool = False
    #: Secure-messaged commands with these INS fail their MAC check (6982, channel dropped).
    mac_failure_ins: set[int] = field(default_factory=set)
    #: CREATE OBJECT answers 9C01, INSTALL/LOAD answer 6A84.
    out_of_memory: bool = False
    #: Seconds to wait before answering each APDU (a slow card).
    apdu_delay: float = 0.0


@dataclass
class CardContext:
    """What the command handlers share: persistent state, RAM, and the test knobs."""

    state: CardState
    runtime: RuntimeState = field(default_factory=RuntimeState)
    knobs: FailureKnobs = field(default_factory=FailureKnobs)
