# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated TPS's token database and user directory.

Owns:

* ``TokenDb``: one ``TokenRecord`` per CUID with its status (UNFORMATTED, FORMATTED,
  ACTIVE as the Java ``TokenStatus`` numbers them), owner, token type, stored key info
  (for the ``validateCardKeyInfoAgainstTokenDB`` check of Dogtag's TPSProcessor.java),
  policy
  (RE_ENROLL, PIN_RESET, FORCE_FORMAT, …), issued certificates and archived keys. With a
  path it is a JSON file rewritten atomically after every change.
* ``UserDirectory``: who may log in. Loaded from a YAML file mapping user ids to a
  password or to ``{password, cn, mail}``; without a file the one user ``demo`` with
  password ``demo``.

Must not: log passwords, or decide which operation may do what (the flows read the
records and the transition table here, and decide).
"""

from __future__ import annotations

import datetime
import hmac
import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum, unique
from pathlib import Path
from typing import Any

import yaml

from escd.sim.tps_config import TokenPolicy
from escd.statefile import write_json_atomic

FORMAT_VERSION = 1
#: The token DB may hold many certificates; the state-file default cap is too small.
MAX_DB_SIZE = 64 << 20


@unique
class TokenStatus(IntEnum):
    """``TokenStatus`` of the Java TPS, with its numbers (``tps.operations.allowedTransitions``)."""

    FORMATTED = 0
    ACTIVE = 4
    UNFORMATTED = 7


#: ``tps.operations.allowedTransitions=0:0,0:4,4:4,4:0,7:0`` (TPS CS.cfg:2413).
ALLOWED_TRANSITIONS = frozenset(
    {
        (TokenStatus.FORMATTED, TokenStatus.FORMATTED),
        (TokenStatus.FORMATTED, TokenStatus.ACTIVE),
        (TokenStatus.ACTIVE, TokenStatus.ACTIVE),
        (TokenStatus.ACTIVE, TokenStatus.FORMATTED),
        (TokenStatus.UNFORMATTED, TokenStatus.FORMATTED),
    }
)


def transition_allowed(current: TokenStatus, new: TokenStatus) -> bool:
    return (current, new) in ALLOWED_TRANSITIONS


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    """A certificate the TPS enrolled onto a token (``tdbAddCertificatesForCUID``)."""

    serial: int
    key_type: str
    subject: str
    pem: str
    revoked: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": f"{self.serial:x}",
            "key_type": self.key_type,
            "subject": self.subject,
            "pem": self.pem,
            "revoked": self.revoked,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CertificateRecord:
        return cls(
            int(data["serial"], 16),
            str(data["key_type"]),
            str(data["subject"]),
            str(data["pem"]),
            bool(data.get("revoked", False)),
        )


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One token as the TPS knows it; CUIDs are 20 upper-case hex digits, as Java stores them."""

    cuid: str
    status: TokenStatus = TokenStatus.UNFORMATTED
    user_id: str | None = None
    token_type: str = ""
    #: Key info of the last secure channel (``0101``, ``FF01``); "" when never opened.
    key_info: str = ""
    policy: TokenPolicy = field(default_factory=TokenPolicy)
    applet_version: str = ""
    certificates: tuple[CertificateRecord, ...] = ()
    #: Serial number (hex) → PKCS#8 DER of keys the KRA generated and archived.
    archived_keys: tuple[tuple[str, bytes], ...] = ()
    modified: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        if len(self.cuid) != 20 or self.cuid != self.cuid.upper():
            raise ValueError("a token DB CUID is 20 upper-case hex digits")
        int(self.cuid, 16)

    def __repr__(self) -> str:
        return (
            f"TokenRecord({self.cuid}, {self.status.name}, user={self.user_id!r}, "
            f"type={self.token_type!r}, certs={len(self.certificates)})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "cuid": self.cuid,
            "status": self.status.name,
            "user_id": self.user_id,
            "token_type": self.token_type,
            "key_info": self.key_info,
            "policy": self.policy.encode(),
            "applet_version": self.applet_version,
            "certificates": [cert.to_json() for cert in self.certificates],
            "archived_keys": {serial: der.hex() for serial, der in self.archived_keys},
            "modified": self.modified,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TokenRecord:
        return cls(
            cuid=str(data["cuid"]),
            status=TokenStatus[str(data["status"])],
            user_id=data.get("user_id"),
            token_type=str(data.get("token_type", "")),
            key_info=str(data.get("key_info", "")),
            policy=TokenPolicy.parse(str(data.get("policy", ""))),
            applet_version=str(data.get("applet_version", "")),
            certificates=tuple(
                CertificateRecord.from_json(cert) for cert in data.get("certificates", [])
            ),
            archived_keys=tuple(
                (str(serial), bytes.fromhex(der))
                for serial, der in dict(data.get("archived_keys", {})).items()
            ),
            modified=str(data.get("modified", "")) or _now(),
        )


def cuid_key(cuid: bytes | str) -> str:
    """The DB key of a CUID given as bytes or hex in either case."""
    text = cuid.hex() if isinstance(cuid, bytes) else cuid.replace(" ", "")
    return text.upper()


class TokenDb:
    """The token database; thread-safe, persisted to ``path`` when one is given."""

    def __init__(
        self, path: Path | None = None, *, default_policy: TokenPolicy | None = None
    ) -> None:
        self.path = path
        self.default_policy = default_policy or TokenPolicy()
        self._lock = threading.Lock()
        self._records: dict[str, TokenRecord] = {}
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        raw = path.read_bytes()
        if len(raw) > MAX_DB_SIZE:
            raise ValueError(f"{path} is larger than {MAX_DB_SIZE} bytes")
        try:
            data = json.loads(raw.decode("utf-8"))
            if data.get("format") != FORMAT_VERSION:
                raise ValueError(f"unsupported token DB format {data.get('format')!r}")
            records = [TokenRecord.from_json(item) for item in data["tokens"]]
        except (KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not a simulated TPS token DB: {err}") from err
        self._records = {record.cuid: record for record in records}

    def _save(self) -> None:
        if self.path is None:
            return
        write_json_atomic(
            self.path,
            {
                "format": FORMAT_VERSION,
                "tokens": [record.to_json() for record in self._records.values()],
            },
        )

    def get(self, cuid: bytes | str) -> TokenRecord | None:
        with self._lock:
            return self._records.get(cuid_key(cuid))

    def put(self, record: TokenRecord) -> TokenRecord:
        """Store ``record`` (stamped with the time) and return what was stored."""
        stamped = replace(record, modified=_now())
        with self._lock:
            self._records[stamped.cuid] = stamped
            self._save()
        return stamped

    def update(self, cuid: bytes | str, **changes: Any) -> TokenRecord:
        """Change fields of an existing record (``KeyError`` if there is none)."""
        with self._lock:
            current = self._records[cuid_key(cuid)]
            stamped = replace(current, **changes, modified=_now())
            self._records[stamped.cuid] = stamped
            self._save()
        return stamped

    def add(self, cuid: bytes | str, **fields: Any) -> TokenRecord:
        """A new record with the default policy (``fillTokenRecordDefaultPolicy``)."""
        fields.setdefault("policy", self.default_policy)
        return self.put(TokenRecord(cuid_key(cuid), **fields))

    def set_policy(self, cuid: bytes | str, policy: TokenPolicy | str) -> TokenRecord:
        """An administrator's policy change; a string is parsed over the current policy."""
        record = self.get(cuid)
        if record is None:
            raise KeyError(cuid_key(cuid))
        if isinstance(policy, str):
            policy = TokenPolicy.parse(policy, record.policy)
        return self.update(cuid, policy=policy)

    def remove(self, cuid: bytes | str) -> None:
        with self._lock:
            self._records.pop(cuid_key(cuid), None)
            self._save()

    def active_tokens_of(self, user_id: str) -> list[TokenRecord]:
        with self._lock:
            return [
                record
                for record in self._records.values()
                if record.user_id == user_id and record.status is TokenStatus.ACTIVE
            ]

    def __iter__(self) -> Iterator[TokenRecord]:
        with self._lock:
            return iter(list(self._records.values()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


@dataclass(frozen=True, slots=True)
class User:
    """A user the authenticator knows: ``cn`` names the token, ``mail`` goes into the SAN."""

    uid: str
    password: str = field(repr=False)
    cn: str = ""
    mail: str = ""

    @property
    def common_name(self) -> str:
        return self.cn or self.uid


DEFAULT_USERS = (User("demo", "demo", "Demo User"),)


class UserDirectory:
    """The authenticator's user table (the simulator's stand-in for ``ldap1``)."""

    def __init__(self, users: Iterable[User] = DEFAULT_USERS) -> None:
        self._users = {user.uid: user for user in users}

    @classmethod
    def load(cls, path: Path) -> UserDirectory:
        """Read a YAML mapping ``uid: password`` or ``uid: {password, cn, mail}``."""
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            # PyYAML's message quotes the offending line, which may hold a password:
            # name only where it is, and do not chain the error.
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise ValueError(f"{path} is not YAML{where}") from None
        if isinstance(data, dict) and set(data) == {"users"}:
            data = data["users"]
        if not isinstance(data, dict) or not data:
            raise ValueError(f"{path}: expected a mapping of user ids to passwords")
        users: list[User] = []
        for uid, entry in data.items():
            if isinstance(entry, str | int):
                users.append(User(str(uid), str(entry)))
            elif isinstance(entry, dict) and "password" in entry:
                users.append(
                    User(
                        str(uid),
                        str(entry["password"]),
                        str(entry.get("cn", "")),
                        str(entry.get("mail", "")),
                    )
                )
            else:
                raise ValueError(f"{path}: user {uid!r} needs a password")
        return cls(users)

    def authenticate(self, uid: str, password: str) -> User | None:
        user = self._users.get(uid)
        if user is None:
            # Compare anyway, so a missing user costs the same as a wrong password.
            hmac.compare_digest(password.encode(), b"\x00" * len(password))
            return None
        if hmac.compare_digest(password.encode("utf-8"), user.password.encode("utf-8")):
            return user
        return None

    def get(self, uid: str) -> User | None:
        return self._users.get(uid)

    def __contains__(self, uid: object) -> bool:
        return uid in self._users

    def __len__(self) -> int:
        return len(self._users)

    def to_yaml(self) -> str:
        """The directory as a users file (written into a fresh state directory)."""
        body: dict[str, Any] = {
            user.uid: {"password": user.password, "cn": user.cn, "mail": user.mail}
            for user in self._users.values()
        }
        return str(yaml.safe_dump(body, sort_keys=True))
