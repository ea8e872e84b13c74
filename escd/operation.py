# SPDX-License-Identifier: GPL-2.0-or-later
"""TPS operations (format, enroll, reset PIN, renew, unblock) as jobs: checks and driver.

``TpsOperations.start`` is what ``Token.Format/Enroll/ResetPin/Renew/Unblock`` call: it
checks the request against the token and the policy (``InvalidStateError``,
``NotSupportedError``, ``NotConfiguredError``), resolves the TPS URL and token type
through the ``TpsResolver`` port, and hands an ``Operation`` to the ``JobManager``.

``Operation`` drives one ``TpsSession`` and carries out its actions:

* ``SendMessage`` → the TPS connection (``TpsChannel``; TLS trust from the trust store).
  A TPS whose certificate is not trusted is shown to the user through the ``ServerTrust``
  port (a ``tls-trust`` prompt); if they pin it, the connection is opened once more,
  verified against the pin;
* ``SendApdu`` → the card, on the reader's worker thread, inside one PC/SC transaction
  held for the whole operation (the server's applet selection and secure channel must
  not be disturbed); 61xx is resolved there, 6Cxx goes back to the server;
* ``AskUser`` → the agent broker (``PromptBroker``), bounded and withdrawable;
* ``ReportProgress`` → the job; ``ResetCard`` → a warm reset; ``Finished`` → the result.

A pulled card (``abort`` with ``CardRemovedError``) or a ``Job.Cancel`` ends the task at
once, wherever it waits; the TPS connection is closed and the card released on every
path (``async with``), and afterwards the token is identified again, whatever happened
(unless the card was never touched).

Must not: log or keep a secret (answers go from the agent into one message and are
dropped when it is encoded), decide trust, or know concrete classes: every dependency is
a ``typing.Protocol`` port wired in ``escd.daemon``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from escd.agents import Answers, drop_answers
from escd.config import Config
from escd.errors import (
    CanceledError,
    CardError,
    CardRemovedError,
    EscdError,
    InvalidStateError,
    NotConfiguredError,
    NotSupportedError,
    TlsUntrustedError,
)
from escd.jobs import Job, JobManager, JobProgress
from escd.log import Secret
from escd.model import JobKind, OperationType, TokenState
from escd.tokens import TokenRegistry
from escd.tps import codec
from escd.tps.messages import Message, TpsMessage
from escd.tps.session import (
    Action,
    AskUser,
    FieldType,
    Finished,
    Prompt,
    PromptField,
    PromptKind,
    ReportProgress,
    ResetCard,
    SendApdu,
    SendMessage,
    SessionResult,
    TpsSession,
)
from escd.tps.status import Outcome, StatusSource, TpsStatus, end_op_message, outcome_of
from escd.trust import check_url_allowed
from escd.trustprompt import TPS_SERVER

logger = logging.getLogger(__name__)

#: pcscd polls card presence every 400 ms (docs/testing.md): a transmit that fails
#: because the card was pulled may be answered before the removal is reported. A card
#: failure therefore waits this long for the removal, so that it is named TokenRemoved.
REMOVAL_GRACE = 1.0

#: Operations that need an enrolled token (ESC offered them only there).
_NEED_ENROLLED = frozenset({JobKind.RESET_PIN, JobKind.RENEW, JobKind.UNBLOCK})
#: A GlobalPlatform card with or without the CoolKey applet can be formatted or enrolled.
_CAN_PERSONALIZE = frozenset({TokenState.NO_APPLET, TokenState.UNINITIALIZED, TokenState.ENROLLED})
#: The Java TPS answers these with END_OP result=1 message=0: not implemented (Dogtag
#: TPSSession.java, ``process``).
_MAY_BE_UNSUPPORTED = frozenset({OperationType.RENEW, OperationType.UNBLOCK})

CONFIRM_FORMAT_PROMPT = Prompt(
    PromptKind.CONFIRM_FORMAT,
    (
        PromptField(
            "confirm",
            "Format the token",
            FieldType.BOOL,
            description="Formatting erases the token's keys, certificates and PIN.",
        ),
    ),
    title="Format the smart card?",
    description="Formatting erases the token's keys, certificates and PIN.",
)


# -- ports ------------------------------------------------------------------------------


class CardChannel(Protocol):
    """The card of one reader, held (connected, inside a transaction) for an operation."""

    async def exchange(self, apdu: bytes) -> bytes:
        """Send a command APDU; the answer with 61xx resolved (6Cxx returned as is)."""
        ...

    async def reset(self) -> None:
        """Warm-reset the card (after END_OP of enroll and format)."""
        ...


class CardAccess(Protocol):
    """Where operations get their card from (the reader watcher's per-reader workers)."""

    def hold(self, reader: str) -> AbstractAsyncContextManager[CardChannel]:
        """The card in ``reader``, connected and in one transaction for the whole block."""
        ...

    async def reidentify(self, reader: str) -> None:
        """Read the card in ``reader`` again (it may have changed, or be gone)."""
        ...


class TpsChannel(Protocol):
    """One operation's conversation with the TPS (``escd.tps.connection.TpsConnection``)."""

    async def open(self, first_frame: bytes) -> None: ...

    async def send_message(self, message: TpsMessage) -> None: ...

    async def receive(self) -> Message: ...

    async def finish(self) -> None: ...

    async def aclose(self) -> None: ...


#: Builds the connection to a TPS URL (TLS context from the trust store); may raise
#: ``InsecureUrlError``.
ConnectTps = Callable[[str], TpsChannel]


class PromptBroker(Protocol):
    """Asks a person through an agent (``escd.agents.AgentBroker``)."""

    async def ask(self, job: str, starter: str, prompt: Prompt) -> Answers: ...


class ServerTrust(Protocol):
    """Asks whether to trust an untrusted server and pins it if so (``escd.trustprompt``)."""

    async def __call__(
        self,
        untrusted: TlsUntrustedError,
        *,
        job: str,
        starter: str,
        server: str,
        token_id: str = "",
    ) -> bool:
        """True when the presented certificate is now pinned for its host and port."""
        ...


class TpsTarget(Protocol):
    """Where an operation goes: the TPS URL ("" when none is known) and the token type."""

    @property
    def url(self) -> str: ...

    @property
    def token_type(self) -> str: ...


class TpsResolver(Protocol):
    """Picks the TPS URL and token type of an operation on a token.

    ``url`` and ``token_type`` are the caller's overrides ("" for none). Phone home
    implements this with per-token settings and the phone-home ``Operation`` URL.
    """

    def resolve_tps(self, token_id: str, *, url: str = "", token_type: str = "") -> TpsTarget: ...


# -- the request ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OperationRequest:
    """One operation as the D-Bus method asked for it (options already type-checked)."""

    kind: JobKind
    token_id: str
    #: The caller's unique bus name ("" when escd started it itself).
    caller: str = ""
    tps_url: str = ""
    token_type: str = ""
    #: Format only: the caller already asked the user (no ``confirm-format`` prompt).
    confirmed: bool = False
    #: ``/job/<sender>/<handle_token>`` when the caller chose it, else None.
    path: str | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything the driver needs, fixed when the job starts."""

    operation: OperationType
    kind: JobKind
    token_id: str
    reader: str
    atr: bytes
    url: str
    token_type: str
    locale: str
    caller: str
    ask_confirmation: bool
    card_timeout: float


class TpsOperations:
    """The application service behind the Token operation methods."""

    def __init__(
        self,
        registry: TokenRegistry,
        jobs: JobManager,
        cards: CardAccess,
        broker: PromptBroker,
        resolver: TpsResolver,
        connect: ConnectTps,
        config: Callable[[], Config],
        *,
        version: str,
        trust: ServerTrust | None = None,
    ) -> None:
        self._registry = registry
        self._jobs = jobs
        self._cards = cards
        self._broker = broker
        self.resolver = resolver
        self._connect = connect
        self._config = config
        self._version = version
        self._trust = trust

    def start(self, request: OperationRequest) -> Job:
        """Check ``request``, then run it as a job; the job (its path is the reply)."""
        operation = request.kind.tps_operation
        if operation is None:
            raise NotSupportedError(f"{request.kind} is not a TPS operation")
        config = self._config()
        token = self._registry.token(request.token_id)
        state = token.info.state
        if request.kind is JobKind.FORMAT and config.policy.deny_format:
            raise NotSupportedError("formatting tokens is disabled by policy (policy.deny_format)")
        if request.kind in _NEED_ENROLLED and state is not TokenState.ENROLLED:
            raise InvalidStateError(
                f"{request.kind} needs an enrolled token; this one is {state.name.lower()}"
            )
        if state not in _CAN_PERSONALIZE:
            raise InvalidStateError(f"the token cannot be used with a TPS ({state.name.lower()})")
        if not token.cuid:
            raise InvalidStateError("the token has no CUID, so no TPS can know it")
        # Checked before the resolver too: a busy token is Busy, whatever else is wrong.
        self._jobs.ensure_idle(token.token_id)
        target = self.resolver.resolve_tps(
            token.token_id, url=request.tps_url, token_type=request.token_type
        )
        if not target.url:
            raise NotConfiguredError(
                "no TPS URL is known for this token (none from phone home, none in tps.url)"
            )
        check_url_allowed(target.url, config.tps.allow_http)
        plan = _Plan(
            operation=operation,
            kind=request.kind,
            token_id=token.token_id,
            reader=token.reader,
            atr=token.info.atr,
            url=target.url,
            token_type=target.token_type or config.tps.token_type,
            locale=config.tps.locale,
            caller=request.caller,
            ask_confirmation=request.kind is JobKind.FORMAT and not request.confirmed,
            card_timeout=config.tps.message_timeout,
        )
        work = Operation(
            plan,
            self._cards,
            self._broker,
            self._connect,
            version=self._version,
            trust=self._trust,
        )
        job = self._jobs.start(
            request.kind, token.token_id, request.caller, work, path=request.path
        )
        # The job's task has not run yet (it starts at the next loop iteration).
        work.job_path = job.path
        return job


# -- the driver -------------------------------------------------------------------------


class Operation:
    """One TPS operation on one card: ``Work`` for the ``JobManager``."""

    def __init__(
        self,
        plan: _Plan,
        cards: CardAccess,
        broker: PromptBroker,
        connect: ConnectTps,
        *,
        version: str,
        trust: ServerTrust | None = None,
    ) -> None:
        self._plan = plan
        self._cards = cards
        self._broker = broker
        self._connect = connect
        self._version = version
        self._trust = trust
        self.job_path = ""
        #: The TPS connection of the conversation (a new one after a pin was added).
        self._connection: TpsChannel | None = None
        self._task: asyncio.Task[object] | None = None
        #: Why the operation was stopped from outside (first reason wins).
        self._abort: EscdError | None = None
        #: The outcome is known: later aborts (the card pulled afterwards) change nothing.
        self._decided = False
        #: The card was held (connected, in a transaction) at some point.
        self._held = False
        self._removed = asyncio.Event()

    # -- Work ----------------------------------------------------------------------------

    def abort(self, error: EscdError) -> None:
        if self._abort is not None or self._decided:
            return
        self._abort = error
        if isinstance(error, CardRemovedError):
            self._removed.set()
        task = self._task
        if task is not None and not task.done():
            task.cancel()

    async def run(self, progress: JobProgress) -> Outcome:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        plan = self._plan
        outcome: Outcome
        try:
            if self._abort is not None:  # aborted before the task got to run
                raise self._abort
            outcome = await self._run(progress)
        except asyncio.CancelledError:
            if self._abort is None or not _uncancel(task):
                raise
            outcome = outcome_of(self._abort)
        except EscdError as error:
            self._log_failure(error)
            outcome = outcome_of(error)
        finally:
            self._decided = True
            progress.waiting_for_input(False)
        # Whatever happened, a card that was used may have changed: read it again (also
        # after failures: a format or enroll can stop half-way). A card never held (a
        # declined confirmation, a card another program kept) has not changed.
        if self._held:
            try:
                await self._cards.reidentify(plan.reader)
            except EscdError as error:
                logger.debug("re-reading the card in %s failed: %s", plan.reader, error.message)
        return outcome

    # -- internals -----------------------------------------------------------------------

    async def _run(self, progress: JobProgress) -> Outcome:
        plan = self._plan
        if plan.ask_confirmation:
            await self._confirm_format(progress)
        logger.debug("%s of %s: holding the card in %s", plan.kind, plan.token_id, plan.reader)
        async with self._cards.hold(plan.reader) as card:
            self._held = True
            self._connection = self._connect(plan.url)
            try:
                result = await self._converse(card, progress)
                # The TPS has decided (END_OP, or the conversation broke): a card pulled
                # or a cancel while the connection closes must not change the outcome.
                self._decided = True
            finally:
                await self._tps.aclose()
        return self._outcome(result)

    async def _confirm_format(self, progress: JobProgress) -> None:
        answers = await self._ask(CONFIRM_FORMAT_PROMPT, progress)
        confirmed = answers.get("confirm") is True
        drop_answers(answers)
        if not confirmed:
            raise CanceledError("formatting was not confirmed")

    async def _ask(self, prompt: Prompt, progress: JobProgress) -> Answers:
        progress.waiting_for_input(True)
        try:
            return await self._broker.ask(self.job_path, self._plan.caller, prompt)
        finally:
            progress.waiting_for_input(False)

    async def _open(self, first_frame: bytes, progress: JobProgress) -> None:
        """Connect and send BEGIN_OP; an untrusted TPS may be pinned by the user, once."""
        connection = self._connection
        assert connection is not None
        try:
            await connection.open(first_frame)
            return
        except TlsUntrustedError as untrusted:
            if self._trust is None or not await self._ask_trust(untrusted, progress):
                raise
        # Exactly the certificate the user saw is pinned now: connect once more, verified
        # against that pin. Another certificate by now is TlsUntrusted, not asked again.
        await connection.aclose()
        self._connection = self._connect(self._plan.url)
        await self._connection.open(first_frame)

    async def _ask_trust(self, untrusted: TlsUntrustedError, progress: JobProgress) -> bool:
        assert self._trust is not None
        progress.waiting_for_input(True)
        try:
            return await self._trust(
                untrusted,
                job=self.job_path,
                starter=self._plan.caller,
                server=TPS_SERVER,
                token_id=self._plan.token_id,
            )
        finally:
            progress.waiting_for_input(False)

    async def _converse(self, card: CardChannel, progress: JobProgress) -> SessionResult:
        plan = self._plan
        session = TpsSession(
            plan.operation,
            atr=plan.atr,
            version=self._version,
            token_type=plan.token_type,
            locale=plan.locale,
        )
        pending: deque[Action] = deque(session.start())
        opened = False
        while True:
            while pending:
                action = pending.popleft()
                match action:
                    case SendMessage(message=outgoing):
                        try:
                            if opened:
                                await self._tps.send_message(outgoing)
                            else:
                                opened = True
                                await self._open(codec.encode(outgoing), progress)
                        except EscdError as error:
                            pending.extend(session.connection_failed(error))
                    case SendApdu(apdu=apdu):
                        try:
                            response = await self._exchange(card, apdu)
                        except EscdError as error:
                            pending.extend(session.card_failed(error))
                        else:
                            pending.extend(session.card_responded(response))
                    case AskUser(prompt=prompt):
                        # A prompt that cannot be answered ends the operation with its own
                        # error (NoAgent, Timeout, Canceled); the connection is closed.
                        answers = await self._ask(prompt, progress)
                        pending.extend(session.user_answered(_for_session(answers)))
                    case ReportProgress(progress=fraction, stage=stage, task_name=task_name):
                        progress.report(fraction, stage, task_name)
                    case ResetCard():
                        await self._reset(card)
                    case Finished(result=result):
                        if result.end_op is not None:
                            await self._tps.finish()
                        return result
            try:
                message = await self._tps.receive()
            except EscdError as error:
                pending.extend(session.connection_failed(error))
                continue
            pending.extend(session.receive(message))

    @property
    def _tps(self) -> TpsChannel:
        assert self._connection is not None
        return self._connection

    async def _exchange(self, card: CardChannel, apdu: bytes) -> bytes:
        try:
            # The server waits for our answer no longer than we wait for its messages.
            async with asyncio.timeout(self._plan.card_timeout):
                return await card.exchange(apdu)
        except TimeoutError:
            raise CardError(
                f"the card did not answer within {self._plan.card_timeout:g} s"
            ) from None
        except CardRemovedError:
            raise
        except CardError:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REMOVAL_GRACE):
                    await self._removed.wait()
            raise

    async def _reset(self, card: CardChannel) -> None:
        try:
            async with asyncio.timeout(self._plan.card_timeout):
                await card.reset()
        except (EscdError, TimeoutError) as error:
            # The operation is decided (END_OP came); a failed reset only means the card
            # keeps its state until the next power cycle.
            reason = error.message if isinstance(error, EscdError) else "timed out"
            logger.warning("resetting the card in %s failed: %s", self._plan.reader, reason)

    def _outcome(self, result: SessionResult) -> Outcome:
        end_op = result.end_op
        if (
            end_op is not None
            and not end_op.succeeded
            and end_op.message == TpsStatus.NO_ERROR
            and self._plan.operation in _MAY_BE_UNSUPPORTED
        ):
            # The Java TPS does not implement renew and unblock (Dogtag TPSSession.java).
            return Outcome(
                NotSupportedError.dbus_name,
                int(TpsStatus.NO_ERROR),
                StatusSource.TPS,
                end_op_message(end_op.result, end_op.message),
            )
        if result.error is not None:
            self._log_failure(result.error)
        return result.outcome

    def _log_failure(self, error: EscdError) -> None:
        # Job.Result carries escd's wording for the status code; the error's own text
        # (never a secret, escd.errors) says more, e.g. an untrusted certificate's
        # fingerprint, so it goes to the log.
        plan = self._plan
        logger.info(
            "%s of token %s: %s",
            plan.kind,
            plan.token_id,
            error.message,
            extra={"ESCD_TOKEN_CUID": plan.token_id, "ESCD_OPERATION": str(plan.kind)},
        )


def _for_session(answers: Mapping[str, object]) -> dict[str, Secret | str]:
    """The session takes text and secrets; a bool answer to a TPS prompt is not one."""
    values: dict[str, Secret | str] = {}
    for key, value in answers.items():
        if isinstance(value, Secret | str):
            values[key] = value
    return values


def _uncancel(task: asyncio.Task[object]) -> bool:
    """Undo our own ``cancel``; False when someone else (the daemon stopping) also cancelled."""
    return task.uncancel() == 0
