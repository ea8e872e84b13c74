# SPDX-License-Identifier: GPL-2.0-or-later
"""escctl's answers to escd's prompts: from the command line, from files, or at the terminal.

``TerminalAgent`` is the ``AgentHandler`` escctl registers for its own jobs. It answers
the user id from ``--user``, passwords from ``--password-file``, the new PIN from
``--pin-file``, the format confirmation from ``--yes`` and an untrusted server
(``tls-trust``) from ``--trust-server FINGERPRINT`` (yes only when the certificate shown
has exactly that SHA-256); everything else is asked at the terminal (prompts on stderr,
secrets without echo, a new PIN twice). A ``tls-trust`` prompt that cannot be answered
(no input) is declined, never canceled, so the job fails with ``TlsUntrusted`` as it
would without the prompt. Reading stdin never blocks the event loop, so a prompt escd
withdraws (timeout, card pulled, job canceled) ends at once and the terminal's echo is
restored.

Must not: print, log or keep an answer; a value from a file that escd did not accept is
not sent again (escctl gives up instead of looping).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from escd.ctl.agent import AgentCanceled, Answer, FieldSpec, PromptRequest
from escd.log import Secret

#: Field ids that mean "user id" and "password" (legacy login and Dogtag's extended login).
USER_IDS = frozenset({"screen_name", "uid", "userid", "user", "username", "login"})
PASSWORD_IDS = frozenset({"password", "pwd", "passwd", "screen_name_pwd"})
#: How often a new PIN is asked again locally when the two entries differ.
PIN_CONFIRM_ATTEMPTS = 3
_READ_SIZE = 4096
_HEX64 = re.compile(r"[0-9a-f]{64}")


def parse_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as ``AB:CD:…``, ``ab cd …`` or plain hex → 64 lower-case hex.

    Raises ``ValueError`` for anything else (argparse shows it as a usage error).
    """
    plain = re.sub(r"[\s:]", "", text).lower().removeprefix("sha256").lstrip("=/")
    if not _HEX64.fullmatch(plain):
        raise ValueError("a SHA-256 fingerprint has 64 hex digits, e.g. AB:CD:…")
    return plain


