# SPDX-License-Identifier: GPL-2.0-or-later
"""``io.github.escd.Escd1.Job``: one object per job, at ``…/job/<sender>/<token>`` or ``…/job/<n>``.

``JobInterface`` shows one ``escd.jobs.Job`` (UDisks2 Job + xdg-desktop-portal Request;
docs/dbus-api.md): its properties, ``Cancel`` and the ``Completed`` signal.
``JobExporter`` follows the ``JobManager``: a job is exported before the method that
started it replies (so the caller can read it at once), updated while it runs (TPS
progress once per loop turn, state changes at once), announces ``Completed`` when it
ends, and is unexported when its grace period is over. It also tells the token object
that its ``Job`` and ``LastOperation`` changed.

Must not: decide anything about jobs (``escd.jobs`` does) or carry a secret: results are
status codes and escd's own wording.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated, Any, Protocol

from dbus_fast.aio import MessageBus
from dbus_fast.annotations import (
    DBusBool,
    DBusDouble,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt32,
    DBusUInt64,
)
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from escd.dbus_service.caller import caller
from escd.dbus_service.errors import translate_errors
from escd.dbus_service.introspection import name_signal_args
from escd.dbus_service.names import JOB_INTERFACE, token_path
from escd.dbus_service.variants import DBusVarDict, DBusVoid, parse_options, to_vardict
from escd.jobs import Job, JobAdded, JobChanged, JobEvent, JobFinished, JobManager, JobRemoved

logger = logging.getLogger(__name__)

#: ``Job`` attribute → the property that shows it.
PROPERTY_OF_ATTRIBUTE = {
    "state": "State",
    "progress": "Progress",
    "progress_valid": "ProgressValid",
    "tps_stage": "TpsStage",
    "tps_task": "TpsTask",
    "cancelable": "Cancelable",
    "result": "Result",
}

#: What a TPS status update changes. Their signal waits until the task that reported
#: them yields (the reply to the TPS is on its way by then): one signal per loop turn,
#: sent while the daemon waits for the TPS instead of before it answers.
_PROGRESS_ATTRIBUTES = frozenset({"progress", "progress_valid", "tps_stage", "tps_task"})

DBusCompleted = Annotated[tuple[int, str, dict[str, Any]], DBusSignature("usa{sv}")]


class JobActions(Protocol):
    def cancel_job(self, path: str, caller: str) -> None:
        """``Job.Cancel``; a finished job is left as it is."""
        ...


class JobInterface(ServiceInterface):
    def __init__(self, job: Job, actions: JobActions) -> None:
        super().__init__(JOB_INTERFACE)
        self._job = job
        self._actions = actions
        #: Properties changed but not yet announced.
        self._unannounced: set[str] = set()

    @property
    def job(self) -> Job:
        return self._job

    @dbus_property(access=PropertyAccess.READ)
    def Operation(self) -> DBusStr:
        return str(self._job.kind)

    @dbus_property(access=PropertyAccess.READ)
    def Token(self) -> DBusObjectPath:
        return token_path(self._job.token_id)

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> DBusUInt32:
        return int(self._job.state)

    @dbus_property(access=PropertyAccess.READ)
    def Progress(self) -> DBusDouble:
        return self._job.progress

    @dbus_property(access=PropertyAccess.READ)
    def ProgressValid(self) -> DBusBool:
        return self._job.progress_valid

    @dbus_property(access=PropertyAccess.READ)
    def TpsStage(self) -> DBusUInt32:
        return max(0, self._job.tps_stage)

    @dbus_property(access=PropertyAccess.READ)
    def TpsTask(self) -> DBusStr:
        return self._job.tps_task

    @dbus_property(access=PropertyAccess.READ)
    def StartedBy(self) -> DBusStr:
        return self._job.started_by

    @dbus_property(access=PropertyAccess.READ)
    def StartTime(self) -> DBusUInt64:
        return int(self._job.start_time)

    @dbus_property(access=PropertyAccess.READ)
    def Cancelable(self) -> DBusBool:
        return self._job.cancelable

    @dbus_property(access=PropertyAccess.READ)
    def Result(self) -> DBusVarDict:
        result = self._job.result
        return to_vardict(result.details()) if result is not None else {}

    @dbus_method()
    @translate_errors
    def Cancel(self, options: DBusVarDict) -> DBusVoid:
        parse_options(options, {})
        self._actions.cancel_job(self._job.path, caller())

    @dbus_signal()
    def Completed(self) -> DBusCompleted:
        result = self._job.result
        assert result is not None
        return (int(result.state), result.outcome.error, to_vardict(result.details()))

    def update(self, changed: frozenset[str]) -> None:
        """Announce ``changed``: progress at the end of this loop turn, the rest at once
        (with any progress still unannounced, so signals keep the order of changes)."""
        names = {PROPERTY_OF_ATTRIBUTE[a] for a in changed if a in PROPERTY_OF_ATTRIBUTE}
        if not names:
            return
        if changed <= _PROGRESS_ATTRIBUTES:
            if not self._unannounced:
                asyncio.get_running_loop().call_soon(self.announce)
            self._unannounced |= names
            return
        self._unannounced |= names
        self.announce()

    def announce(self) -> None:
        """Emit ``PropertiesChanged`` for what changed since the last announcement."""
        names = sorted(self._unannounced)
        self._unannounced.clear()
        if names:
            self.emit_properties_changed({name: getattr(self, name) for name in names})


name_signal_args(JobInterface.Completed, "result", "error_name", "details")


class JobExporter:
    """Keeps the exported Job objects in step with the ``JobManager``."""

    def __init__(
        self,
        bus: MessageBus,
        jobs: JobManager,
        actions: JobActions,
        tokens: Callable[[str], None],
    ) -> None:
        self._bus = bus
        self._jobs = jobs
        self._actions = actions
        self._token_changed = tokens
        self._exported: dict[str, JobInterface] = {}
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self._unsubscribe = self._jobs.subscribe(self._on_event)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for path, interface in list(self._exported.items()):
            self._bus.unexport(path, interface)
        self._exported.clear()

    def _on_event(self, event: JobEvent) -> None:
        match event:
            case JobAdded(job=job):
                interface = JobInterface(job, self._actions)
                self._exported[job.path] = interface
                self._bus.export(job.path, interface)
                self._token_changed(job.token_id)
            case JobChanged(job=job, changed=changed):
                exported = self._exported.get(job.path)
                if exported is not None and exported.job is job:
                    exported.update(changed)
            case JobFinished(job=job):
                exported = self._exported.get(job.path)
                if exported is not None and exported.job is job:
                    exported.Completed()
                self._token_changed(job.token_id)
            case JobRemoved(job=job):
                exported = self._exported.get(job.path)
                if exported is not None and exported.job is job:
                    del self._exported[job.path]
                    self._bus.unexport(job.path, exported)
