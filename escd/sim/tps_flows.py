# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated TPS's processors: what happens after BEGIN_OP, message by message and
APDU by APDU, as ``TPSSession`` / ``TPSProcessor`` / ``TPSPinResetProcessor`` do it.

Owns:

* ``run_session``: BEGIN_OP → the operation's processor → the END_OP to send, or None
  when the Java TPS would send none (``TPSSession.process``, TPSSession.java:112-160,
  and ``TPSMessage.intToOpType``, TPSMessage.java:219-283: unblock and renew answer
  ``result=1 message=0``, unknown operations ``operation=0``, and operation 0 falls
  through to enroll);
* ``Processor``: the pieces every operation shares: the login
  (``checkAndAuthenticateUser``, any failure is status 14), the new PIN
  (``checkAndHandlePinReset``), FORMAT (``TPSProcessor.format``) and PIN RESET
  (``TPSPinResetProcessor``). ENROLL lives in ``escd.sim.tps_enroll``.

Line numbers are of Dogtag's TPS sources (dogtagpki/pki).

Each Java quirk is reproduced behind its ``Quirk`` switch. Must not: do network I/O
(``escd.sim.tps_server`` does), or log PINs, passwords or APDU data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from escd.log import Secret
from escd.model import OperationType
from escd.sim.ca import CertificateAuthority
from escd.sim.tps_card import AppletInfo, CardLink
from escd.sim.tps_channel import (
    ClientGone,
    ClientPort,
    Conversation,
    SecureChannel,
    SessionAborted,
    SessionBroken,
    Tks,
    TpsFailure,
    Transcript,
)
from escd.sim.tps_config import Operation, Quirk, TokenTypeProfile, TpsConfig
from escd.sim.tps_db import (
    TokenDb,
    TokenRecord,
    TokenStatus,
    User,
    UserDirectory,
    transition_allowed,
)
from escd.tps.messages import (
    AuthParameter,
    BeginOp,
    EndOp,
    ExtendedLoginRequest,
    ExtendedLoginResponse,
    LoginRequest,
    LoginResponse,
    NewPinRequest,
    NewPinResponse,
)
from escd.tps.status import TpsStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    """What a session works with besides the client: settings, DB, users, CA, TKS."""

    config: TpsConfig
    db: TokenDb
    users: UserDirectory
    ca: CertificateAuthority
    tks: Tks
    #: The URL SET ISSUER INFO writes (the server's own phone-home URL by default).
    issuer_info_url: str


@dataclass(slots=True)
class SessionRecord:
    """One finished session, for tests and the operator: never holds a secret."""

    operation: int
    cuid: str = ""
    user_id: str | None = None
    end_op: EndOp | None = None
    #: Why the session ended without END_OP, or the reason of a failure status.
    outcome: str = ""
    transcript: Transcript = field(default_factory=Transcript)


