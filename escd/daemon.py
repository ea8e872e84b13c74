# SPDX-License-Identifier: GPL-2.0-or-later
"""The composition root: builds every concrete object, wires the ports, runs the daemon.

``run_daemon`` loads the configuration (a broken file stops the start with one line
naming the file, the key and what was expected), sets up logging, and runs ``Daemon``.
``Daemon.run`` connects to the session bus, exports the object tree, takes the bus name
(a second instance refuses with a clear message), starts the reader watcher, tells
systemd ``READY=1``, and then waits for SIGTERM/SIGINT or the loss of the bus. SIGHUP
and ``Manager.ReloadConfiguration`` share ``reload_configuration``: a bad new file keeps
the old configuration and says why.

This is the only module that knows the concrete classes (pyscard backend, dbus-fast
bus, identification); everything else receives what it needs through its constructor.
Later services (jobs and agents, phone home) are built and wired here too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import re
import shutil
import signal
import ssl
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from dbus_fast import DBusError
from dbus_fast.constants import NameFlag, RequestNameReply
from systemd.daemon import notify as sd_notify

from escd import __version__
from escd.admin import AdminService
from escd.agents import AgentBroker
from escd.autolaunch import LaunchLimiter, SuggestionReason
from escd.card.identify import identify
from escd.cardwatch import CardWatcher
from escd.config import Config, config_paths, load_config, state_dir
from escd.dbus_service.agent import DBusAgentChannel
from escd.dbus_service.busdaemon import call_bus_daemon
from escd.dbus_service.caller import CallerAwareBus
from escd.dbus_service.job import JobExporter
from escd.dbus_service.names import BUS_NAME, numbered_job_path, token_path
from escd.dbus_service.objectmanager import ObjectManagerBus
from escd.dbus_service.peers import PeerWatcher
from escd.dbus_service.service import EscdService
from escd.diagnostics import build_report
from escd.errors import ConfigError, NoSuchTokenError, NotSupportedError
from escd.events import EventKind, EventRing
from escd.jobs import JobEvent, JobFinished, JobManager, JobState, record_in
from escd.launcher import AutoLaunch, Launcher
from escd.logsetup import LogSetup
from escd.model import JobKind
from escd.notifications import ENROLL_ACTION, Notifier
from escd.operation import OperationRequest, TpsOperations
from escd.pcsc.backend import PcscReaderBackend
from escd.pcsc.connection import PcscCardSession
from escd.phonehome.cache import TokenStore
from escd.phonehome.job import AgentUrlAsker, PhoneHomeWork
from escd.phonehome.service import PhoneHomeService
from escd.readers import ReaderBackend
from escd.tokens import RegistryEvent, TokenRecord, TokenRegistry
from escd.trust import TrustStore, check_url_allowed
from escd.trustprompt import ServerTrustAsker

if TYPE_CHECKING:
    import httpx

    from escd.tps.connection import TpsConnection

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
#: Another escd owns the bus name.
EXIT_ALREADY_RUNNING = 3
#: No session bus to connect to (sysexits EX_UNAVAILABLE).
EXIT_NO_BUS = 69
#: The configuration is invalid (sysexits EX_CONFIG; the unit does not restart on it).
EXIT_CONFIG = 78

#: ``Manager.Features``: only what this build implements.
FEATURES: tuple[str, ...] = ("phone-home",)

#: ``Manager.Features`` of the TPS operations (docs/dbus-api.md).
OPERATION_FEATURES: tuple[str, ...] = ("enroll", "format", "reset-pin", "unblock", "renew")
#: How long a stopping daemon waits for its jobs to close their connections and cards.
JOB_STOP_TIMEOUT = 5.0

DEFAULT_DIAGNOSTIC_LOG_LINES = 100
#: Longest wait for ``pcscd --version`` (diagnostics only).
PCSCD_VERSION_TIMEOUT = 5.0

_COMPONENTS = ("pyscard", "dbus-fast", "cryptography", "PyYAML", "systemd-python")


def _fail(message: str) -> None:
    """A fatal start-up problem: one line on stderr, never a traceback."""
    print(f"escd: {message}", file=sys.stderr, flush=True)


def notify(state: str) -> None:
    """sd_notify, tolerating a missing or stale ``NOTIFY_SOCKET``.

    python-systemd's ``notify`` returns False without ``NOTIFY_SOCKET`` but raises
    ``FileNotFoundError`` when it names a socket that no longer exists.
    """
    try:
        sd_notify(state)
    except OSError as exc:
        logger.debug("sd_notify(%s) failed: %s", state.splitlines()[0], exc)


def component_versions() -> dict[str, str]:
    versions = {"escd": __version__, "python": platform.python_version()}
    for name in _COMPONENTS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def crypto_versions() -> dict[str, str]:
    """The TLS and X.509 libraries in use (ESC's diagnostics named NSS here)."""
    from cryptography.hazmat.backends.openssl.backend import backend

    return {"openssl": ssl.OPENSSL_VERSION, "cryptography-openssl": backend.openssl_version_text()}


async def pcsc_lite_version() -> str:
    """What ``pcscd --version`` says; pyscard cannot tell which pcsc-lite it talks to."""
    binary = shutil.which("pcscd") or "/usr/sbin/pcscd"
    if not Path(binary).exists():
        return "missing"
    try:
        process = await asyncio.create_subprocess_exec(
            binary,
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return "unknown"
    try:
        async with asyncio.timeout(PCSCD_VERSION_TIMEOUT):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return "unknown"
    found = re.search(r"pcsc-lite version (\S+?)\.?\s", output.decode("utf-8", "replace"))
    return found.group(1) if found else "unknown"


def load_configuration(files: list[Path] | None) -> Config:
    """Load the given files (each must exist) or the default system and user files."""
    if files:
        for path in files:
            if not path.is_file():
                raise ConfigError(str(path), "", "no such file")
    return load_config(files)


class Daemon:
    """One escd instance on one bus; also the application service the D-Bus objects call."""

    def __init__(
        self,
        config: Config,
        *,
        config_files: list[Path] | None = None,
        log_level: str | None = None,
        logs: LogSetup | None = None,
        backend: ReaderBackend | None = None,
        bus_address: str | None = None,
        state: Path | None = None,
    ) -> None:
        self._config = config
        self._config_files = config_files
        self._log_level = log_level
        # A daemon embedded without a LogSetup (tests) gets its own, removed when it stops.
        self._owns_logs = logs is None
        self._logs = logs if logs is not None else LogSetup(config.diagnostics.event_ring_size)
        #: The PC/SC backend when this daemon built it (its back-off follows reloads).
        self._pcsc: PcscReaderBackend | None = None
        if backend is None:
            backend = self._pcsc = PcscReaderBackend(config.pcsc, PcscCardSession.open)
        self._backend: ReaderBackend = backend
        self._bus_address = bus_address
        self._versions = component_versions()
        self.registry = TokenRegistry()
        self.ring = EventRing(config.diagnostics.event_ring_size, clock=time.time)
        self.registry.subscribe(self.ring.observe)
        #: ``$XDG_STATE_HOME/escd``: token settings and phone-home cache, trust store.
        self.state = state if state is not None else state_dir()
        self.token_store = TokenStore.in_state_dir(self.state)
        self._trust: TrustStore | None = None
        self._phone_home: PhoneHomeService | None = None
        self._admin: AdminService | None = None
        self._watcher: CardWatcher | None = None
        self._service: EscdService | None = None
        self._jobs: JobManager | None = None
        self._agents: AgentBroker | None = None
        self._trust_asker: ServerTrustAsker | None = None
        self._operations: TpsOperations | None = None
        self._stop_requested: asyncio.Event | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._status = ""
        self._launcher: Launcher | None = None
        self._auto_launch: AutoLaunch | None = None
        self._notifier: Notifier | None = None
        self.ready = asyncio.Event()

    # -- ServiceActions ----------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._config

    @property
    def features(self) -> tuple[str, ...]:
        return FEATURES + OPERATION_FEATURES

    @property
    def trust(self) -> TrustStore:
        """The CAs and server pins for TPS and phone-home connections."""
        if self._trust is None:
            raise RuntimeError("trust store used before the daemon started")
        return self._trust

    @property
    def admin(self) -> AdminService:
        if self._admin is None:
            raise RuntimeError("administration before the daemon started")
        return self._admin

    @property
    def phone_home(self) -> PhoneHomeService:
        if self._phone_home is None:
            raise RuntimeError("phone home before the daemon started")
        return self._phone_home

    def diagnostics(
        self, log_lines: int | None, as_text: bool, token: str | None = None
    ) -> dict[str, object]:
        lines = DEFAULT_DIAGNOSTIC_LOG_LINES if log_lines is None else log_lines
        only = self.registry.find(token).token_id if token is not None else None
        return build_report(
            self.registry,
            self.ring.recent(),
            self._logs.ring.lines(lines) if lines else [],
            self._versions,
            [str(path) for path in self._existing_config_files()],
            as_text=as_text,
            only=only,
            phone_home=self._phone_home.describe if self._phone_home is not None else None,
            trust=self._admin.list_trust() if self._admin is not None else (),
        )

    def reload_configuration(self) -> None:
        """Re-read the configuration (SIGHUP and ``ReloadConfiguration``)."""
        try:
            new = load_configuration(self._config_files)
        except ConfigError as exc:
            logger.warning("configuration not reloaded, keeping the old one: %s", exc.message)
            self.ring.record(EventKind.CONFIG, f"reload refused: {exc.message}")
            raise
        old, self._config = self._config, new
        self._logs.apply(new.log, self._log_level)
        self._logs.ring.resize(new.diagnostics.event_ring_size)
        self.ring.resize(new.diagnostics.event_ring_size)
        if self._pcsc is not None:
            self._pcsc.update_config(new.pcsc)
        if self._watcher is not None:
            self._watcher.identify_timeout = new.pcsc.identify_timeout
        self._trust_config_changed(new)
        if old.phone_home.global_url != new.phone_home.global_url:
            _warn_global_phone_home_url(new)
        if self._phone_home is not None and self._tasks is not None:
            rerun = old.phone_home != new.phone_home
            self._tasks.create_task(self._phone_home.configuration_changed(phone_home=rerun))
        if self._auto_launch is not None:
            self._auto_launch.apply(new.auto_launch)
        if self._notifier is not None:
            self._notifier.apply(new.notifications.enabled)
        if self._service is not None:
            self._service.config_changed(old, new)
        self.ring.record(EventKind.CONFIG, "configuration reloaded")
        logger.info("configuration reloaded")

    async def refresh_token(self, token_id: str) -> None:
        if self._watcher is None:
            raise RuntimeError("refresh before the watcher started")
        await self._watcher.refresh_token(token_id)

    # -- jobs, operations and agents ---------------------------------------------------

    @property
    def jobs(self) -> JobManager:
        if self._jobs is None:
            raise RuntimeError("jobs before the daemon started")
        return self._jobs

    @property
    def agents(self) -> AgentBroker:
        if self._agents is None:
            raise RuntimeError("agents before the daemon started")
        return self._agents

    @property
    def operations(self) -> TpsOperations:
        if self._operations is None:
            raise RuntimeError("operations before the daemon started")
        return self._operations

    def start_operation(self, request: OperationRequest) -> str:
        return self.operations.start(request).path

    def start_phone_home(
        self, token_id: str, caller: str, *, force: bool, url: str, path: str | None
    ) -> str:
        """``Token.PhoneHome``: phone home now, as a job the caller can follow."""
        token = self.registry.token(token_id)
        if not token.cuid:
            raise NotSupportedError("a token without a CUID has nothing to phone home about")
        given = url.strip()
        if given:
            check_url_allowed(given, self._config.tps.allow_http)
        work = PhoneHomeWork(
            self.phone_home,
            token_id,
            force=force,
            url=given,
            broker=self._agents,
            starter=caller,
            trust=self._trust_asker,
        )
        job = self.jobs.start(JobKind.PHONE_HOME, token_id, caller, work, path=path)
        work.job_path = job.path
        return job.path

    def token_job(self, token_id: str) -> str:
        job = self.jobs.running_job(token_id) if self._jobs is not None else None
        return job.path if job is not None else ""

    def last_operation(self, token_id: str) -> dict[str, object]:
        result = self.jobs.last_result(token_id) if self._jobs is not None else None
        return result.last_operation() if result is not None else {}

    def cancel_job(self, path: str, caller: str) -> None:
        self.jobs.cancel(path, by=caller)

    def register_agent(
        self,
        owner: str,
        path: str,
        *,
        capabilities: frozenset[str] | None,
        default: bool,
        ui: bool,
    ) -> None:
        self.agents.register(owner, path, capabilities=capabilities, default=default, ui=ui)

    def unregister_agent(self, owner: str, path: str) -> None:
        self.agents.unregister(owner, path)

    def _connect_tps(self, url: str) -> TpsConnection:
        """A connection to ``url`` that trusts what the trust store says for its host."""
        # Imported here: the HTTP/1.1 stack (h11) is loaded with the first operation, not
        # at start; a daemon that only shows tokens never needs it.
        from escd.tps.connection import TpsConnection

        parts = urlsplit(url)
        context = None
        if parts.scheme.lower() == "https":
            context = self.trust.ssl_context_for(parts.hostname or "", parts.port or 443)
        return TpsConnection.from_config(
            url, self._config.tps, version=__version__, ssl_context=context
        )

    async def _start_operations(
        self, bus: ObjectManagerBus, tasks: asyncio.TaskGroup, watcher: CardWatcher
    ) -> JobExporter:
        """Agents, jobs and TPS operations, with the D-Bus objects that show them."""
        self._agents = AgentBroker(
            DBusAgentChannel(bus), timeout=lambda: self._config.agent.prompt_timeout
        )
        self._jobs = JobManager(
            tasks.create_task,
            numbered_path=numbered_job_path,
            keep_finished=lambda: self._config.jobs.keep_finished,
            cancel_on_client_vanish=lambda: self._config.jobs.cancel_on_client_vanish,
            clock=time.time,
        )
        self._jobs.subscribe(record_in(self.ring))
        # A job that meets an untrusted server asks an agent with tls-trust (ESC's "Add
        # Exception"); the phone home on insertion never does.
        self._trust_asker = ServerTrustAsker(self._agents, self.trust, self.ring)
        # A token without a Phone Home URL anywhere: ask an agent on insertion (ESC's
        # "Prompt for Phone Home Information"); no agent means PhoneHomeState NoUrl.
        self.phone_home.ask_url = AgentUrlAsker(self._agents)
        self.registry.subscribe(self._jobs.observe)
        # Phone home resolves the TPS URL: caller's > per-token setting > phone home's
        # Operation > tps.url (and the token type likewise).
        self._operations = TpsOperations(
            self.registry,
            self._jobs,
            watcher,
            self._agents,
            self.phone_home,
            self._connect_tps,
            lambda: self._config,
            version=__version__,
            trust=self._trust_asker,
        )
        peers = PeerWatcher(bus)
        peers.subscribe(self._agents.peer_vanished)
        peers.subscribe(self._jobs.client_vanished)
        await peers.start()
        exporter = JobExporter(bus, self._jobs, self, self._token_job_changed)
        exporter.start()
        return exporter

    def _token_job_changed(self, token_id: str) -> None:
        token = self._service.token_object(token_id) if self._service is not None else None
        if token is not None:
            token.job_changed()

    # -- life cycle --------------------------------------------------------------------

    def request_stop(self) -> None:
        if self._stop_requested is not None:
            self._stop_requested.set()

    def _reload_on_signal(self) -> None:
        logger.info("SIGHUP: reloading the configuration")
        try:
            self.reload_configuration()
        except ConfigError:
            pass  # logged and recorded by reload_configuration; keep running

    def _config_file_paths(self) -> list[Path]:
        """The files ``--config`` named, else the system and user files."""
        return self._config_files or config_paths()

    def _existing_config_files(self) -> list[Path]:
        return [path for path in self._config_file_paths() if path.is_file()]

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)
        if self._owns_logs:
            self._logs.attach_ring()
        try:
            return await self._run()
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)
            if self._owns_logs:
                self._logs.close()

    async def _run(self) -> int:
        try:
            bus = CallerAwareBus(bus_address=self._bus_address)
            await bus.connect()
        except Exception as exc:  # dbus-fast raises OSError, AuthError, InvalidAddressError…
            _fail(f"cannot connect to the session bus: {exc or exc.__class__.__name__}")
            return EXIT_NO_BUS
        try:
            return await self._serve(bus)
        finally:
            bus.disconnect()

    def _trust_config_changed(self, new: Config) -> None:
        if self._trust is None:
            return
        shared = Path(new.trust.shared_dir).expanduser() if new.trust.shared_dir else None
        if (self.trust.system_cas, self.trust.shared_dir) != (new.trust.system_cas, shared):
            self.trust.system_cas = new.trust.system_cas
            self.trust.shared_dir = shared
            self.trust.reload()

    def _build_services(self, tasks: asyncio.TaskGroup) -> None:
        """Trust, phone home and administration, once the bus name is ours: the state
        files are checked (and left-over temporary files removed) by one instance only."""
        self._trust = TrustStore.from_config(self._config.trust, self.state)
        recovered = self.token_store.recover()
        logger.debug("%d token settings files in %s", len(recovered), self.token_store.directory)
        _warn_global_phone_home_url(self._config)
        self._phone_home = PhoneHomeService(
            self.registry,
            self.token_store,
            lambda: self._config,
            self._phone_home_client,
            tasks.create_task,
            self.ring,
        )
        self._admin = AdminService(
            self.trust,
            self.token_store,
            self._phone_home,
            self.ring,
            state=self.state,
            home=Path(os.environ.get("HOME") or Path.home()),
            config_paths=self._config_file_paths,
            certificate_timeout=self._config.phone_home.timeout,
        )

    def _phone_home_client(self) -> httpx.AsyncClient:
        """Phone home's HTTP client, trusting what the trust store says (built on first use)."""
        # Imported here: httpx is loaded only when phone home first fetches something
        # (escd.phonehome.service), not at start.
        from escd.phonehome.client import create_client

        return create_client(self.trust.ssl_context_for, timeout=self._config.phone_home.timeout)

    async def _offer_legacy_import(self) -> None:
        try:
            await self.admin.offer_legacy_import(self._config.legacy.import_on_first_start)
        except Exception as exc:  # the offer is a convenience: never fatal
            logger.warning("could not offer the ESC profile import: %s", exc)

    # -- auto-launch and desktop notifications ----------------------------------------

    @property
    def launcher(self) -> Launcher:
        if self._launcher is None:
            raise RuntimeError("auto-launch before the daemon started")
        return self._launcher

    @property
    def notifier(self) -> Notifier:
        if self._notifier is None:
            raise RuntimeError("notifications before the daemon started")
        return self._notifier

    def _record(self, kind: EventKind, message: str, token_id: str) -> None:
        self.ring.record(kind, message, token_id=token_id)

    def _ui_agent_present(self) -> bool:
        return self._agents is not None and any(agent.ui for agent in self._agents.agents())

    async def _detect_versions(self) -> None:
        self._versions["pcsc-lite"] = await pcsc_lite_version()

    def _record_crypto(self) -> None:
        crypto = crypto_versions()
        self._versions.update(crypto)
        self.ring.record(
            EventKind.CRYPTO,
            f"crypto initialised: cryptography {self._versions.get('cryptography', '?')} "
            f"with {crypto['cryptography-openssl']}; TLS with {crypto['openssl']}",
        )

    async def _start_desktop(self, bus: ObjectManagerBus, tasks: asyncio.TaskGroup) -> None:
        """Auto-launch and notifications, subscribed before the first insertion is seen."""
        config = self._config
        self._launcher = Launcher(bus, config.auto_launch, tasks.create_task, self._record)
        self._auto_launch = AutoLaunch(
            config.auto_launch,
            self._launcher,
            LaunchLimiter(config.auto_launch.min_interval, time.monotonic),
            announce=self._announce_suggestion,
            ui_agent_present=self._ui_agent_present,
            phone_home_enabled=lambda: self._config.phone_home.enabled,
            token_path=token_path,
            record=self._record,
        )
        self.registry.subscribe(self._auto_launch.observe)
        self._notifier = Notifier(
            bus,
            config.notifications.enabled,
            tasks.create_task,
            self._record,
            on_action=self._notification_action,
            can_enroll=self._can_enroll,
        )
        self.registry.subscribe(self._notifier.observe)
        if self._jobs is not None:
            self._jobs.subscribe(self._job_event)
        try:
            await self._notifier.start()
        except Exception as exc:  # notifications are a convenience: never fatal
            logger.warning("desktop notifications are off: %s", exc)

    def _stop_desktop(self) -> None:
        if self._launcher is not None:
            self._launcher.stop()
        if self._notifier is not None:
            self._notifier.stop()

    def _announce_suggestion(self, token: TokenRecord, reason: SuggestionReason) -> None:
        if self._service is not None:
            self._service.manager.EnrollmentSuggested(token_path(token.token_id), int(reason))

    def _can_enroll(self) -> bool:
        """Whether something can act on an "Enroll…" click: a ``ui`` agent or a launch."""
        return self._ui_agent_present() or self.launcher.configured

    def _notification_action(self, token_id: str, action: str) -> None:
        """The user clicked "Enroll…": the same path as an auto-launch, without its limit."""
        if action != ENROLL_ACTION or self._auto_launch is None:
            return
        try:
            token = self.registry.token(token_id)
        except NoSuchTokenError:
            return  # pulled since the notification was shown
        reason = self._auto_launch.reason_for(token) or SuggestionReason.UNINITIALIZED
        self._auto_launch.suggest(token, reason, limited=False)

    def _job_event(self, event: JobEvent) -> None:
        if not isinstance(event, JobFinished) or self._notifier is None:
            return
        job, result = event.job, event.job.result
        if result is None or result.operation is JobKind.PHONE_HOME:
            return
        if result.state is JobState.CANCELED:
            return  # the user canceled it and knows
        self._notifier.operation_finished(
            job.token_id,
            str(result.operation),
            result.state is JobState.SUCCEEDED,
            result.outcome.message,
        )

    async def _serve(self, bus: ObjectManagerBus) -> int:
        assert self._stop_requested is not None
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            self._service = EscdService(bus, self.registry, self)
            self._service.start()
            refused = await self._own_name(bus)
            if refused is not None:
                return refused
            self._build_services(tasks)
            assert self._phone_home is not None
            self._watcher = CardWatcher(
                self._backend,
                self.registry,
                identify,
                tasks.create_task,
                identify_timeout=self._config.pcsc.identify_timeout,
            )
            self.registry.subscribe(self._update_status)
            exporter = await self._start_operations(bus, tasks, self._watcher)
            self._record_crypto()
            tasks.create_task(self._detect_versions())
            await self._start_desktop(bus, tasks)
            self._phone_home.start()
            self._watcher.start()
            tasks.create_task(self._offer_legacy_import())
            self._status = self._status_text()
            notify(f"READY=1\nSTATUS={self._status}")
            self.ring.record(EventKind.DAEMON, f"escd {__version__} started")
            logger.info("escd %s is ready on the session bus as %s", __version__, BUS_NAME)
            self.ready.set()
            stop = tasks.create_task(self._stop_requested.wait())
            lost = tasks.create_task(self._watch_bus(bus))
            await asyncio.wait({stop, lost}, return_when=asyncio.FIRST_COMPLETED)
            bus_lost = lost.done()
            notify("STOPPING=1")
            logger.info("escd is stopping" if not bus_lost else "lost the session bus; exiting")
            # Jobs first: they close their TPS connections and hand their cards back to
            # the reader workers, which the watcher then shuts down.
            await self.jobs.stop(JOB_STOP_TIMEOUT)
            self.agents.close()
            exporter.stop()
            self._watcher.stop()
            self._stop_desktop()
            await self._phone_home.aclose()
            if not bus_lost:
                # Tokens and readers leave the bus with InterfacesRemoved, as on removal.
                self._service.stop()
            stop.cancel()
            lost.cancel()
        return EXIT_FAILURE if bus_lost else EXIT_OK

    async def _own_name(self, bus: ObjectManagerBus) -> int | None:
        """Take the bus name; the exit code when that is impossible."""
        try:
            reply = await bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        except DBusError as exc:
            _fail(f"cannot own {BUS_NAME} on the session bus: {exc.text}")
            return EXIT_FAILURE
        if reply in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            return None
        _fail(
            f"escd is already running on this session bus ({await self._owner(bus)} owns "
            f"{BUS_NAME}); not starting a second instance"
        )
        return EXIT_ALREADY_RUNNING

    @staticmethod
    async def _owner(bus: ObjectManagerBus) -> str:
        """``pid N`` of the current owner of the bus name, for the refusal message."""
        pid = await call_bus_daemon(bus, "GetConnectionUnixProcessID", "s", [BUS_NAME])
        return f"pid {pid[0]}" if pid else "another process"

    @staticmethod
    async def _watch_bus(bus: ObjectManagerBus) -> None:
        try:
            await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        except Exception as exc:  # the reason is logged; the daemon exits non-zero
            logger.error("the session bus connection ended: %s", exc or exc.__class__.__name__)

    def _status_text(self) -> str:
        readers = len(self.registry.readers())
        tokens = len(self.registry.tokens())
        return (
            f"pcscd {self.registry.pcsc_state.name.lower().replace('_', ' ')}; "
            f"{readers} reader{'s' if readers != 1 else ''}; "
            f"{tokens} token{'s' if tokens != 1 else ''}"
        )

    def _update_status(self, _event: RegistryEvent) -> None:
        text = self._status_text()
        if text != self._status:
            self._status = text
            notify(f"STATUS={text}")


def _warn_global_phone_home_url(config: Config) -> None:
    url = config.phone_home.global_url
    if url:
        # ESC manual table 5.1: the global URL "forces all tokens to point to the same TPS".
        logger.warning(
            "phone_home.global_url is set (%s): every token without a Phone Home URL of its "
            "own is sent to the TPS it names",
            url,
        )


def run_daemon(config_files: list[Path] | None, log_level: str | None) -> int:
    """``escd`` without a command: run in the foreground until SIGTERM."""
    try:
        config = load_configuration(config_files)
    except ConfigError as exc:
        _fail(f"invalid configuration: {exc.message}")
        return EXIT_CONFIG
    logs = LogSetup(config.diagnostics.event_ring_size)
    logs.apply(config.log, log_level)
    daemon = Daemon(config, config_files=config_files, log_level=log_level, logs=logs)
    try:
        return asyncio.run(daemon.run())
    finally:
        logs.close()