def fingerprint_argument(text: str) -> str:
    """``parse_fingerprint`` as an argparse ``type`` (``--trust-server``)."""
    try:
        return parse_fingerprint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def read_secret_file(path: Path) -> Secret:
    """The first line of ``path`` without its line ending (a secret for one run).

    ``OSError`` when it cannot be read; ``ValueError`` when it is not UTF-8, whose text
    names the file only (a decoding error would quote a byte of the secret and where).
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    return Secret(text.splitlines()[0] if text else "")


@dataclass(frozen=True)
class Presets:
    """Answers given on the command line (the secrets read from their files)."""

    user: str | None = None
    password: Secret | None = None
    pin: Secret | None = None
    yes: bool = False
    #: ``--trust-server``: the SHA-256 (plain hex) of the one certificate to trust.
    trust_server: str | None = None


class StdinLines:
    """Lines from a file descriptor without blocking the loop (readable-callbacks)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self._eof = False

    async def readline(self) -> str:
        while b"\n" not in self._buffer and not self._eof:
            await self._fill()
        line, sep, rest = self._buffer.partition(b"\n")
        if not sep and not line:
            raise EOFError("no more input")
        self._buffer = rest
        return line.decode("utf-8", "replace").rstrip("\r")

    async def _fill(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        try:
            loop.add_reader(self._fd, readable)
        except (PermissionError, ValueError, OSError):
            # A regular file (or /dev/null) cannot be polled; reading it never blocks.
            self._take(os.read(self._fd, _READ_SIZE))
            return
        try:
            await ready
        finally:
            loop.remove_reader(self._fd)
        self._take(os.read(self._fd, _READ_SIZE))

    def _take(self, data: bytes) -> None:
        if data:
            self._buffer += data
        else:
            self._eof = True


class TerminalAgent:
    """``AgentHandler`` for escctl: presets first, then the terminal."""

    def __init__(
        self,
        presets: Presets,
        *,
        interactive: bool,
        stdin_fd: int | None = None,
        err: TextIO | None = None,
        before_prompt: Callable[[], None] | None = None,
    ) -> None:
        self._presets = presets
        self._interactive = interactive
        self._fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
        self._err = err or sys.stderr
        self._lines = StdinLines(self._fd)
        self._before_prompt = before_prompt or (lambda: None)
        #: Field ids answered from presets, to recognize a rejected preset on retry.
        self._from_presets: set[str] = set()
        #: A question is on the terminal, waiting for its line.
        self._asking = False
        #: Ctrl+C already ended that question's line.
        self._interrupted = False

    # -- AgentHandler ----------------------------------------------------------------------

    async def answer(self, request: PromptRequest) -> dict[str, Answer]:
        self._before_prompt()
        if request.previous_error:
            self._say(request.previous_error)
            if request.attempt > 1 and any(f.id in self._from_presets for f in request.fields):
                raise AgentCanceled("escd did not accept the value given on the command line")
        if request.kind == "confirm-format":
            return {field.id: await self._confirm_format(field) for field in request.fields}
        if request.kind == "tls-trust":
            trusted = await self._tls_trust(request)
            return {field.id: trusted for field in request.fields if field.type == "bool"}
        if request.title:
            self._say(request.title)
        if request.description:
            self._say(request.description)
        answers: dict[str, Answer] = {}
        for field in request.fields:
            answers[field.id] = await self._field(field)
        return answers

    def withdrawn(self, request: PromptRequest) -> None:
        self._say("")
        self._say(f"escd withdrew the {request.kind} prompt.")

    def released(self) -> None:
        pass

    # -- fields ----------------------------------------------------------------------------

    async def _field(self, field: FieldSpec) -> Answer:
        preset = self._preset(field)
        if preset is not None:
            self._from_presets.add(field.id)
            return preset
        self._from_presets.discard(field.id)
        if field.type == "bool":
            return await self._yes_no(f"{field.label}? [y/N] ")
        if field.type == "choice":
            return await self._choice(field)
        if field.type == "pin":
            return await self._new_pin(field)
        return await self._ask(f"{field.label}: ", secret=field.is_secret)

    def _preset(self, field: FieldSpec) -> Answer | None:
        key = field.id.lower()
        if field.type == "text" and key in USER_IDS:
            return self._presets.user
        if field.type == "secret" and key in PASSWORD_IDS and self._presets.password:
            return self._presets.password.reveal()
        if field.type == "pin" and self._presets.pin is not None:
            return self._presets.pin.reveal()
        return None

    async def _confirm_format(self, field: FieldSpec) -> Answer:
        if self._presets.yes:
            return True
        if field.description:
            self._say(field.description)
        confirmed = await self._yes_no("Format this token? [y/N] ")
        if not confirmed:
            raise AgentCanceled("formatting was not confirmed", rejected=True)
        return True

    async def _tls_trust(self, request: PromptRequest) -> bool:
        cert = request.certificate
        if request.title:
            self._say(request.title)
        if request.description:
            self._say(request.description)
        host, port = str(cert.get("host", "")), cert.get("port", "")
        self._say(f"  server:  {f'[{host}]' if ':' in host else host}:{port}")
        self._say(f"  subject: {cert.get('subject', '')}")
        self._say(f"  issuer:  {cert.get('issuer', '')}")
        self._say(f"  SHA-256: {cert.get('fingerprint', '')}")
        valid = f"{_date(cert.get('not_before'))} to {_date(cert.get('not_after'))}"
        self._say(f"  valid:   {valid}")
        wanted = self._presets.trust_server
        if wanted is not None:
            try:
                shown = parse_fingerprint(str(cert.get("fingerprint", "")))
            except ValueError:
                shown = ""
            if shown == wanted:
                self._say("Trusting it: its SHA-256 is the one given with --trust-server.")
                return True
            self._say("Not trusting it: its SHA-256 is not the one given with --trust-server.")
            return False
        try:
            return await self._yes_no("Trust this server? [y/N] ")
        except AgentCanceled:
            # No input (or escctl may not ask): declined, as if nobody had been asked.
            self._say("no answer: not trusting it")
            return False

    async def _new_pin(self, field: FieldSpec) -> str:
        bounds = ""
        if field.min_length or field.max_length:
            bounds = f" ({field.min_length}-{field.max_length} characters)"
        mismatches = 0
        while mismatches < PIN_CONFIRM_ATTEMPTS:
            pin = await self._ask(f"{field.label}{bounds}: ", secret=True)
            if len(pin) < field.min_length or (field.max_length and len(pin) > field.max_length):
                # Refused here: escd would only ask again after the confirmation.
                self._say(
                    f"The new PIN must have {field.min_length} to {field.max_length} characters."
                    if field.max_length
                    else f"The new PIN must have at least {field.min_length} characters."
                )
                continue
            if not field.confirm:
                return pin
            again = await self._ask(f"{field.label} again: ", secret=True)
            if pin == again:
                return pin
            mismatches += 1
            self._say("The two PINs differ; try again.")
        raise AgentCanceled("the new PIN was not confirmed")

    async def _choice(self, field: FieldSpec) -> str:
        for number, option in enumerate(field.options, 1):
            self._say(f"  {number}) {option}")
        while True:
            answer = await self._ask(f"{field.label} [1-{len(field.options)}]: ", secret=False)
            if answer.isdigit() and 1 <= int(answer) <= len(field.options):
                return field.options[int(answer) - 1]
            if answer in field.options:
                return answer
            self._say("Please pick one of the numbers shown.")

    async def _yes_no(self, question: str) -> bool:
        answer = await self._ask(question, secret=False)
        return answer.strip().lower() in ("y", "yes")

    async def _ask(self, question: str, *, secret: bool) -> str:
        if not self._interactive:
            raise AgentCanceled(f"{question.rstrip(': ')} is needed and escctl may not ask")
        try:
            with self._echo_off(secret):
                # Echo goes off before the question shows: what is typed at once stays hidden.
                self._err.write(question)
                self._err.flush()
                self._asking, self._interrupted = True, False
                try:
                    return await self._lines.readline()
                finally:
                    self._asking = False
        except EOFError:
            raise AgentCanceled("no input") from None

    @contextlib.contextmanager
    def _echo_off(self, secret: bool) -> Iterator[None]:
        if not secret or not os.isatty(self._fd):
            yield
            return
        saved = termios.tcgetattr(self._fd)
        quiet = list(saved)
        quiet[3] &= ~termios.ECHO
        termios.tcsetattr(self._fd, termios.TCSADRAIN, quiet)
        try:
            yield
        finally:
            # Also when escd withdrew the prompt: the terminal must not stay silent.
            termios.tcsetattr(self._fd, termios.TCSADRAIN, saved)
            if not self._interrupted:  # the Enter typed was not echoed
                self._err.write("\n")
                self._err.flush()

    def interrupt(self) -> None:
        """Ctrl+C arrived: end the line of an open question so what follows starts clean."""
        if self._asking:
            self._err.write("\n")
            self._err.flush()
            self._interrupted = True

    def _say(self, text: str) -> None:
        self._err.write(text + "\n")
        self._err.flush()


def _date(seconds: object) -> str:
    value = seconds if isinstance(seconds, int) and not isinstance(seconds, bool) else 0
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(value)) if value else "unknown"
