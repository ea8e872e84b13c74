# SPDX-License-Identifier: GPL-2.0-or-later
"""What an administrator does to escd besides operations: trust, ESC migration, token settings.

``AdminService`` is the application service behind the Manager's ``ImportAuthority``,
``ListTrust``, ``RemoveTrust``, ``FetchServerCertificate``, ``PinServer``,
``ImportLegacyPreferences``, ``GetTokenSettings`` and ``SetTokenSettings``, and behind
the offer to import an ESC profile on first start. It turns requests into calls of the
trust store (``escd.trust``), the ESC importer (``escd.legacy``) and the phone-home
service, and returns plain data (the D-Bus layer types it).

Trust changes need a confirmation the daemon cannot give itself: ``import_authority``
without ``confirmed`` only says what would be trusted (subject, fingerprint), and
``pin_server`` pins exactly the fingerprint the caller showed its user. Nothing is ever
trusted because a server presented it.

Must not: read secrets (there are none in these files), execute anything from ESC's
preference files (they are parsed as data), or edit a configuration file a person
maintains (``escd.legacy`` writes a snippet instead).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from escd.errors import InvalidArgumentError
from escd.events import EventKind, EventRing
from escd.legacy import (
    ImportReport,
    find_esc_defaults,
    find_esc_profiles,
    find_profiles_in,
    import_legacy,
)
from escd.phonehome.cache import TokenStore
from escd.phonehome.parser import redact_userinfo, url_problem
from escd.phonehome.service import PhoneHomeService
from escd.statefile import write_bytes_atomic
from escd.trust import (
    NOT_A_CA,
    TrustEntry,
    TrustKind,
    TrustStore,
    fetch_server_certificate,
    fingerprint,
    fingerprint_plain,
    is_ca_certificate,
    normalize_host,
    parse_certificates,
)

logger = logging.getLogger(__name__)

#: Written once the first-start offer to import an ESC profile has been made.
LEGACY_OFFERED_FILE = "legacy-import-offered"
#: Where escd puts imported global settings when the user's config file exists.
LEGACY_SNIPPET_FILE = "legacy-import.yaml"


def _server_address(url: str) -> tuple[str, int]:
    """host and port of an https URL (``host[:port]`` alone is read as https)."""
    text = url.strip()
    if "://" not in text:
        text = "https://" + text
    why = url_problem(text)
    if why is not None:
        raise InvalidArgumentError(f"{redact_userinfo(text)!r}: {why}")
    parts = urlsplit(text)
    if parts.scheme.lower() != "https":
        raise InvalidArgumentError(
            "only https servers can be pinned; plain http has no certificate to trust"
        )
    assert parts.hostname is not None
    return normalize_host(parts.hostname), parts.port or 443


def entry_dict(entry: TrustEntry) -> dict[str, object]:
    """One trust entry as plain data (``ListTrust``, ``RemoveTrust``, ``PinServer``)."""
    return {
        "id": entry.id,
        "kind": str(entry.kind),
        "fingerprint": entry.fingerprint,
        "subject": entry.subject,
        "host": entry.host or "",
        "port": entry.port or 0,
        "not_after": int(entry.not_after.timestamp()) if entry.not_after else 0,
        "shared": entry.shared,
    }


def certificate_dict(cert: x509.Certificate) -> dict[str, object]:
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "fingerprint": fingerprint(cert),
        "not_before": int(cert.not_valid_before_utc.timestamp()),
        "not_after": int(cert.not_valid_after_utc.timestamp()),
    }


class AdminService:
    """Trust, ESC migration and per-token settings for the Manager interface."""

    def __init__(
        self,
        trust: TrustStore,
        store: TokenStore,
        phone_home: PhoneHomeService,
        ring: EventRing,
        *,
        state: Path,
        home: Path,
        config_paths: Callable[[], Sequence[Path]],
        esc_root: Path = Path("/"),
        certificate_timeout: float = 10.0,
    ) -> None:
        self._trust = trust
        self._store = store
        self._phone_home = phone_home
        self._ring = ring
        self._state = state
        self._home = home
        self._config_paths = config_paths
        self._esc_root = esc_root
        self._certificate_timeout = certificate_timeout

    # -- trust --------------------------------------------------------------------------

    def import_authority(self, data: bytes, *, confirmed: bool) -> list[dict[str, object]]:
        """What the certificates in ``data`` are and what importing them does (or did).

        Each item: ``subject``, ``issuer``, ``fingerprint``, ``not_before``,
        ``not_after``, ``status`` (``new`` — would be trusted, ``added``,
        ``already-trusted``, ``rejected``) and ``reason`` for a rejection. Without
        ``confirmed`` nothing is imported. Raises ``InvalidArgumentError`` when ``data``
        holds no certificate.
        """
        certs = parse_certificates(data)
        known = {e.fingerprint for e in self._trust.list() if e.kind is TrustKind.AUTHORITY}
        result = self._trust.import_authorities(certs) if confirmed else None
        added = {entry.fingerprint for entry in result.added} if result else set()
        rejected = dict(result.rejected) if result else {}
        items = []
        for cert in certs:
            item = certificate_dict(cert)
            shown = str(item["fingerprint"])
            subject = str(item["subject"])
            reason = ""
            if shown in known:
                status = "already-trusted"
            elif not confirmed:
                status = "new" if is_ca_certificate(cert) else "rejected"
                if status == "rejected":
                    reason = NOT_A_CA
            elif shown in added:
                status = "added"
            else:
                status = "rejected"
                reason = rejected.get(subject, "not imported")
            item["status"] = status
            item["reason"] = reason
            items.append(item)
        if added:
            self._ring.record(EventKind.TRUST, f"{len(added)} CA certificate(s) imported")
        return items

    def list_trust(self) -> list[dict[str, object]]:
        return [entry_dict(entry) for entry in self._trust.list()]

    def remove_trust(self, entry_id: str) -> dict[str, object]:
        entry = self._trust.remove(entry_id)
        self._ring.record(EventKind.TRUST, f"no longer trusted: {entry.id}")
        return entry_dict(entry)

    async def fetch_server_certificate(self, url: str) -> dict[str, object]:
        """The certificate a server presents, unverified, to show before pinning it."""
        host, port = _server_address(url)
        cert = await fetch_server_certificate(host, port, self._certificate_timeout)
        item = certificate_dict(cert)
        item.update(
            host=host,
            port=port,
            der=cert.public_bytes(Encoding.DER),
            pinned=fingerprint_plain(cert) in self._trust.pins_for(host, port),
        )
        return item

    def pin_server(self, url: str, shown_fingerprint: str, subject: str = "") -> dict[str, object]:
        host, port = _server_address(url)
        entry = self._trust.pin_server(host, port, shown_fingerprint, subject)
        self._ring.record(EventKind.TRUST, f"server pinned: {host}:{port} {entry.fingerprint}")
        return entry_dict(entry)

    # -- ESC migration ----------------------------------------------------------------

    def legacy_paths(self, path: str) -> list[Path]:
        """The ESC files an import reads: given a file, a profile or ``.redhat/esc``
        directory, or nothing (the installed ``esc-prefs.js`` and every profile)."""
        if not path:
            return [*find_esc_defaults(self._esc_root), *find_esc_profiles(self._home)]
        target = Path(path).expanduser()
        if not target.is_absolute():
            raise InvalidArgumentError(f"{path!r} is not an absolute path")
        if target.is_file():
            return [target]
        if not target.is_dir():
            raise InvalidArgumentError(f"{path} does not exist")
        found = [
            candidate
            for candidate in (
                target / "esc-prefs.js",
                target / "defaults" / "preferences" / "esc-prefs.js",
                target / "prefs.js",
            )
            if candidate.is_file()
        ]
        return [*found, *find_profiles_in(target)]

    def has_esc_profile(self) -> bool:
        return bool(find_esc_profiles(self._home))

    async def import_legacy(self, path: str) -> tuple[ImportReport, list[Path]]:
        """Import ESC's preferences (idempotent); the report and the files read."""
        paths = self.legacy_paths(path)
        if not paths:
            where = path or f"{self._home / '.redhat' / 'esc'} or /usr/lib*/esc-*"
            raise InvalidArgumentError(f"no ESC preference files found in {where}")
        config_paths = list(self._config_paths())
        report = await asyncio.to_thread(
            import_legacy,
            paths,
            self._store,
            config_paths=config_paths,
            snippet_path=self._state / LEGACY_SNIPPET_FILE,
        )
        self._ring.record(
            EventKind.LEGACY_IMPORT,
            f"ESC preferences from {', '.join(map(str, paths))}: "
            f"{len(report.imported)} imported, {len(report.skipped)} skipped",
        )
        for item, reason in report.skipped:
            logger.info("not imported from ESC: %s: %s", item, reason)
        # An imported cached answer shows at once on a token that is present.
        await self._phone_home.configuration_changed()
        return report, paths

    async def offer_legacy_import(self, automatic: bool) -> ImportReport | None:
        """On start: if an ESC profile exists and this was never done, offer (log) or import.

        The offer is made once; a marker in the state directory remembers it.
        """
        marker = self._state / LEGACY_OFFERED_FILE
        if marker.exists() or not self.has_esc_profile():
            return None
        where = self._home / ".redhat" / "esc"
        if not automatic:
            await asyncio.to_thread(write_bytes_atomic, marker, b"offered\n")
            logger.info(
                "found an ESC profile in %s; run 'escctl import-esc-prefs' to import its "
                "settings (or set legacy.import_on_first_start)",
                where,
            )
            self._ring.record(
                EventKind.LEGACY_IMPORT, f"ESC profile found in {where}; not imported"
            )
            return None
        report, _ = await self.import_legacy("")
        await asyncio.to_thread(write_bytes_atomic, marker, b"imported\n")
        logger.info(
            "imported the ESC profile in %s (legacy.import_on_first_start): %d imported, "
            "%d skipped; 'escctl import-esc-prefs' shows the details",
            where,
            len(report.imported),
            len(report.skipped),
        )
        return report

    # -- per-token settings --------------------------------------------------------------

    def get_token_settings(self, token_id: str) -> dict[str, str]:
        return self._phone_home.get_settings(token_id)

    async def set_token_settings(self, token_id: str, values: Mapping[str, str]) -> dict[str, str]:
        return await self._phone_home.set_settings(token_id, values)
