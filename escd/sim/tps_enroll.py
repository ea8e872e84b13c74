# SPDX-License-Identifier: GPL-2.0-or-later
"""ENROLL as the Java ``TPSEnrollProcessor`` runs it (TPSEnrollProcessor.java:104-724).

Owns the enroll order: life-cycle probe, getAppletInfo, token-DB policy (before the
login), login, the one-active-token rule, the forced format or the applet check, the
enrollment channel, the new PIN, reading the existing objects (stopping at ``z0``), one
key pair and certificate per key type (on-card keygen, or server-side keygen imported
encrypted), the final ``z0`` (zlib-compressed, built with ``escd.card.objects``), issuer
info, SET LIFECYCLE, the token DB, CLEAR KEY SLOTS. Its quirks (auto-format on a
certificate failure, stale applet info after a forced format, no SET LIFECYCLE after a
forced-format re-enroll) are behind their ``Quirk`` switches.

Line numbers are of Dogtag's TPS sources (dogtagpki/pki ``base/tps``) and of CoolKey's
CardEdge.java.

Must not: log keys, PINs or APDU data; talk to the network other than through the
conversation.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from escd.card.objects import (
    COMBINED_OBJECT_ID,
    CombinedObject,
    ObjectRecord,
    TokenCertificate,
    certificate_records,
    decode_combined_object,
    object_index,
)
from escd.errors import MalformedResponseError
from escd.sim.ca import parse_key_blob, split_keygen_buffer, subject_name, verify_proof
from escd.sim.scp import des3_cbc_encrypt, kcv, wrap_challenge
from escd.sim.tps_card import AppletInfo
from escd.sim.tps_channel import SecureChannel, SessionBroken, TpsFailure
from escd.sim.tps_config import KeyTypeProfile, Operation, Quirk, TokenTypeProfile
from escd.sim.tps_db import CertificateRecord, TokenRecord, TokenStatus, User, transition_allowed
from escd.sim.tps_flows import Processor
from escd.tps.status import TpsStatus

logger = logging.getLogger(__name__)

IO_BUFFER_ID = b"\xff\xff\xff\xff"
#: The temporary object of server-side keygen and recovery
#: (TPSEnrollProcessor.java:3205-3207).
KEY_IMPORT_OBJECT_ID = b"\xff\x00\xff\xf3"
#: ACLs: the temporary key object is RA-only; z0 is readable by anyone
#: (TPSEnrollProcessor.java:1026-1030).
RA_ONLY_ACL = b"\x40\x00\x40\x00\x40\x00"
Z0_ACL = b"\xff\xff\x40\x00\x40\x00"
#: IMPORT KEY ENCRYPTED blob header: encrypted, PKCS#8 RSA key pair (CardEdge.java:2394-2581).
_KEY_BLOB_ENCRYPTED_PKCS8 = b"\x01\x09"
CERT_PROGRESS_START, CERT_PROGRESS_END = 15, 90


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    key_type: KeyTypeProfile
    certificate: x509.Certificate
    key_size: int
    #: PKCS#8 DER of a KRA-generated key, archived (None for on-card keys).
    archived_key: bytes | None = None


class EnrollProcessor(Processor):
    """ENROLL (operation 1)."""

    operation = Operation.ENROLL

    async def run(self) -> None:
        config = self.config
        lifecycle = await self.link.lifecycle_state()
        info = await self.applet_info()
        record = self.record()
        profile = self.token_type()
        force_format = False
        # Token-DB and policy checks come before the login
        # (TPSEnrollProcessor.java:366-418).
        if record is not None:
            if not transition_allowed(record.status, TokenStatus.ACTIVE):
                raise TpsFailure(TpsStatus.ERROR_DISABLED_TOKEN, "transition to ACTIVE")
            force_format = record.policy.force_format
            if not record.policy.re_enroll and not record.policy.renew:
                raise TpsFailure(TpsStatus.ERROR_DISABLED_TOKEN, "re-enroll not allowed")
        else:
            if not config.allow_unknown_tokens:
                raise TpsFailure(TpsStatus.ERROR_UNKNOWN_TOKEN, "unknown token")
            force_format = self.quirk(Quirk.FORCE_FORMAT_UNKNOWN)
        user = await self.authenticate(profile.name)
        assert user is not None
        if not config.allow_multiple_active_tokens:
            others = [t for t in self.services.db.active_tokens_of(user.uid) if t.cuid != self.cuid]
            if others:
                raise TpsFailure(TpsStatus.ERROR_HAS_AT_LEAST_ONE_ACTIVE_TOKEN, "user has a token")
        upgraded = False
        if force_format:
            await self.format(skip_auth=True, token_type=profile)
            if not self.quirk(Quirk.STALE_APPLET_INFO):
                info = await self.applet_info()
            # The "upgraded" flag is set only by checkAndUpgradeApplet
            # (TPSEnrollProcessor.java:446, 641).
            upgraded = not self.quirk(Quirk.NO_LIFECYCLE_AFTER_FORCED_FORMAT)
        else:
            upgraded = await self.check_and_upgrade_applet(info)
            if upgraded or self.quirk(Quirk.REPEAT_APPLET_INFO):
                info = await self.applet_info()
        record = self.record()
        self.link.expected_key_info = record.key_info if record is not None else ""
        channel = await self.channel_for_applet()
        if config.new_pin_on_enroll:
            await self.new_pin(channel)
        challenge = self.services.tks.random(16)
        wrapped = wrap_challenge(channel.static_kek, challenge)
        old_z0 = await self.read_objects(channel)
        await self.conversation.status(10, "PROGRESS_PROCESS_PROFILE")
        issued = await self.generate_certificates(profile, user, channel, challenge, wrapped)
        z0 = self.build_z0(profile, user, info, issued, old_z0)
        channel = await self.channel_for_applet()
        await self.conversation.status(92, "PROGRESS_WRITE_OBJECTS")
        encoded = z0.encode()
        # The size check uses the enroll's own appletInfo, stale after a forced format
        # (TPSEnrollProcessor.java:442-449, 1016): a blank card enrolls, then fails here.
        if len(encoded) > info.total_memory:
            raise TpsFailure(TpsStatus.ERROR_MAC_ENROLL_PDU, "not enough memory for z0")
        await channel.create_object(COMBINED_OBJECT_ID, len(encoded), Z0_ACL)
        await channel.write_object(COMBINED_OBJECT_ID, encoded)
        await self.conversation.status(98, "PROGRESS_ISSUER_INFO")
        if config.issuer_info:
            await channel.set_issuer_info(self.services.issuer_info_url)
        await self.conversation.status(99, "PROGRESS_SET_LIFECYCLE")
        if lifecycle != 0x0F or upgraded:
            await channel.set_lifecycle(0x0F)
        self.store(profile, user, issued)
        await channel.clear_key_slots(_key_numbers(z0))
        await self.conversation.status(100, "PROGRESS_DONE_ENROLLMENT")
        logger.info("token %s enrolled for %s", self.cuid, user.uid)

    async def check_and_upgrade_applet(self, info: AppletInfo) -> bool:
        """``checkAndUpgradeApplet`` (TPSProcessor.java:1141-1186).

        True when the applet was reloaded.
        """
        required = self.config.required_applet_version
        await self.link.discover()
        version = info.version
        if version is None:
            # formatCurrentAppletVersion asks the card again when nothing is cached.
            version = replace(info, build_id=await self.link.applet_version()).version
            if version is None and self.quirk(Quirk.NULL_VERSION_CRASH):
                raise SessionBroken("no applet version to compare (NullPointerException)")
        if version != required:
            await self.link.upgrade_applet(5, 12)
            return True
        if self.quirk(Quirk.UNUSED_CHANNELS):
            await self.channel_for_card_manager()
        return False

    async def read_objects(self, channel: SecureChannel) -> bytes | None:
        """``getCurrentObjectsOnToken`` (TPSEnrollProcessor.java:1036-1116).

        The old z0, if any.
        """
        first, old_z0 = True, None
        while True:
            entry = await self.link.list_object(first)
            if entry is None:
                return old_z0
            first = False
            object_id, size = entry[0:4], int.from_bytes(entry[4:8], "big")
            data = await channel.read_object(object_id, 0, size)
            if object_id == COMBINED_OBJECT_ID:
                old_z0 = data
                if self.quirk(Quirk.STOP_AT_Z0):
                    return old_z0

    async def generate_certificates(
        self,
        profile: TokenTypeProfile,
        user: User,
        channel: SecureChannel,
        challenge: bytes,
        wrapped: bytes,
    ) -> list[IssuedCertificate]:
        """``generateCertificates`` (TPSEnrollProcessor.java:2175-2222).

        A failure formats the card, then END_OP 7.
        """
        issued: list[IssuedCertificate] = []
        block = (CERT_PROGRESS_END - CERT_PROGRESS_START) // max(len(profile.key_types), 1)
        for index, key_type in enumerate(profile.key_types):
            start = CERT_PROGRESS_START + index * block
            try:
                issued.append(
                    await self.generate_certificate(
                        key_type, user, channel, challenge, wrapped, start, start + block, profile
                    )
                )
            except TpsFailure as failure:
                # Only TPSException is caught here; IOException and runtime exceptions
                # end the session with no END_OP and no format
                # (TPSEnrollProcessor.java:2203-2207).
                logger.info("certificate %s failed (%s)", key_type.name, failure.reason)
                if self.quirk(Quirk.AUTO_FORMAT_ON_CERT_FAILURE):
                    await self.format(skip_auth=True, token_type=profile)
                raise TpsFailure(TpsStatus.ERROR_MAC_ENROLL_PDU, "certificate enrollment") from (
                    failure
                )
        return issued

    async def generate_certificate(
        self,
        key_type: KeyTypeProfile,
        user: User,
        channel: SecureChannel,
        challenge: bytes,
        wrapped: bytes,
        start: int,
        end: int,
        profile: TokenTypeProfile,
    ) -> IssuedCertificate:
        config = self.config
        await self.conversation.status(start, "PROGRESS_KEY_GENERATION")
        size = config.key_size_of(key_type)
        archived: bytes | None = None
        if config.serverside_keygen(key_type):
            public_key, archived = await self.import_server_key(channel, key_type, size)
        else:
            length = await channel.generate_key(
                key_type.private_slot, key_type.public_slot, size, wrapped
            )
            buffer = await channel.read_object(IO_BUFFER_ID, 0, length)
            try:
                blob, proof = split_keygen_buffer(buffer)
                public_key = parse_key_blob(blob)
            except ValueError as err:
                raise TpsFailure(TpsStatus.ERROR_MAC_ENROLL_PDU, "bad key blob") from err
            # The Java TPS never checks the proof; the legacy one did when configured.
            if config.verify_proof and not verify_proof(public_key, blob, proof, challenge):
                raise TpsFailure(TpsStatus.ERROR_MAC_ENROLL_PDU, "key generation proof")
        try:
            subject = subject_name(profile.subject, uid=user.uid, cn=user.cn, mail=user.mail)
            certificate = self.services.ca.issue(public_key, subject, key_type.use, mail=user.mail)
        except ValueError as err:
            raise TpsFailure(TpsStatus.ERROR_CA_RESPONSE, "CA refused the request") from err
        await self.conversation.status(end, "PROGRESS_ENROLL_CERT")
        return IssuedCertificate(key_type, certificate, size, archived)

    async def import_server_key(
        self, channel: SecureChannel, key_type: KeyTypeProfile, size: int
    ) -> tuple[rsa.RSAPublicKey, bytes]:
        """Server-side keygen: the KRA's key, wrapped with a fresh DES2 key, imported into
        the card through the temporary object FF00FFF3.

        TPSEnrollProcessor.java:3163-3287.
        """
        key = rsa.generate_private_key(public_exponent=65537, key_size=size)
        pkcs8 = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        des_key, iv = secrets.token_bytes(16), secrets.token_bytes(8)
        padder = symmetric_padding.PKCS7(64).padder()
        padded = padder.update(pkcs8) + padder.finalize()
        blob = (
            _KEY_BLOB_ENCRYPTED_PKCS8
            + size.to_bytes(2, "big")
            + des3_cbc_encrypt(des_key, padded, iv)
        )
        await channel.create_object(KEY_IMPORT_OBJECT_ID, len(blob), RA_ONLY_ACL)
        await channel.write_object(KEY_IMPORT_OBJECT_ID, blob)
        await channel.import_key_encrypted(
            key_type.private_slot,
            key_type.public_slot,
            KEY_IMPORT_OBJECT_ID,
            des_key,
            iv,
            kcv(des_key),
        )
        return key.public_key(), pkcs8

    def build_z0(
        self,
        profile: TokenTypeProfile,
        user: User,
        info: AppletInfo,
        issued: list[IssuedCertificate],
        old_z0: bytes | None,
    ) -> CombinedObject:
        """The final PKCS#11 object: the old z0's records, replaced by the new ones."""
        kept: tuple[ObjectRecord, ...] = ()
        version = secrets.randbelow(1000)
        if old_z0 is not None:
            try:
                old = decode_combined_object(old_z0)
            except MalformedResponseError as err:
                # DataFormatException while parsing the token's data
                # (TPSEnrollProcessor.java:470-476).
                raise TpsFailure(TpsStatus.ERROR_CANNOT_PERFORM_OPERATION, "bad z0") from err
            kept, version = old.records, old.object_version
        if version:
            # The object version moves on with each rewrite, skipping FF
            # (TPSEnrollProcessor.java:612-622).
            while version == 0xFF:
                version = secrets.randbelow(1000)
            version = (version + 1) & 0xFFFF
        new_records: list[ObjectRecord] = []
        for item in issued:
            label = item.key_type.label.replace("$keytype$", item.key_type.name)
            label = label.replace("$userid$", user.uid).replace("$cn$", user.common_name)
            der = item.certificate.public_bytes(serialization.Encoding.DER)
            new_records.extend(
                certificate_records(
                    TokenCertificate(item.key_type.cert_id, label, der, item.key_size)
                )
            )
        replaced = {record.object_id for record in new_records}
        records = [record for record in kept if record.object_id not in replaced] + new_records
        token_name = profile.token_name.replace("$cn$", user.common_name).replace("$uid$", user.uid)
        return CombinedObject(
            object_version=version,
            cuid=info.cuid,
            token_name=token_name,
            records=tuple(records),
            compressed=self.config.compress_z0,
        )

    def store(self, profile: TokenTypeProfile, user: User, issued: list[IssuedCertificate]) -> None:
        """Certificates recorded, token ACTIVE (TPSEnrollProcessor.java:660-700)."""
        db = self.services.db
        certificates = tuple(
            CertificateRecord(
                item.certificate.serial_number,
                item.key_type.name,
                item.certificate.subject.rfc4514_string(),
                item.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            )
            for item in issued
        )
        archived = tuple(
            (f"{item.certificate.serial_number:x}", item.archived_key)
            for item in issued
            if item.archived_key is not None
        )
        record = db.get(self.cuid) or TokenRecord(self.cuid, policy=db.default_policy)
        db.put(
            replace(
                record,
                status=TokenStatus.ACTIVE,
                user_id=user.uid,
                token_type=profile.name,
                key_info=self.link.key_info or record.key_info,
                applet_version=self.config.required_applet_version,
                certificates=certificates,
                archived_keys=record.archived_keys + archived,
            )
        )


def _key_numbers(z0: CombinedObject) -> bytes:
    """``getKeyIndexList``: the key slots the z0 describes, kept by CLEAR KEY SLOTS."""
    numbers = set()
    for record in z0.records:
        if record.object_id[:1] == b"k":
            index = object_index(record.object_id)
            if index is not None:
                numbers.add(index)
    return bytes(sorted(numbers))