class Processor:
    """State of one operation: the conversation, the card link, who logged in."""

    operation = Operation.FORMAT

    def __init__(self, services: Services, begin: BeginOp, port: ClientPort) -> None:
        self.services = services
        self.config = services.config
        self.begin = begin
        self.port = port
        self.conversation = Conversation(
            port, status_updates=begin.extension("statusUpdate") == "true"
        )
        self.link = CardLink(self.conversation, services.config, services.tks)
        self.user: User | None = None
        self.cuid = ""

    def quirk(self, quirk: Quirk) -> bool:
        return self.config.quirk(quirk)

    async def run(self) -> None:
        await self.format(skip_auth=False)

    # -- shared steps ----------------------------------------------------------------------

    def token_type(self) -> TokenTypeProfile:
        return self.config.resolve_token_type(self.begin.extension("tokenType"), self.operation)

    async def applet_info(self) -> AppletInfo:
        info = await self.link.applet_info()
        self.cuid = info.cuid.hex().upper()
        return info

    async def channel_for_applet(self) -> SecureChannel:
        """A secure channel meant for the CoolKey applet (SET PIN, objects, keys)."""
        if not self.quirk(Quirk.STICKY_SELECTION):
            await self.link.select_coolkey()
        return await self.link.open_channel()

    async def channel_for_card_manager(self) -> SecureChannel:
        """The never-used channel of ``checkAndUpgradeApplet`` (TPSProcessor.java:1166-1176)."""
        if not self.quirk(Quirk.STICKY_SELECTION):
            assert self.link.card_manager is not None
            await self.link.select(self.link.card_manager)
        return await self.link.open_channel()

    async def authenticate(self, token_type: str) -> User | None:
        """``checkAndAuthenticateUser``; with authentication off, Java refuses enroll and
        pin reset with 14 (TPSProcessor.java:4169-4172), format just skips the login."""
        if self.config.auth_enabled(self.operation, token_type):
            self.user = await self.login()
        elif self.operation is not Operation.FORMAT and self.quirk(Quirk.AUTH_MANDATORY):
            raise TpsFailure(TpsStatus.ERROR_LOGIN, "authentication is mandatory")
        elif self.operation is not Operation.FORMAT:
            anonymous = self.services.users.get(self.config.anonymous_user)
            self.user = anonymous or User(self.config.anonymous_user, "")
        return self.user

    async def login(self) -> User:
        """One login attempt; *any* failure is END_OP 14 (TPSProcessor.java:4148-4166)."""
        try:
            return await self._login()
        except SessionAborted:
            raise
        except Exception as err:  # Java's catch-all turns everything into 14
            logger.info("login failed (%s)", type(err).__name__)
            raise TpsFailure(TpsStatus.ERROR_LOGIN, "login failed") from err

    async def _login(self) -> User:
        config = self.config
        secret: Secret
        if self.begin.extension("extendedLoginRequest") is not None:
            locale = self.begin.extension("locale") or "en"
            if locale not in config.locales:
                # auth.getUiTitle(locale) is null: an NPE inside the login step.
                raise LookupError(f"no login texts for locale {locale!r}")
            request = ExtendedLoginRequest(
                title=config.login_title,
                description=config.login_description,
                parameters=(
                    AuthParameter("UID", config.uid_label, config.uid_label, "string"),
                    AuthParameter(
                        "PASSWORD", config.password_label, config.password_label, "password"
                    ),
                ),
            )
            await self.port.send(request)
            reply = await self.port.receive()
            if not isinstance(reply, ExtendedLoginResponse):
                raise TypeError(f"expected EXTENDED_LOGIN_RESPONSE, got {reply.msg_type.name}")
            # The Java TPS reads only UID and PASSWORD (TPSMessage.createMessage).
            values = dict(reply.values)
            uid, secret = values["UID"].reveal(), values["PASSWORD"]
            for value in values.values():
                if value is not secret:
                    value.drop()
        else:
            await self.port.send(LoginRequest(0, 0))
            reply = await self.port.receive()
            if not isinstance(reply, LoginResponse):
                raise TypeError(f"expected LOGIN_RESPONSE, got {reply.msg_type.name}")
            uid, secret = reply.screen_name, reply.password
        try:
            user = self.services.users.authenticate(uid, secret.reveal())
        finally:
            secret.drop()
        if user is None:
            raise PermissionError("unknown user or wrong password")
        logger.info("user %s logged in", user.uid)
        return user

    async def new_pin(self, channel: SecureChannel) -> None:
        """``checkAndHandlePinReset`` (TPSProcessor.java:4039-4109).

        NEW_PIN, CREATE PIN, SET PIN.
        """
        config = self.config
        await self.port.send(NewPinRequest(config.pin_min_length, config.pin_max_length))
        reply = await self.port.receive()
        if not isinstance(reply, NewPinResponse):
            raise SessionBroken(f"expected NEW_PIN_RESPONSE, got {reply.msg_type.name}")
        try:
            pin = reply.new_pin.reveal()
        finally:
            reply.new_pin.drop()
        if not config.pin_min_length <= len(pin) <= config.pin_max_length:
            # TPSException(String): the status defaults to SNAC (TPSProcessor.java:4039-4109).
            raise TpsFailure(TpsStatus.ERROR_SNAC, "new PIN length out of bounds")
        await channel.create_pin(config.pin_max_retries, config.create_pin_string)
        await channel.set_pin(pin)

    def record(self) -> TokenRecord | None:
        return self.services.db.get(self.cuid)

    # -- FORMAT (TPSProcessor.java:2196-2688) ----------------------------------------------

    async def format(self, *, skip_auth: bool, token_type: TokenTypeProfile | None = None) -> None:
        config, db = self.config, self.services.db
        info = await self.applet_info()
        record = self.record()
        profile = token_type or self.config.resolve_token_type(
            self.begin.extension("tokenType"), Operation.FORMAT
        )
        if not skip_auth and config.auth_enabled(Operation.FORMAT, profile.name):
            self.user = await self.login()
        if record is not None:
            if not transition_allowed(record.status, TokenStatus.FORMATTED):
                raise TpsFailure(TpsStatus.ERROR_DISABLED_TOKEN, "transition to FORMATTED")
        else:
            if not config.allow_unknown_tokens:
                raise TpsFailure(TpsStatus.ERROR_UNKNOWN_TOKEN, "unknown token")
            # "add token during format": the new record starts UNFORMATTED
            # (TPSProcessor.java:2520-2530).
            record = db.add(self.cuid, status=TokenStatus.UNFORMATTED, token_type=profile.name)
        self.link.expected_key_info = record.key_info
        version = info.version
        if self.quirk(Quirk.REPEAT_APPLET_INFO):
            build_id = await self.link.applet_version()
            version = replace(info, build_id=build_id).version
        await self.link.discover()
        if self.quirk(Quirk.RELOAD_ON_FORMAT) or version != config.required_applet_version:
            await self.link.upgrade_applet(10, 90)
        if config.issuer_info:
            channel = await self.channel_for_applet()
            await channel.set_issuer_info(self.services.issuer_info_url)
        await self.conversation.status(100, "PROGRESS_DONE")
        if self.quirk(Quirk.UNUSED_CHANNELS):
            # checkAndUpgradeSymKeys + externalAuthenticate: the last APDUs
            # (TPSProcessor.java:2583, 2618).
            await self.channel_for_applet()
        serials = [cert.serial for cert in record.certificates if not cert.revoked]
        self.services.ca.revoke(serials)
        db.update(
            self.cuid,
            status=TokenStatus.FORMATTED,
            user_id=None,
            token_type=profile.name,
            key_info=self.link.key_info or record.key_info,
            applet_version=config.required_applet_version,
            certificates=(),
        )
        logger.info("token %s formatted", self.cuid)


