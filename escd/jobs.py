# SPDX-License-Identifier: GPL-2.0-or-later
"""Jobs: work on one token that outlives the D-Bus call which started it.

This module owns the job model as the D-Bus ``Job`` object shows it (state, progress,
TPS stage, who started it and when, whether it can be canceled, its result), and the
rules around it (docs/dbus-api.md, "Job"; after UDisks2's Job and xdg-desktop-portal's
Request):

* one running job per token; a second one is refused with ``BusyError``;
* a job runs as one task (spawned into the daemon's ``TaskGroup``) and ends exactly once,
  with an ``Outcome`` (escd.tps.status): Succeeded, Failed or Canceled;
* ``cancel`` (``Job.Cancel``, or the starting client leaving the bus when
  ``jobs.cancel_on_client_vanish`` says so) and a token leaving its reader abort the
  work with ``CanceledError`` and ``CardRemovedError``;
* a finished job stays for ``jobs.keep_finished`` seconds (a ``call_later`` timer), so
  late observers can read it, and its result becomes the token's ``LastOperation``.

Changes are published as typed events; the D-Bus layer exports and updates the objects,
the event ring records starts and results.

Must not: know what the work does (``escd.operation`` drives TPS operations), talk
D-Bus, touch a card, or hold a secret: results are status codes and escd's own wording.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import IntEnum, unique
from typing import Any, Protocol

from escd.errors import (
    BusyError,
    CanceledError,
    CardRemovedError,
    EscdError,
    InvalidArgumentError,
)
from escd.events import EventKind, EventRing
from escd.model import JobKind
from escd.tokens import RegistryEvent, TokenGone
from escd.tps.status import Outcome, outcome_of

logger = logging.getLogger(__name__)

#: ``LastOperation`` is kept for this many tokens (they are few; this only bounds memory).
MAX_REMEMBERED_TOKENS = 256

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


@unique
class JobState(IntEnum):
    """``Job.State`` (the contract's values and spelling)."""

    PENDING = 0
    RUNNING = 1
    WAITING_FOR_INPUT = 2
    CANCELING = 3
    SUCCEEDED = 4
    FAILED = 5
    CANCELED = 6

    @property
    def finished(self) -> bool:
        return self >= JobState.SUCCEEDED


@dataclass(frozen=True, slots=True)
class JobResult:
    """How a job ended: ``Job.Result``, ``Completed`` details and ``Token.LastOperation``."""

    operation: JobKind
    state: JobState
    outcome: Outcome
    #: Unix seconds.
    finished: float

    def details(self) -> dict[str, object]:
        """``Job.Result``: ``error``, ``tps_status``, ``status_source``, ``message``."""
        return {
            "error": self.outcome.error,
            "tps_status": self.outcome.tps_status,
            "status_source": str(self.outcome.status_source),
            "message": self.outcome.message,
        }

    def last_operation(self) -> dict[str, object]:
        """``Token.LastOperation``: the same keys plus ``operation``, ``result``, ``finished``."""
        return {
            "operation": str(self.operation),
            "result": int(self.state),
            **self.details(),
            "finished": int(self.finished),
        }


def state_for(outcome: Outcome) -> JobState:
    if outcome.succeeded:
        return JobState.SUCCEEDED
    if outcome.error == CanceledError.dbus_name:
        return JobState.CANCELED
    return JobState.FAILED


class JobProgress(Protocol):
    """What running work reports about itself (``Job`` implements it)."""

    def waiting_for_input(self, waiting: bool) -> None:
        """The work waits for an agent's answer (``State`` WaitingForInput) or not."""
        ...

    def report(self, progress: float, stage: int, task: str) -> None:
        """A TPS status update: ``Progress`` 0..1, the raw ``TpsStage``, its task name."""
        ...


class Work(Protocol):
    """What a job runs: one TPS operation (escd.operation) or a phone home."""

    async def run(self, progress: JobProgress) -> Outcome:
        """Do the work; every failure is an ``Outcome`` (never an exception)."""
        ...

    def abort(self, error: EscdError) -> None:
        """Stop as soon as possible and end with ``error`` (the first abort wins)."""
        ...


class Job:
    """One job; its attributes are what ``io.github.escd.Escd1.Job`` shows."""

    def __init__(
        self,
        path: str,
        kind: JobKind,
        token_id: str,
        started_by: str,
        start_time: float,
        on_change: Callable[[Job, frozenset[str]], None],
    ) -> None:
        self.path = path
        self.kind = kind
        self.token_id = token_id
        self.started_by = started_by
        self.start_time = start_time
        self.state = JobState.PENDING
        self.progress = 0.0
        self.progress_valid = False
        self.tps_stage = 0
        self.tps_task = ""
        self.cancelable = True
        self.result: JobResult | None = None
        self._on_change = on_change

    @property
    def finished(self) -> bool:
        return self.state.finished

    def _set(self, **changes: object) -> None:
        changed = frozenset(name for name, value in changes.items() if getattr(self, name) != value)
        for name in changed:
            setattr(self, name, changes[name])
        if changed:
            self._on_change(self, changed)

    # -- JobProgress ---------------------------------------------------------------------

    def waiting_for_input(self, waiting: bool) -> None:
        if self.state in (JobState.RUNNING, JobState.WAITING_FOR_INPUT):
            self._set(state=JobState.WAITING_FOR_INPUT if waiting else JobState.RUNNING)

    def report(self, progress: float, stage: int, task: str) -> None:
        if not self.finished:
            self._set(progress=progress, progress_valid=True, tps_stage=stage, tps_task=task)

    # -- life cycle (JobManager) -----------------------------------------------------------

    def _start(self) -> None:
        if self.state is JobState.PENDING:
            self._set(state=JobState.RUNNING)

    def _canceling(self) -> None:
        if not self.finished:
            self._set(state=JobState.CANCELING, cancelable=False)

    def _finish(self, result: JobResult) -> None:
        self._set(result=result, state=result.state, cancelable=False)


@dataclass(frozen=True, slots=True)
class JobAdded:
    job: Job


@dataclass(frozen=True, slots=True)
class JobChanged:
    job: Job
    changed: frozenset[str]


@dataclass(frozen=True, slots=True)
class JobFinished:
    """The job ended (``Completed``); ``job.result`` is set."""

    job: Job


@dataclass(frozen=True, slots=True)
class JobRemoved:
    """The grace period is over: the job leaves the bus."""

    job: Job


JobEvent = JobAdded | JobChanged | JobFinished | JobRemoved
JobSubscriber = Callable[[JobEvent], None]


class JobManager:
    """Every job of the daemon: starts, cancels, ends and forgets them."""

    def __init__(
        self,
        spawn: Spawn,
        *,
        numbered_path: Callable[[int], str],
        keep_finished: Callable[[], float],
        cancel_on_client_vanish: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self._spawn = spawn
        self._numbered_path = numbered_path
        self._keep_finished = keep_finished
        self._cancel_on_vanish = cancel_on_client_vanish
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self._work: dict[str, Work] = {}
        self._running: dict[str, Job] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._last: dict[str, JobResult] = {}
        self._subscribers: list[JobSubscriber] = []
        self._counter = 0
        self._closed = False

    # -- subscription and queries ----------------------------------------------------------

    def subscribe(self, subscriber: JobSubscriber) -> Callable[[], None]:
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def _publish(self, event: JobEvent) -> None:
        for subscriber in list(self._subscribers):
            subscriber(event)

    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def job(self, path: str) -> Job:
        job = self._jobs.get(path)
        if job is None:
            raise InvalidArgumentError(f"no job {path}")
        return job

    def running_job(self, token_id: str) -> Job | None:
        """The job running on a token, if any (``Token.Job``; also the busy flag)."""
        return self._running.get(token_id)

    def ensure_idle(self, token_id: str) -> None:
        """``BusyError`` if a job runs on ``token_id``: one job per token."""
        busy = self._running.get(token_id)
        if busy is not None:
            raise BusyError(f"another job ({busy.kind}) is running on this token")

    def last_result(self, token_id: str) -> JobResult | None:
        """The result of the token's last finished job (``Token.LastOperation``)."""
        return self._last.get(token_id)

    # -- starting ----------------------------------------------------------------------------

    def start(
        self, kind: JobKind, token_id: str, started_by: str, work: Work, *, path: str | None = None
    ) -> Job:
        """Register and run ``work`` as a job on ``token_id``; ``BusyError`` if one runs."""
        if self._closed:
            raise CanceledError("escd is stopping")
        self.ensure_idle(token_id)
        if path is None:
            self._counter += 1
            path = self._numbered_path(self._counter)
        old = self._jobs.get(path)
        if old is not None:
            if not old.finished:
                raise InvalidArgumentError("this handle_token names a job that is still running")
            # The caller reuses its handle_token: the finished job makes way for the new one.
            self._remove(path)
        job = Job(path, kind, token_id, started_by, self._clock(), self._changed)
        self._jobs[path] = job
        self._work[path] = work
        self._running[token_id] = job
        self._publish(JobAdded(job))
        logger.info(
            "%s of token %s started by %s (%s)",
            kind,
            token_id,
            started_by or "escd",
            path,
            extra={"ESCD_TOKEN_CUID": token_id, "ESCD_OPERATION": str(kind)},
        )
        self._tasks[path] = self._spawn(self._run(job, work))
        return job

    def _changed(self, job: Job, changed: frozenset[str]) -> None:
        if self._jobs.get(job.path) is job:
            self._publish(JobChanged(job, changed))

    async def _run(self, job: Job, work: Work) -> None:
        job._start()
        try:
            outcome = await work.run(job)
        except asyncio.CancelledError:
            # The daemon is stopping: the job still ends, observers still hear it.
            self._finish(job, outcome_of(CanceledError("escd stopped before the job ended")))
            raise
        except Exception:  # a bug in the work: the job fails, the daemon keeps running
            logger.exception("%s of token %s failed unexpectedly", job.kind, job.token_id)
            outcome = outcome_of(EscdError("internal error in escd; see its log"))
        self._finish(job, outcome)

    def _finish(self, job: Job, outcome: Outcome) -> None:
        if job.finished:
            return
        result = JobResult(job.kind, state_for(outcome), outcome, self._clock())
        self._tasks.pop(job.path, None)
        self._work.pop(job.path, None)
        if self._running.get(job.token_id) is job:
            del self._running[job.token_id]
        self._last.pop(job.token_id, None)
        self._last[job.token_id] = result
        while len(self._last) > MAX_REMEMBERED_TOKENS:
            del self._last[next(iter(self._last))]
        job._finish(result)
        level = logging.INFO if outcome.succeeded else logging.WARNING
        logger.log(
            level,
            "%s of token %s %s%s",
            job.kind,
            job.token_id,
            result.state.name.lower(),
            _failure_text(outcome),
            extra={
                "ESCD_TOKEN_CUID": job.token_id,
                "ESCD_OPERATION": str(job.kind),
                "ESCD_TPS_STATUS": str(outcome.tps_status),
            },
        )
        self._publish(JobFinished(job))
        if self._closed:
            return
        keep = self._keep_finished()
        loop = asyncio.get_running_loop()
        self._timers[job.path] = loop.call_later(keep, self._remove, job.path)

    def _remove(self, path: str) -> None:
        timer = self._timers.pop(path, None)
        if timer is not None:
            timer.cancel()
        job = self._jobs.pop(path, None)
        if job is not None:
            self._publish(JobRemoved(job))

    # -- stopping work ---------------------------------------------------------------------

    def cancel(self, path: str, by: str = "") -> None:
        """``Job.Cancel``: ask the work to stop; the job ends Canceled (or as it already did)."""
        job = self.job(path)
        work = self._work.get(path)
        if job.finished or work is None:
            return
        logger.info("%s of token %s canceled by %s", job.kind, job.token_id, by or "escd")
        job._canceling()
        work.abort(CanceledError("the operation was canceled"))

    def observe(self, event: RegistryEvent) -> None:
        """Registry subscriber: a token that leaves its reader ends its job at once."""
        if isinstance(event, TokenGone):
            job = self._running.get(event.token.token_id)
            work = self._work.get(job.path) if job is not None else None
            if work is not None:
                work.abort(CardRemovedError("the card was removed during the operation"))

    def client_vanished(self, name: str) -> None:
        """A bus client left: cancel the jobs it started, if so configured."""
        if not self._cancel_on_vanish():
            return
        for job in [job for job in self._running.values() if job.started_by == name]:
            self.cancel(job.path, by=f"{name} leaving the bus")

    async def stop(self, timeout: float) -> None:
        """Cancel every running job and wait (at most ``timeout``) for them to end."""
        self._closed = True
        tasks = list(self._tasks.values())
        for path, work in list(self._work.items()):
            job = self._jobs[path]
            job._canceling()
            work.abort(CanceledError("escd is stopping"))
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


def _failure_text(outcome: Outcome) -> str:
    """``: <error> (<source> status <n>: <message>)`` for a failure, "" for a success."""
    if outcome.succeeded:
        return ""
    status = f"{outcome.status_source} status {outcome.tps_status}: {outcome.message}"
    return f": {outcome.error} ({status})"


def record_in(ring: EventRing) -> JobSubscriber:
    """A subscriber that records starts and results in the event ring (no secrets)."""

    def record(event: JobEvent) -> None:
        match event:
            case JobAdded(job=job):
                who = job.started_by or "escd"
                ring.record(
                    EventKind.OPERATION, f"{job.kind} started by {who}", token_id=job.token_id
                )
            case JobFinished(job=job) if job.result is not None:
                text = f"{job.kind} {job.result.state.name.lower()}"
                text += _failure_text(job.result.outcome)
                ring.record(EventKind.OPERATION, text, token_id=job.token_id)
            case _:
                pass

    return record
