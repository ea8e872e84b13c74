# SPDX-License-Identifier: GPL-2.0-or-later
"""The PC/SC card connection: ``PcscCardSession`` over pyscard's ``smartcard.scard``.

The edge between escd and pcscd for card traffic. A session owns one card handle
(``SCardConnect``, shared mode, T=0 or T=1) and, when opened by reader name alone, its
own context; it sends APDUs as ``bytes``, holds transactions, warm-resets and
disconnects. ``open_context`` and ``list_readers`` serve callers that enumerate readers
themselves (``escd probe``).

Rules: only the low-level ``smartcard.scard`` calls, never pyscard's framework; every
PC/SC failure becomes one of our errors, raised ``from`` the original: a removed or
reset card ``CardRemovedError``, pcscd gone ``PcscUnavailableError``, polkit's refusal
``PcscAccessDeniedError``, anything else ``CardError``. APDUs are logged at TRAFFIC with
``describe_apdu``/``describe_response`` only, never their data. Blocking: call from a
worker thread, one thread per session at a time.
"""

from __future__ import annotations

import logging
from typing import Any

from smartcard import scard

from escd.errors import CardError, CardRemovedError, PcscAccessDeniedError, PcscUnavailableError
from escd.log import TRAFFIC, describe_apdu, describe_response

logger = logging.getLogger(__name__)


def _code(value: int) -> int:
    # pyscard hands out HRESULTs as signed or unsigned ints depending on the call.
    return value & 0xFFFFFFFF


_SUCCESS = 0
_NO_READERS = _code(scard.SCARD_E_NO_READERS_AVAILABLE)
#: The card is gone or was reset under us: whatever we had selected is lost.
_REMOVED = frozenset(
    _code(value)
    for value in (
        scard.SCARD_W_REMOVED_CARD,
        scard.SCARD_W_RESET_CARD,
        scard.SCARD_E_NO_SMARTCARD,
        scard.SCARD_W_UNPOWERED_CARD,
        scard.SCARD_E_READER_UNAVAILABLE,
    )
)
#: pcscd is not there: not running, stopped, or the socket broke (SCARD_F_COMM_ERROR).
_UNAVAILABLE = frozenset(
    _code(value)
    for value in (scard.SCARD_E_NO_SERVICE, scard.SCARD_F_COMM_ERROR, scard.SCARD_E_SERVICE_STOPPED)
)
#: pcscd's polkit check refused this user.
_DENIED = frozenset(
    _code(value) for value in (scard.SCARD_E_NO_ACCESS, scard.SCARD_W_SECURITY_VIOLATION)
)
_MESSAGES = {
    _code(scard.SCARD_E_SHARING_VIOLATION): "the card is in exclusive use by another program",
    _code(scard.SCARD_W_UNRESPONSIVE_CARD): "the card does not answer (mute card)",
    _code(scard.SCARD_W_UNSUPPORTED_CARD): "the reader cannot talk to this card",
    _code(scard.SCARD_E_UNKNOWN_READER): "no such reader",
    _code(scard.SCARD_E_PROTO_MISMATCH): "the card offers neither T=0 nor T=1",
    _code(scard.SCARD_E_TIMEOUT): "the reader timed out",
    # What pcscd answers while a card pulled mid-command is not yet noticed as removed
    # (its presence poll runs every 400 ms, docs/testing.md).
    _code(scard.SCARD_E_NOT_TRANSACTED): "the reader could not exchange the command "
    "(was the card pulled?)",
}


_PYSCARD_ERRORS = (scard.error, TypeError, ValueError, SystemError)


def describe_code(code: int) -> str:
    """pcsc-lite's text for an HRESULT, with its hex value."""
    code = _code(code)
    try:
        text = str(scard.SCardGetErrorMessage(code)).strip().rstrip(".")
    except _PYSCARD_ERRORS:
        text = "unknown error"
    return f"{text} (0x{code:08X})"


def error_for(code: int, what: str) -> Exception:
    """Our error for a failed PC/SC call; ``what`` names the step, never any data."""
    code = _code(code)
    reason = f"{what}: {_MESSAGES.get(code) or describe_code(code)}"
    if code in _REMOVED:
        return CardRemovedError(reason)
    if code in _DENIED:
        return PcscAccessDeniedError(reason)
    if code in _UNAVAILABLE:
        return PcscUnavailableError(reason)
    return CardError(reason)


class PcscCallError(Exception):
    """A PC/SC call's failing HRESULT: the ``__cause__`` of the error we raise for it."""

    def __init__(self, call: str, code: int) -> None:
        super().__init__(f"{call} returned {describe_code(code)}")
        self.call = call
        self.code = code


def _invoke(function: Any, *args: Any, what: str) -> tuple[int, tuple[Any, ...]]:
    """Call a pyscard function: its HRESULT (unsigned) and its other results."""
    try:
        result = function(*args)
    except _PYSCARD_ERRORS as err:
        raise CardError(f"{what}: pyscard failed ({err.__class__.__name__})") from err
    if isinstance(result, list | tuple):
        return _code(int(result[0])), tuple(result[1:])
    return _code(int(result)), ()