class PinResetProcessor(Processor):
    """RESET PIN (TPSPinResetProcessor.java:80-380)."""

    operation = Operation.PIN_RESET

    async def run(self) -> None:
        db = self.services.db
        await self.conversation.status(10, "PROGRESS_START_PIN_RESET")
        await self.applet_info()
        record = self.record()
        if record is None:
            # TPSPinResetProcessor.java:117-124 concatenates status 16 into the text: END_OP
            # carries SNAC.
            status = TpsStatus.ERROR_SNAC
            if not self.quirk(Quirk.PIN_RESET_UNKNOWN_IS_SNAC):
                status = TpsStatus.ERROR_UNKNOWN_TOKEN
            raise TpsFailure(status, "token not in the token DB")
        profile = self.token_type()
        await self.conversation.status(15, "PROGRESS_PIN_RESET_RESOLVE_PROFILE")
        await self.authenticate(profile.name)
        if record.status is not TokenStatus.ACTIVE or not record.policy.pin_reset:
            raise TpsFailure(TpsStatus.ERROR_NOT_PIN_RESETABLE, "pin reset not allowed")
        self.link.expected_key_info = record.key_info
        # checkAndUpgradeApplet with update.applet.enable=false: discovery happens inside
        # setupSecureChannel, then a channel nobody uses (TPSProcessor.java:665, 1166-1176).
        await self.link.discover()
        if self.quirk(Quirk.UNUSED_CHANNELS):
            await self.channel_for_card_manager()
        if self.quirk(Quirk.REPEAT_APPLET_INFO):
            await self.applet_info()
        channel = await self.channel_for_applet()
        await self.new_pin(channel)
        await self.conversation.status(100, "PROGRESS_PIN_RESET_COMPLETE")
        policy = record.policy
        if policy.reset_pin_reset_to_no:
            policy = replace(policy, pin_reset=False)
        db.update(self.cuid, key_info=self.link.key_info or record.key_info, policy=policy)
        logger.info("PIN of token %s reset", self.cuid)


def _processor_for(operation: int) -> tuple[type[Processor] | None, int]:
    """The processor class and the END_OP ``operation`` of a BEGIN_OP operation code."""
    from escd.sim.tps_enroll import EnrollProcessor

    if operation in (0, OperationType.ENROLL):
        # intToOpType(0) falls through to OP_ENROLL: a missing break (TPSMessage.java).
        return EnrollProcessor, OperationType.ENROLL
    if operation == OperationType.FORMAT:
        return Processor, OperationType.FORMAT
    if operation == OperationType.RESET_PIN:
        return PinResetProcessor, OperationType.RESET_PIN
    if operation in (OperationType.UNBLOCK, OperationType.RENEW):
        return None, operation
    return None, 0


def end_op_operation(operation: int) -> int:
    """The ``operation`` END_OP carries for a BEGIN_OP ``operation`` (OpType mapping)."""
    return _processor_for(operation)[1]


async def run_session(
    services: Services, begin: BeginOp, port: ClientPort, record: SessionRecord
) -> EndOp | None:
    """Run one operation; the END_OP to send, or None when the Java TPS sends none.

    ``ClientGone`` and ``SessionBroken`` end the session silently; ``SessionAborted``
    (a fault switch) propagates to the server, which has already acted on it.
    """
    processor_class, end_operation = _processor_for(int(begin.operation))
    record.operation = end_operation
    if processor_class is None:
        # OP_RENEW, OP_UNBLOCK, OP_UNDEFINED: nothing happens, result=1 message=0.
        record.outcome = "operation not implemented"
        record.end_op = EndOp(end_operation, 1, 0)
        return record.end_op
    processor = processor_class(services, begin, port)
    record.transcript = processor.conversation.transcript
    try:
        await processor.run()
    except TpsFailure as failure:
        record.outcome = failure.reason
        record.end_op = EndOp(end_operation, 1, failure.status)
        logger.info("operation %d failed with status %d", end_operation, failure.status)
    except (ClientGone, SessionBroken) as err:
        record.outcome = f"{type(err).__name__}: {err}"
        logger.info("session ended without END_OP: %s", record.outcome)
        return None
    else:
        record.end_op = EndOp(end_operation, 0, 0)
    finally:
        record.cuid = processor.cuid
        record.user_id = processor.user.uid if processor.user else None
    return record.end_op
