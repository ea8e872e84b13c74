# SPDX-License-Identifier: GPL-2.0-or-later
"""The job rules: one job per token, states and results, cancel, removal, grace period."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from escd.errors import BusyError, CanceledError, EscdError, InvalidArgumentError, TpsOperationError
from escd.events import EventKind, EventRing
from escd.jobs import (
    JobAdded,
    JobChanged,
    JobEvent,
    JobFinished,
    JobManager,
    JobProgress,
    JobRemoved,
    JobState,
    record_in,
)
from escd.model import JobKind, TokenInfo, TokenState
from escd.tokens import TokenGone, TokenRecord
from escd.tps.status import Outcome, outcome_of

TIMEOUT = 5.0


class StepWork:
    """Work that runs until told to finish (``done``) or aborted; reports what it is told."""

    def __init__(self, body: Callable[[JobProgress], Awaitable[Outcome]] | None = None) -> None:
        self.release = asyncio.Event()
        self.aborted: list[EscdError] = []
        self.outcome = outcome_of(None)
        self._body = body

    async def run(self, progress: JobProgress) -> Outcome:
        if self._body is not None:
            return await self._body(progress)
        await self.release.wait()
        return outcome_of(self.aborted[0]) if self.aborted else self.outcome

    def abort(self, error: EscdError) -> None:
        self.aborted.append(error)
        self.release.set()


class Harness:
    def __init__(self, keep: float = 60.0, cancel_on_vanish: bool = True) -> None:
        self.tasks: list[asyncio.Task[None]] = []
        self.events: list[JobEvent] = []
        self.ring = EventRing(50, clock=lambda: 1.0)
        self.manager = JobManager(
            self._spawn,
            numbered_path=lambda n: f"/job/{n}",
            keep_finished=lambda: keep,
            cancel_on_client_vanish=lambda: cancel_on_vanish,
            clock=lambda: 1700000000.5,
        )
        self.manager.subscribe(self.events.append)
        #: The job's state at each change (events hold the job, which changes on).
        self.states: list[JobState] = []
        self.manager.subscribe(
            lambda e: self.states.append(e.job.state) if isinstance(e, JobChanged) else None
        )
        self.manager.subscribe(record_in(self.ring))

    def _spawn(self, coroutine: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        self.tasks.append(task)
        return task

    async def settle(self) -> None:
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(*self.tasks)

    def of(self, kind: type) -> list[JobEvent]:
        return [event for event in self.events if isinstance(event, kind)]


async def test_a_job_runs_and_succeeds_with_a_result_and_last_operation() -> None:
    harness = Harness()
    work = StepWork()
    job = harness.manager.start(JobKind.ENROLL, "t1", ":1.5", work)
    assert job.path == "/job/1" and job.state is JobState.PENDING
    assert harness.manager.running_job("t1") is job
    await asyncio.sleep(0)  # the task starts: Running
    assert job.state is JobState.RUNNING
    work.release.set()
    await harness.settle()
    assert job.state is JobState.SUCCEEDED and not job.cancelable
    assert job.result is not None and job.result.details()["error"] == ""
    assert harness.manager.running_job("t1") is None
    last = harness.manager.last_result("t1")
    assert last is not None
    assert last.last_operation() == {
        "operation": "enroll",
        "result": 4,
        "error": "",
        "tps_status": 0,
        "status_source": "tps",
        "message": "The operation completed successfully.",
        "finished": 1700000000,
    }
    assert [type(event) for event in harness.events if not isinstance(event, JobChanged)] == [
        JobAdded,
        JobFinished,
    ]
    messages = [r.message for r in harness.ring.recent() if r.kind is EventKind.OPERATION]
    assert messages == ["enroll started by :1.5", "enroll succeeded"]


async def test_one_job_per_token_but_tokens_in_parallel() -> None:
    harness = Harness()
    first, second = StepWork(), StepWork()
    harness.manager.start(JobKind.FORMAT, "t1", ":1.5", first)
    with pytest.raises(BusyError):
        harness.manager.start(JobKind.ENROLL, "t1", ":1.6", StepWork())
    other = harness.manager.start(JobKind.ENROLL, "t2", ":1.6", second)
    assert other.path == "/job/2"
    first.release.set()
    second.release.set()
    await harness.settle()
    assert harness.manager.start(JobKind.ENROLL, "t1", ":1.5", StepWork()).path == "/job/3"


async def test_progress_and_waiting_for_input_change_properties() -> None:
    async def body(progress: JobProgress) -> Outcome:
        progress.waiting_for_input(True)
        progress.waiting_for_input(False)
        progress.report(0.52, 52, "PROGRESS_ENROLL_CERT")
        progress.report(0.15, 15, "PROGRESS_KEY_GENERATION")  # TPS progress can go backwards
        return outcome_of(None)

    harness = Harness()
    job = harness.manager.start(JobKind.ENROLL, "t1", ":1.5", StepWork(body))
    await harness.settle()
    changes = [e.changed for e in harness.of(JobChanged) if isinstance(e, JobChanged)]
    assert harness.states[:3] == [
        JobState.RUNNING,
        JobState.WAITING_FOR_INPUT,
        JobState.RUNNING,
    ]
    assert frozenset({"progress", "progress_valid", "tps_stage", "tps_task"}) in changes
    assert (job.progress, job.tps_stage, job.tps_task) == (0.15, 15, "PROGRESS_KEY_GENERATION")


async def test_cancel_ends_the_job_canceled_and_a_finished_job_ignores_it() -> None:
    harness = Harness()
    work = StepWork()
    job = harness.manager.start(JobKind.FORMAT, "t1", ":1.5", work)
    await asyncio.sleep(0)
    harness.manager.cancel(job.path, by=":1.9")
    assert job.state is JobState.CANCELING and not job.cancelable
    await harness.settle()
    assert job.state is JobState.CANCELED
    assert job.result is not None and job.result.outcome.error == CanceledError.dbus_name
    harness.manager.cancel(job.path)
    assert len(work.aborted) == 1
    with pytest.raises(InvalidArgumentError):
        harness.manager.cancel("/job/99")


async def test_the_token_leaving_aborts_with_token_removed() -> None:
    harness = Harness()
    work = StepWork()
    job = harness.manager.start(JobKind.ENROLL, "t1", ":1.5", work)
    info = TokenInfo(reader="r", atr=b"\x3b", state=TokenState.UNINITIALIZED, cuid="t1")
    harness.manager.observe(TokenGone(TokenRecord("t1", "r", info)))
    await harness.settle()
    assert job.state is JobState.FAILED
    assert job.result is not None
    assert job.result.outcome.error == "io.github.escd.Escd1.Error.TokenRemoved"


@pytest.mark.parametrize("configured", [True, False])
async def test_a_vanished_starter_cancels_its_jobs_when_configured(configured: bool) -> None:
    harness = Harness(cancel_on_vanish=configured)
    mine, theirs = StepWork(), StepWork()
    harness.manager.start(JobKind.ENROLL, "t1", ":1.5", mine)
    harness.manager.start(JobKind.ENROLL, "t2", ":1.6", theirs)
    harness.manager.client_vanished(":1.5")
    assert bool(mine.aborted) is configured and not theirs.aborted
    await harness.manager.stop(TIMEOUT)


async def test_failures_are_failed_with_the_outcome_and_recorded() -> None:
    harness = Harness()
    work = StepWork()
    work.outcome = outcome_of(TpsOperationError(14, "login failed"))
    job = harness.manager.start(JobKind.ENROLL, "t1", ":1.5", work)
    work.release.set()
    await harness.settle()
    assert job.state is JobState.FAILED
    assert job.result is not None
    assert job.result.details() == {
        "error": "io.github.escd.Escd1.Error.Tps",
        "tps_status": 14,
        "status_source": "tps",
        "message": "The Smart Card Server cannot validate your credentials.",
    }
    (finished,) = [r.message for r in harness.ring.recent() if r.message.startswith("enroll f")]
    assert finished.startswith("enroll failed: io.github.escd.Escd1.Error.Tps (tps status 14")


async def test_a_bug_in_the_work_fails_the_job_and_not_the_manager() -> None:
    async def body(_progress: JobProgress) -> Outcome:
        raise RuntimeError("bug")

    harness = Harness()
    job = harness.manager.start(JobKind.ENROLL, "t1", ":1.5", StepWork(body))
    await harness.settle()
    assert job.state is JobState.FAILED
    assert job.result is not None
    assert job.result.outcome.error == "io.github.escd.Escd1.Error.Internal"
    assert "bug" not in job.result.outcome.message


async def test_a_finished_job_is_removed_after_the_grace_period() -> None:
    harness = Harness(keep=0.01)
    work = StepWork()
    job = harness.manager.start(JobKind.FORMAT, "t1", ":1.5", work)
    work.release.set()
    await harness.settle()
    removed = asyncio.Event()
    harness.manager.subscribe(lambda e: removed.set() if isinstance(e, JobRemoved) else None)
    async with asyncio.timeout(TIMEOUT):
        await removed.wait()
    assert harness.manager.jobs() == []
    with pytest.raises(InvalidArgumentError):
        harness.manager.job(job.path)
    assert harness.manager.last_result("t1") is not None


async def test_a_reused_handle_replaces_a_finished_job_but_not_a_running_one() -> None:
    harness = Harness()
    work = StepWork()
    first = harness.manager.start(JobKind.FORMAT, "t1", ":1.5", work, path="/job/a/x")
    with pytest.raises(InvalidArgumentError):
        harness.manager.start(JobKind.FORMAT, "t2", ":1.5", StepWork(), path="/job/a/x")
    work.release.set()
    await harness.settle()
    second = harness.manager.start(JobKind.ENROLL, "t1", ":1.5", StepWork(), path="/job/a/x")
    assert second is not first and harness.manager.job("/job/a/x") is second
    assert any(isinstance(e, JobRemoved) and e.job is first for e in harness.events)
    await harness.manager.stop(TIMEOUT)


async def test_stop_cancels_running_jobs_and_refuses_new_ones() -> None:
    harness = Harness()
    work = StepWork()
    job = harness.manager.start(JobKind.ENROLL, "t1", ":1.5", work)
    await harness.manager.stop(TIMEOUT)
    assert job.state is JobState.CANCELED
    with pytest.raises(CanceledError):
        harness.manager.start(JobKind.ENROLL, "t1", ":1.5", StepWork())