def _call(function: Any, *args: Any, what: str) -> Any:
    """Call a pyscard function; raise our error for a failure, else return its result(s)."""
    code, values = _invoke(function, *args, what=what)
    if code != _SUCCESS:
        raise error_for(code, what) from PcscCallError(function.__name__, code)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def open_context() -> int:
    """A new PC/SC context; ``PcscUnavailableError`` when pcscd does not answer."""
    context: int = _call(
        scard.SCardEstablishContext, scard.SCARD_SCOPE_USER, what="connecting to pcscd"
    )
    return context


def release_context(context: int) -> None:
    """Release a context; a context pcscd already dropped is not an error."""
    try:
        scard.SCardReleaseContext(context)
    except _PYSCARD_ERRORS:
        logger.debug("releasing the PC/SC context failed", exc_info=True)


def list_readers(context: int) -> list[str]:
    """The readers pcscd knows, in its order; an empty list when there are none."""
    what = "listing readers"
    code, values = _invoke(scard.SCardListReaders, context, [], what=what)
    if code == _NO_READERS:
        return []
    if code != _SUCCESS:
        raise error_for(code, what) from PcscCallError("SCardListReaders", code)
    return [str(reader) for reader in (values[0] if values else [])]


class PcscCardSession:
    """A card in one reader, connected in shared mode (implements ``CardSession``)."""

    def __init__(self, context: int, reader: str, *, owns_context: bool = False) -> None:
        """Connect to the card in ``reader`` (blocking)."""
        self._context = context
        self._owns_context = owns_context
        self._reader = reader
        self._transmit_what = f"sending a command to the card in {reader}"
        self._card: int | None = None
        self._in_transaction = False
        try:
            self._card, self._protocol = _call(
                scard.SCardConnect,
                context,
                reader,
                scard.SCARD_SHARE_SHARED,
                scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
                what=f"connecting to the card in {reader}",
            )
            self._atr = self._read_atr()
        except BaseException:
            self.close()
            raise
        logger.debug("connected to the card in %s (T=%d)", reader, self._protocol_number)

    @classmethod
    def open(cls, reader: str) -> PcscCardSession:
        """Connect with a context of its own, released by ``close`` (for worker threads)."""
        # On failure the constructor's close() releases the context it was handed.
        return cls(open_context(), reader, owns_context=True)

    @property
    def reader(self) -> str:
        return self._reader

    @property
    def atr(self) -> bytes:
        return self._atr

    @property
    def _protocol_number(self) -> int:
        return 1 if self._protocol == scard.SCARD_PROTOCOL_T1 else 0

    def _handle(self, what: str) -> int:
        if self._card is None:
            raise CardError(f"{what}: the card session is closed")
        return self._card

    def _read_atr(self) -> bytes:
        what = f"reading the ATR in {self._reader}"
        status = _call(scard.SCardStatus, self._handle(what), what=what)
        return bytes(status[-1])

    def transmit(self, apdu: bytes) -> bytes:
        """Send one command APDU; return its response data and SW1 SW2."""
        card = self._handle("sending a command")
        pci = (
            scard.SCARD_PCI_T1 if self._protocol == scard.SCARD_PROTOCOL_T1 else scard.SCARD_PCI_T0
        )
        # Once per APDU: describe only what will be written (TRAFFIC is normally off).
        traffic = logger.isEnabledFor(TRAFFIC)
        if traffic:
            logger.log(TRAFFIC, "%s > %s", self._reader, describe_apdu(apdu))
        response = bytes(
            _call(scard.SCardTransmit, card, pci, list(apdu), what=self._transmit_what)
        )
        if traffic:
            logger.log(TRAFFIC, "%s < %s", self._reader, describe_response(response))
        return response

    def begin_transaction(self) -> None:
        what = f"holding the card in {self._reader}"
        _call(
            scard.SCardBeginTransaction,
            self._handle(what),
            what=what,
        )
        self._in_transaction = True

    def end_transaction(self) -> None:
        what = f"releasing the card in {self._reader}"
        self._in_transaction = False
        _call(
            scard.SCardEndTransaction,
            self._handle(what),
            scard.SCARD_LEAVE_CARD,
            what=what,
        )

    def reset(self) -> None:
        """Warm reset (``SCardReconnect`` with ``SCARD_RESET_CARD``); re-reads the ATR."""
        what = f"resetting the card in {self._reader}"
        self._protocol = _call(
            scard.SCardReconnect,
            self._handle(what),
            scard.SCARD_SHARE_SHARED,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
            scard.SCARD_RESET_CARD,
            what=what,
        )
        self._in_transaction = False
        self._atr = self._read_atr()

    def close(self) -> None:
        """Disconnect (leaving the card as it is) and release an owned context; idempotent."""
        card, self._card = self._card, None
        if card is not None:
            try:
                if self._in_transaction:
                    scard.SCardEndTransaction(card, scard.SCARD_LEAVE_CARD)
                scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)
            except _PYSCARD_ERRORS:
                logger.debug("disconnecting from %s failed", self._reader, exc_info=True)
            self._in_transaction = False
        if self._owns_context:
            self._owns_context = False
            release_context(self._context)

    def __enter__(self) -> PcscCardSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
