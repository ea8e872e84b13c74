# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated Dogtag TPS's settings: one frozen ``TpsConfig`` built once at start-up.

Owns every knob of ``escd.sim.tps`` and its defaults, which are those of the shipped
Dogtag TPS ``CS.cfg`` (dogtagpki/pki, under ``base/tps``; cited as ``TPS CS.cfg:<line>``;
the Java files cited are Dogtag's TPS sources in the same repository):

* the token types and their key types (``userKey`` and ``soKey``: a signing and an
  encryption certificate each, in key slots 2/3 and 4/5, 1024-bit keys);
* authentication per operation and token type (the manual's
  ``op.<operation>.<tokenType>.auth.enable=false``, here ``auth_disabled``);
* the Java TPS's quirks, one switch each (``Quirk``), so tests can also run a "clean"
  server;
* PIN bounds, issuer info, phone-home XML fields, token policy defaults;
* fault switches (``Faults``): drop the connection at message N, END_OP failure code K
  at message N, a delay before every message, corrupted MACs.

Must not: do I/O, hold secrets, or know how the flows use a value.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum, unique

from escd.sim.loadfile import SHIPPED_FILE_SIZE, LoadFile


@unique
class Quirk(StrEnum):
    """Behaviour of the Java TPS that a well-designed server would not have.

    Every member is on in the default ("faithful") configuration and off with
    ``--clean``. Each names the Dogtag source it reproduces.
    """

    #: getAppletInfo is seven APDUs: SELECT CoolKey again before GET VERSION
    #: (TPSProcessor.java:3482, 4003-4036).
    REDUNDANT_SELECT = "redundant-select"
    #: getAppletVersion after the format login, getAppletInfo again after the applet
    #: step of enroll and pin reset (TPSProcessor.java ``format``, TPSEnrollProcessor.java,
    #: TPSPinResetProcessor.java).
    REPEAT_APPLET_INFO = "repeat-applet-info"
    #: Secure channels opened and never used (TPSProcessor.java:1166-1176, 2583, 2618).
    UNUSED_CHANNELS = "unused-channels"
    #: FORMAT reloads the applet even when its version is current (TPSProcessor.java:2561).
    RELOAD_ON_FORMAT = "reload-on-format"
    #: ENROLL of a token unknown to the token DB runs a whole format first
    #: (TPSEnrollProcessor.java:366-418, 442-449).
    FORCE_FORMAT_UNKNOWN = "force-format-unknown"
    #: The results of DELETE, CREATE PIN and CLEAR KEY SLOTS are ignored
    #: (TPSProcessor.java ``upgradeApplet``; SecureChannel.java:1054-1081, 1513-1532).
    IGNORE_RESULTS = "ignore-results"
    #: Reading the existing objects stops after z0 (TPSEnrollProcessor.java:1036-1116).
    STOP_AT_Z0 = "stop-at-z0"
    #: A failure in the per-certificate loop wipes the card with a format before END_OP 7
    #: (TPSEnrollProcessor.java:525-536, 2203-2207).
    AUTO_FORMAT_ON_CERT_FAILURE = "auto-format-on-cert-failure"
    #: After the forced format, enroll keeps the applet info read before it, so a blank
    #: card fails with END_OP 7 at the z0 size check (TPSEnrollProcessor.java:442-449,
    #: 1016).
    STALE_APPLET_INFO = "stale-applet-info"
    #: No SET LIFECYCLE after a forced-format re-enroll of a 0F token
    #: (TPSEnrollProcessor.java:122, 446, 641).
    NO_LIFECYCLE_AFTER_FORCED_FORMAT = "no-lifecycle-after-forced-format"
    #: GET STATUS memory is read from signed Java bytes: 0x1388 reads as 4744
    #: (TPSProcessor.java:3456-3466).
    SIGNED_MEMORY = "signed-memory"
    #: The Java LOAD loop sends no P1=80 block when the data is an exact multiple of the
    #: block size (SecureChannel.java:881-904).
    JAVA_LOAD_LOOP = "java-load-loop"
    #: Enroll and pin reset fail with END_OP 14 when their authentication is switched
    #: off (TPSProcessor.java:4147-4172: "TPS enrollment must have authentication
    #: enabled").
    AUTH_MANDATORY = "auth-mandatory"
    #: Pin reset of a token unknown to the DB ends with status 1, not 16
    #: (TPSPinResetProcessor.java:117-124).
    PIN_RESET_UNKNOWN_IS_SNAC = "pin-reset-unknown-is-snac"
    #: The card manager is selected only while none is known
    #: (TPSProcessor.java:1208-1214), so the auto-format after a certificate failure
    #: sends its GP commands to the CoolKey applet, which refuses INSTALL: END_OP 19
    #: instead of a wiped card and 7.
    STICKY_SELECTION = "sticky-selection"
    #: Enroll of a known token whose card has no applet dies without END_OP: the version
    #: comparison dereferences null (TPSProcessor.java:1151-1163).
    NULL_VERSION_CRASH = "null-version-crash"


#: The GP developer key (the ``defKeySet`` of Dogtag's TKS CS.cfg); kept here so this
#: module stays light.
DEVELOPER_KEY = bytes(range(0x40, 0x50))

FAITHFUL = frozenset(Quirk)
CLEAN: frozenset[Quirk] = frozenset()


class Operation(StrEnum):
    """Operation names as they appear in ``op.<operation>.<tokenType>.*`` keys."""

    FORMAT = "format"
    ENROLL = "enroll"
    PIN_RESET = "pinReset"

    @classmethod
    def parse(cls, text: str) -> Operation:
        wanted = text.replace("-", "").replace("_", "").lower()
        for member in cls:
            if member.value.lower() == wanted:
                return member
        raise ValueError(f"unknown operation {text!r} (format, enroll or pinReset)")


@unique
class KeyUse(StrEnum):
    """What a certificate is for, which decides its key usage extension."""

    SIGNING = "signing"
    ENCRYPTION = "encryption"


@dataclass(frozen=True, slots=True)
class KeyTypeProfile:
    """``op.enroll.<type>.keyGen.<keyType>.*`` (TPS CS.cfg:1495-1630)."""

    name: str
    use: KeyUse
    #: Certificate index: object ``c<n>``, keys ``k<2n>`` (private) and ``k<2n+1>``.
    cert_id: int
    private_slot: int
    public_slot: int
    key_size: int = 1024
    label: str = "$keytype$ key for $userid$"
    #: ``serverKeygen.enable``: the KRA generates the key, the card imports it encrypted.
    server_keygen: bool = False


@dataclass(frozen=True, slots=True)
class TokenTypeProfile:
    """One token type (profile): which operations it allows and what enroll puts on it."""

    name: str
    operations: frozenset[Operation]
    key_types: tuple[KeyTypeProfile, ...] = ()
    #: The CA profile's ``dnpattern`` (caTokenUser*KeyEnrollment.cfg).
    subject: str = "UID=$uid$, O=Token Key User"
    #: ``keyGen.tokenName=$auth.cn$``: the PKCS#11 token label.
    token_name: str = "$cn$"  # noqa: S105 - a label pattern


def _user_key_types() -> tuple[KeyTypeProfile, ...]:
    # signing C1/c1 k2/k3 slots 2/3, encryption C2/c2 k4/k5 slots 4/5
    # (TPS CS.cfg:1495-1630).
    return (
        KeyTypeProfile("signing", KeyUse.SIGNING, 1, 2, 3),
        KeyTypeProfile("encryption", KeyUse.ENCRYPTION, 2, 4, 5),
    )


USER_KEY = TokenTypeProfile(
    "userKey",
    frozenset({Operation.FORMAT, Operation.ENROLL, Operation.PIN_RESET}),
    _user_key_types(),
)
#: soKey enrolls the same two key types with the same CA profiles (TPS CS.cfg:1160-1312);
#: PIN reset is configured for userKey only (TPS CS.cfg:2011-2120).
SO_KEY = TokenTypeProfile(
    "soKey", frozenset({Operation.FORMAT, Operation.ENROLL}), _user_key_types()
)


_POLICY_KEYS = {
    "RE_ENROLL": "re_enroll",
    "RENEW": "renew",
    "FORCE_FORMAT": "force_format",
    "PIN_RESET": "pin_reset",
    "RESET_PIN_RESET_TO_NO": "reset_pin_reset_to_no",
}


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    """A token's policy string, ``RE_ENROLL=YES;RENEW=NO;…`` (``tokendb.defaultPolicy``)."""

    re_enroll: bool = True
    renew: bool = False
    force_format: bool = False
    #: The shipped default is NO: pin reset needs an administrator's YES (TPS CS.cfg:2343).
    pin_reset: bool = False
    reset_pin_reset_to_no: bool = False

    @classmethod
    def parse(cls, text: str, base: TokenPolicy | None = None) -> TokenPolicy:
        """``"PIN_RESET=YES;FORCE_FORMAT=NO"`` over ``base`` (the defaults if None)."""
        values: dict[str, bool] = {}
        for item in text.replace(",", ";").split(";"):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            name = _POLICY_KEYS.get(key.strip().upper())
            flag = value.strip().upper()
            if not sep or name is None or flag not in ("YES", "NO"):
                raise ValueError(f"not a token policy setting: {item!r}")
            values[name] = flag == "YES"
        return replace(base or cls(), **values)

    def encode(self) -> str:
        return ";".join(
            f"{key}={'YES' if getattr(self, name) else 'NO'}" for key, name in _POLICY_KEYS.items()
        )


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault switches. Server messages are counted from 1 (the first after BEGIN_OP)."""

    #: Close the connection instead of sending server message N (no END_OP).
    drop_at_message: int | None = None
    #: Send END_OP ``result=1 message=<fail_status>`` instead of server message N.
    fail_status: int | None = None
    fail_at_message: int = 1
    #: Seconds to wait before every server message (the one deliberate sleep).
    delay: float = 0.0
    #: Corrupt the C-MAC of secure-messaged APDUs with these INS bytes; the card answers
    #: 6982 and the TPS ends with the END_OP status SecureChannel.java gives that
    #: command (0x82: EXTERNAL AUTHENTICATE).
    wrong_mac_ins: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        for name in ("drop_at_message", "fail_at_message"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} counts messages from 1")
        if self.fail_status is not None and not 1 <= self.fail_status <= 999:
            raise ValueError("fail_status must be an END_OP status code")
        if self.delay < 0:
            raise ValueError("delay must not be negative")


@dataclass(frozen=True, slots=True)
class PhoneHomeSettings:
    """The ``ServiceInfo`` document served at ``/tps/phoneHome`` (as Dogtag's TPSPhoneHome)."""

    issuer_name: str = "escd simulated TPS"
    #: ``Operation``: None means this server's own ``/tps/tps`` URL.
    operation_url: str | None = None
    ui_url: str = ""
    enrolled_token_browser_url: str = ""
    enrolled_token_url: str = ""
    token_type: str = "userKey"  # noqa: S105 - a profile name


@dataclass(frozen=True, slots=True)
class TpsConfig:
    """Everything the simulated TPS does differently from run to run."""

    host: str = "127.0.0.1"
    #: 0 picks a free port.
    port: int = 0
    tls: bool = True
    quirks: frozenset[Quirk] = FAITHFUL
    #: ``op.<operation>.<tokenType>.auth.enable=false``: entries ``"format"`` (every token
    #: type) or ``"format/userKey"``.
    auth_disabled: frozenset[str] = frozenset()
    token_types: tuple[TokenTypeProfile, ...] = (USER_KEY, SO_KEY)
    #: What the mapping resolvers fall back to (TPS CS.cfg:2083-2089).
    default_token_type: str = "userKey"  # noqa: S105 - a profile name
    #: ``pinReset.pin.minLen``/``maxLen``/``maxRetries`` and ``create_pin.string``.
    pin_min_length: int = 4
    pin_max_length: int = 10
    pin_max_retries: int = 0x7F
    create_pin_string: str = "password"  # Dogtag's fixed CREATE PIN string
    #: ``op.<op>.<type>.pinReset.enable`` for enroll.
    new_pin_on_enroll: bool = True
    #: ``issuerinfo.enable`` for format and enroll, and the URL written to cards (None:
    #: this server's own ``/tps/phoneHome``).
    issuer_info: bool = True
    issuer_info_url: str | None = None
    phone_home: PhoneHomeSettings = field(default_factory=PhoneHomeSettings)
    #: ``update.applet.requiredVersion`` and the size of the served load file.
    required_applet_version: str = "1.4.58768072"
    applet_file_size: int = SHIPPED_FILE_SIZE
    #: ``op.<op>.allowUnknownToken`` (TPS CS.cfg:1158, 1826); False gives END_OP 16.
    allow_unknown_tokens: bool = True
    #: ``tokendb.nonExternalReg.allowMultiActiveTokensUser`` (TPS CS.cfg:2381); False gives 34.
    allow_multiple_active_tokens: bool = False
    default_policy: TokenPolicy = field(default_factory=TokenPolicy)
    #: Overrides every key type's ``keySize`` when set (tests use 1024 anyway).
    key_size: int | None = None
    #: Key type names (``encryption``) generated by the KRA instead of the card.
    server_keygen: frozenset[str] = frozenset()
    #: Check the keygen proof (the legacy TPS's ``general.verifyProof=1``; Java never does).
    verify_proof: bool = False
    compress_z0: bool = True
    #: ``channel.blocksize``, ``channel.instanceSize``, ``channel.appletMemorySize``.
    block_size: int = 224
    instance_size: int = 18000
    applet_memory_size: int = 5000
    #: ``channel.defKeyVersion``/``defKeyIndex`` (INITIALIZE UPDATE P1/P2).
    def_key_version: int = 0
    def_key_index: int = 0
    #: TKS master key for key sets other than the developer ones (VISA2 diversified).
    master_key: bytes = DEVELOPER_KEY
    #: Locales with configured login texts; any other ``locale`` fails the login (an NPE
    #: inside the login step, TPSProcessor.java:4148-4166).
    locales: frozenset[str] = frozenset({"en"})
    login_title: str = "LDAP Authentication"
    login_description: str = "This authenticates user against the LDAP directory."
    uid_label: str = "LDAP User ID"
    password_label: str = "LDAP Password"  # noqa: S105 - a field label
    #: When authentication is off (and not mandatory), enroll runs as this user.
    anonymous_user: str = "demo"
    #: Tomcat's ``connectionTimeout``: how long the server waits for a client message.
    message_timeout: float = 80.0
    #: ``tps.connection.maxMessageSize`` (Dogtag TPSConnection.java:57-85).
    max_message_size: int = 9999
    faults: Faults = field(default_factory=Faults)
    #: How many finished sessions ``SimulatedTps.sessions`` remembers.
    keep_sessions: int = 64

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError("port must be 0..65535")
        if not 1 <= self.pin_min_length <= self.pin_max_length:
            raise ValueError("PIN bounds must satisfy 1 <= min <= max")
        if self.block_size < 32 or self.block_size > 255:
            raise ValueError("block size must be 32..255")
        if self.token_type(self.default_token_type) is None:
            raise ValueError(f"default token type {self.default_token_type!r} is not configured")
        for entry in self.auth_disabled:
            operation, _, _ = entry.partition("/")
            Operation.parse(operation)
        LoadFile.from_version_string(self.required_applet_version)
        if len(self.master_key) != 16:
            raise ValueError("the TKS master key must be 16 bytes")

    def quirk(self, quirk: Quirk) -> bool:
        return quirk in self.quirks

    def token_type(self, name: str) -> TokenTypeProfile | None:
        return next((profile for profile in self.token_types if profile.name == name), None)

    def resolve_token_type(self, requested: str | None, operation: Operation) -> TokenTypeProfile:
        """The mapping resolver: the requested type if it allows ``operation``, else the default.

        The shipped filter resolvers end with a catch-all mapping to ``userKey``
        (TPS CS.cfg:2083-2089), so an unknown type never fails.
        """
        if requested:
            profile = self.token_type(requested)
            if profile is not None and operation in profile.operations:
                return profile
        default = self.token_type(self.default_token_type)
        assert default is not None
        return default

    def auth_enabled(self, operation: Operation, token_type: str) -> bool:
        """``op.<operation>.<tokenType>.auth.enable`` (default true)."""
        op = operation.value.lower()
        for entry in self.auth_disabled:
            name, _, kind = entry.partition("/")
            if Operation.parse(name).value.lower() == op and kind in ("", token_type):
                return False
        return True

    def key_size_of(self, key_type: KeyTypeProfile) -> int:
        return self.key_size or key_type.key_size

    def serverside_keygen(self, key_type: KeyTypeProfile) -> bool:
        return key_type.server_keygen or key_type.name in self.server_keygen

    @property
    def load_file(self) -> LoadFile:
        """The synthetic applet the server loads (version carried in the file)."""
        return LoadFile.from_version_string(
            self.required_applet_version, size=self.applet_file_size
        )


def parse_auth_switch(text: str) -> str:
    """``--no-auth OP[/TOKENTYPE]`` into the canonical ``auth_disabled`` entry."""
    operation, sep, token_type = text.partition("/")
    canonical = Operation.parse(operation.strip()).value
    if sep and not token_type.strip():
        raise ValueError(f"empty token type in {text!r}")
    return f"{canonical}/{token_type.strip()}" if sep else canonical
