# SPDX-License-Identifier: GPL-2.0-or-later
"""The Job object's ``PropertiesChanged``: progress once per loop turn, state at once."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from escd.dbus_service.job import JobInterface
from escd.jobs import JobAdded, JobChanged, JobEvent, JobManager, JobProgress
from escd.model import JobKind
from escd.tps.status import Outcome, outcome_of

TIMEOUT = 5.0


class _Recording(JobInterface):
    """A Job object that records its ``PropertiesChanged`` instead of sending them."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.emitted: list[dict[str, Any]] = []

    def emit_properties_changed(
        self, changed_properties: dict[str, Any], invalidated_properties: list[str] | None = None
    ) -> None:
        self.emitted.append(dict(changed_properties))


class _NoActions:
    def cancel_job(self, path: str, caller: str) -> None:
        raise AssertionError("not called")


class _Work:
    async def run(self, progress: JobProgress) -> Outcome:
        progress.report(0.1, 10, "A")
        progress.report(0.2, 20, "B")
        await asyncio.sleep(0)  # the loop turn ends: one signal for both updates
        progress.report(0.3, 30, "C")
        progress.waiting_for_input(True)  # at once, after the progress before it
        progress.waiting_for_input(False)
        return outcome_of(None)

    def abort(self, error: object) -> None:
        raise AssertionError("not called")


async def test_progress_is_one_signal_per_loop_turn_and_never_after_a_later_state() -> None:
    tasks: list[asyncio.Task[None]] = []

    def spawn(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        tasks.append(asyncio.ensure_future(coroutine))
        return tasks[-1]

    manager = JobManager(
        spawn,
        numbered_path=lambda n: f"/job/{n}",
        keep_finished=lambda: 60.0,
        cancel_on_client_vanish=lambda: False,
        clock=lambda: 1700000000.0,
    )
    objects: dict[str, _Recording] = {}

    def follow(event: JobEvent) -> None:
        match event:
            case JobAdded(job=job):
                objects[job.path] = _Recording(job, _NoActions())
            case JobChanged(job=job, changed=changed):
                objects[job.path].update(changed)

    manager.subscribe(follow)
    job = manager.start(JobKind.ENROLL, "t1", ":1.5", _Work())
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(*tasks)
    await asyncio.sleep(0)  # anything still unannounced would go out now
    emitted = objects[job.path].emitted
    assert emitted[:4] == [
        {"State": 1},
        {"Progress": 0.2, "ProgressValid": True, "TpsStage": 20, "TpsTask": "B"},
        {"Progress": 0.3, "State": 2, "TpsStage": 30, "TpsTask": "C"},
        {"State": 1},
    ]
    assert [sorted(signal) for signal in emitted[4:]] == [["Cancelable", "Result", "State"]]
    assert emitted[4]["State"] == 4
