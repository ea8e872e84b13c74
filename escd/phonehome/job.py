# SPDX-License-Identifier: GPL-2.0-or-later
"""Phone home as a job (``Token.PhoneHome``) and the agent prompt for a Phone Home URL.

``PhoneHomeWork`` is the ``escd.jobs.Work`` a ``Token.PhoneHome`` call runs: one
``PhoneHomeService.run`` with the caller's ``force`` and ``url``, asking the caller's
agent for a URL when none is known, and (``escd.trustprompt``) whether to trust a
server whose certificate is not trusted. Its outcome is the job's result: success when an
answer was fetched (or a fresh one is stored), otherwise the error that stopped it
(``TlsUntrusted`` with the fingerprint to pin, ``Network``, ``PhoneHomeFailed``), in
escd's own words, which is why the message is the error's and not a numbered ESC text
(ESC had no status codes for phone home).

``AgentUrlAsker`` asks an agent for a Phone Home URL (ESC's "Prompt for Phone Home
Information", manual §3.3.1): prompt kind ``phone-home-url`` with one text field
``url``. A URL that is not http(s) with a host is asked for again (three attempts);
no agent, no answer in time or a user who cancels all mean "no URL", never an error
of the insertion that asked.

Must not: log or keep anything but URLs; decide what is fetched (the service does).
"""

from __future__ import annotations

import asyncio
import logging

from escd.agents import AgentBroker
from escd.errors import (
    CanceledError,
    EscdError,
    NoAgentError,
    PhoneHomeError,
    PromptTimeoutError,
    TlsUntrustedError,
)
from escd.jobs import JobProgress
from escd.model import PhoneHomeState
from escd.phonehome.parser import url_problem
from escd.phonehome.service import ConfirmTrust, PhoneHomeService
from escd.tps.session import FieldType, Prompt, PromptField, PromptKind
from escd.tps.status import SUCCESS, Outcome, StatusSource
from escd.trustprompt import PHONE_HOME_SERVER, ServerTrustAsker

logger = logging.getLogger(__name__)

#: The id of the one field of a ``phone-home-url`` prompt.
URL_FIELD = "url"
MAX_ATTEMPTS = 3
#: ``job`` of a prompt asked outside any job (a token was inserted).
NO_JOB = "/"


def url_prompt(token_id: str, attempt: int = 1, previous_error: str = "") -> Prompt:
    return Prompt(
        kind=PromptKind.PHONE_HOME_URL,
        fields=(
            PromptField(
                id=URL_FIELD,
                label="Phone Home URL",
                type=FieldType.TEXT,
                description="e.g. https://tps.example.com:8443/tps/phoneHome",
            ),
        ),
        title="Phone Home information",
        description=(
            f"Token {token_id} does not say which TPS manages it. Enter the Phone Home URL "
            "your administrator gave you; it is remembered for this token."
        ),
        attempt=attempt,
        previous_error=previous_error,
    )


class AgentUrlAsker:
    """``AskUrl`` through the agent broker, for one job or for an insertion."""

    def __init__(
        self,
        broker: AgentBroker,
        *,
        job: str = NO_JOB,
        starter: str = "",
        progress: JobProgress | None = None,
    ) -> None:
        self._broker = broker
        self._job = job
        self._starter = starter
        self._progress = progress

    async def __call__(self, token_id: str) -> str:
        previous = ""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            prompt = url_prompt(token_id, attempt, previous)
            if self._progress is not None:
                self._progress.waiting_for_input(True)
            try:
                answers = await self._broker.ask(self._job, self._starter, prompt)
            except NoAgentError as exc:
                # Normal for a daemon without a frontend: the token is simply NoUrl.
                logger.debug("no Phone Home URL for %s: %s", token_id, exc.message)
                return ""
            except (PromptTimeoutError, CanceledError) as exc:
                logger.info("no Phone Home URL for %s from an agent: %s", token_id, exc.message)
                return ""
            finally:
                if self._progress is not None:
                    self._progress.waiting_for_input(False)
            value = answers.get(URL_FIELD)
            text = value.strip() if isinstance(value, str) else ""
            if not text:
                return ""
            problem = url_problem(text)
            if problem is None:
                return text
            previous = f"not a usable Phone Home URL: {problem}"
        return ""


class PhoneHomeWork:
    """One ``Token.PhoneHome`` job."""

    def __init__(
        self,
        service: PhoneHomeService,
        token_id: str,
        *,
        force: bool,
        url: str,
        broker: AgentBroker | None,
        starter: str,
        trust: ServerTrustAsker | None = None,
    ) -> None:
        self._service = service
        self._token_id = token_id
        self._force = force
        self._url = url
        self._broker = broker
        self._trust = trust
        #: The job's object path, for the agent prompt; set once the job manager made it.
        self.job_path = NO_JOB
        self._starter = starter
        self._task: asyncio.Task[object] | None = None
        self._aborted: EscdError | None = None

    def abort(self, error: EscdError) -> None:
        if self._aborted is None:
            self._aborted = error
        if self._task is not None:
            self._task.cancel()

    async def run(self, progress: JobProgress) -> Outcome:
        if self._aborted is not None:
            return _failure(self._aborted)
        ask = None
        if self._broker is not None:
            ask = AgentUrlAsker(
                self._broker, job=self.job_path, starter=self._starter, progress=progress
            )
        self._task = asyncio.current_task()
        try:
            outcome = await self._service.run(
                self._token_id,
                force=self._force,
                url=self._url,
                ask=ask,
                trust=self._confirm_trust(progress) if self._trust is not None else None,
            )
        except asyncio.CancelledError:
            if self._aborted is None:
                raise  # the daemon is stopping
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return _failure(self._aborted)
        except EscdError as exc:
            return _failure(exc)
        finally:
            self._task = None
        if outcome.state is PhoneHomeState.FETCHED:
            return SUCCESS
        if outcome.error is not None:
            return _failure(outcome.error)
        return _failure(
            PhoneHomeError(
                "no Phone Home URL is known for this token: pass one (url), set one "
                "(SetTokenSettings) or register an agent that can be asked"
            )
        )

    def _confirm_trust(self, progress: JobProgress) -> ConfirmTrust:
        trust = self._trust
        assert trust is not None

        async def confirm(untrusted: TlsUntrustedError) -> bool:
            progress.waiting_for_input(True)
            try:
                return await trust(
                    untrusted,
                    job=self.job_path,
                    starter=self._starter,
                    server=PHONE_HOME_SERVER,
                    token_id=self._token_id,
                )
            finally:
                progress.waiting_for_input(False)

        return confirm


def _failure(error: EscdError) -> Outcome:
    # The error's own message: for TlsUntrusted it carries the fingerprint to pin.
    return Outcome(error.dbus_name, error.local_status or 0, StatusSource.LOCAL, error.message)
