# SPDX-License-Identifier: GPL-2.0-or-later
"""Auto-launch of enrollment: what happens after an insertion the policy covers.

``AutoLaunch`` follows the token registry. Once per insertion, when the token is settled
(its phone home finished, or there is none to wait for), it asks ``escd.autolaunch``
whether enrollment should be suggested; if so it announces it
(``Manager.EnrollmentSuggested``) and, unless a frontend that can show an enrollment UI
is connected (an agent registered with ``ui=true``), asks the ``Launcher`` to start the
configured frontend, at most once per ``auto_launch.min_interval`` per token. An
enrolled token's browser URL is opened the same way when configured.

``Launcher`` is the edge that starts things, each in a task of its own so that nothing
waits for it (the reader monitor least of all), at most one at a time per token, in
this order until one works:

1. ``auto_launch.desktop_app``: ``org.freedesktop.Application.ActivateAction("enroll",
   [<cuid>], {})`` on that bus name (D-Bus activation starts the application);
2. ``auto_launch.command``: the old escd's "key inserted" hook, with ``ESCD_TOKEN_CUID``,
   ``ESCD_TOKEN_STATE``, ``ESCD_READER``, ``ESCD_TOKEN_PATH`` and ``ESCD_REASON`` in its
   environment; its output and exit status are logged, and it is killed (with its
   process group) after ``auto_launch.command_timeout``;
3. the enrollment UI URL from phone home, only with ``auto_launch.open_enrollment_ui``,
   opened with ``gio open`` or ``xdg-open`` (never blindly: phone home is usually plain
   http, so the URL may have been rewritten on the way; only http and https URLs, only
   when configured).

Must not: block the event loop, wait for a launch in the caller, put a secret into a
command's environment or a log (there is none: CUIDs, states, reader names and URLs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from escd.autolaunch import LaunchLimiter, SuggestionReason, suggestion_for
from escd.config import AutoLaunchConfig, AutoLaunchPolicy
from escd.events import EventKind
from escd.model import PhoneHomeState, TokenState
from escd.tokens import RegistryEvent, TokenAppeared, TokenChanged, TokenGone, TokenRecord

logger = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]
#: Records an event for diagnostics: (kind, message, token id).
Record = Callable[[EventKind, str, str], None]

APPLICATION_INTERFACE = "org.freedesktop.Application"
ENROLL_ACTION = "enroll"
#: How long a desktop application gets to answer ActivateAction (activation included).
ACTIVATE_TIMEOUT = 25.0
#: How much of the end of a hook's output is logged.
MAX_OUTPUT = 8192
MAX_OUTPUT_LINES = 20
_URL_OPENERS = (("gio", "open"), ("xdg-open",))

#: Phone-home states after which a token's phone-home values are final for this insertion.
_PHONE_HOME_DONE = frozenset(
    {
        PhoneHomeState.FROM_CACHE,
        PhoneHomeState.FETCHED,
        PhoneHomeState.FAILED,
        PhoneHomeState.NO_URL,
    }
)


def application_path(bus_name: str) -> str:
    """The object path of a D-Bus activatable application (Desktop Entry spec)."""
    return "/" + bus_name.replace(".", "/").replace("-", "_")


def openable_url(url: str) -> bool:
    """Only web pages are handed to the desktop's URL handler (no file:, no custom schemes)."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """What a launch needs to know about its token; no secrets."""

    token_id: str
    cuid: str
    state: TokenState
    reader: str
    token_path: str
    reason: SuggestionReason
    enrollment_ui_url: str = ""


def state_name(state: TokenState) -> str:
    """ESC's spelling of a token state (NO_APPLET, UNINITIALIZED, ENROLLED, UNKNOWN)."""
    return state.name


class Launcher:
    """Starts the configured frontend for a token, one launch at a time per token."""

    def __init__(
        self,
        bus: MessageBus,
        config: AutoLaunchConfig,
        spawn: Spawn,
        record: Record,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._bus = bus
        self.config = config
        self._spawn = spawn
        self._record = record
        self._environ = environ
        self._running: dict[str, asyncio.Task[None]] = {}

    def busy(self, token_id: str) -> bool:
        return token_id in self._running

    @property
    def configured(self) -> bool:
        """Whether an enrollment launch has anything to start (the URL only when known)."""
        return bool(self.config.desktop_app or self.config.command)

    def can_launch(self, request: LaunchRequest) -> bool:
        return self.configured or self._url_allowed(request.enrollment_ui_url)

    def _url_allowed(self, url: str) -> bool:
        return self.config.open_enrollment_ui and openable_url(url)

    def launch(self, request: LaunchRequest) -> bool:
        """Start the enrollment frontend for a token; False when nothing was started."""
        if not self.can_launch(request):
            logger.debug("auto-launch for %s: nothing is configured to launch", request.token_id)
            return False
        return self._start(request.token_id, self._launch(request))

    def open_url(self, token_id: str, url: str, what: str) -> bool:
        """Open a phone-home URL for a token with the desktop's handler (caller checked policy)."""
        if not openable_url(url):
            logger.warning("not opening the %s of %s: %r is not a web URL", what, token_id, url)
            return False
        return self._start(token_id, self._open(token_id, url, what))

    def _start(self, token_id: str, work: Coroutine[Any, Any, bool]) -> bool:
        if token_id in self._running:
            work.close()
            logger.info("auto-launch for %s: the previous launch is still running", token_id)
            return False
        self._running[token_id] = self._spawn(self._guard(token_id, work))
        return True

    async def _guard(self, token_id: str, work: Coroutine[Any, Any, bool]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug here must not end the daemon's task group; the log has the details.
            logger.exception("auto-launch for %s failed unexpectedly", token_id)
        finally:
            if self._running.get(token_id) is asyncio.current_task():
                del self._running[token_id]

    def stop(self) -> None:
        """Cancel every running launch (a running hook is killed)."""
        for task in list(self._running.values()):
            task.cancel()

    async def wait_idle(self) -> None:
        """Wait until no launch is running (for an orderly stop and for tests)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    # -- the three ways -------------------------------------------------------------------

    async def _launch(self, request: LaunchRequest) -> bool:
        config = self.config
        if config.desktop_app and await self._activate(config.desktop_app, request):
            return True
        if config.command and await self._run_command(config.command, request):
            return True
        if self._url_allowed(request.enrollment_ui_url):
            return await self._open(request.token_id, request.enrollment_ui_url, "enrollment UI")
        return False

    async def _activate(self, app: str, request: LaunchRequest) -> bool:
        token_id = request.token_id
        try:
            message = Message(
                destination=app,
                path=application_path(app),
                interface=APPLICATION_INTERFACE,
                member="ActivateAction",
                signature="sava{sv}",
                body=[ENROLL_ACTION, [Variant("s", request.cuid or token_id)], {}],
            )
        except Exception as exc:  # dbus-fast validates names: InvalidBusNameError & co.
            logger.warning("auto_launch.desktop_app %r is not a valid bus name: %s", app, exc)
            return False
        try:
            async with asyncio.timeout(ACTIVATE_TIMEOUT):
                reply = await self._bus.call(message)
        except TimeoutError:
            reply = None
            problem = f"no answer in {ACTIVATE_TIMEOUT:.0f} s"
        except Exception as exc:  # the connection is gone or the call could not be sent
            reply = None
            problem = str(exc) or exc.__class__.__name__
        else:
            problem = ""
        if reply is not None and reply.message_type is MessageType.ERROR:
            detail = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            problem = f"{reply.error_name}: {detail}".rstrip(": ")
        if problem or reply is None:
            logger.warning(
                "auto-launch for %s: activating %s failed: %s", token_id, app, problem or "?"
            )
            self._record(EventKind.ERROR, f"auto-launch: activating {app} failed", token_id)
            return False
        logger.info("auto-launch for %s: activated %s (action %s)", token_id, app, ENROLL_ACTION)
        self._record(EventKind.LAUNCH, f"auto-launch: activated {app}", token_id)
        return True

    def _hook_environment(self, request: LaunchRequest) -> dict[str, str]:
        env = dict(os.environ if self._environ is None else self._environ)
        env.update(
            ESCD_TOKEN_CUID=request.cuid,
            ESCD_TOKEN_STATE=state_name(request.state),
            ESCD_READER=request.reader,
            ESCD_TOKEN_PATH=request.token_path,
            ESCD_REASON=request.reason.name,
        )
        return env

    async def _run_command(self, command: Sequence[str], request: LaunchRequest) -> bool:
        status = await self._execute(
            list(command),
            self._hook_environment(request),
            request.token_id,
            "command",
            self.config.command_timeout,
        )
        return status == 0

    async def _open(self, token_id: str, url: str, what: str) -> bool:
        for opener in _URL_OPENERS:
            if shutil.which(opener[0]) is not None:
                argv = [*opener, url]
                break
        else:
            logger.warning("cannot open the %s of %s: neither gio nor xdg-open", what, token_id)
            return False
        env = dict(os.environ if self._environ is None else self._environ)
        status = await self._execute(argv, env, token_id, what, self.config.command_timeout)
        return status == 0

    async def _execute(
        self, argv: list[str], env: dict[str, str], token_id: str, what: str, timeout: float
    ) -> int | None:
        """Run ``argv`` to completion or timeout; its exit status (None: did not finish)."""
        # Output goes to an unlinked temporary file, not a pipe: a hook that starts a GUI
        # in the background hands it our stdout, and a pipe we stop reading would kill
        # that GUI with SIGPIPE on its first warning.
        with tempfile.TemporaryFile(prefix="escd-hook-") as output:
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=output,
                    stderr=output,
                    env=env,
                    # Its own process group, so a timeout kills whatever it started too.
                    start_new_session=True,
                )
            except OSError as exc:
                logger.warning(
                    "auto-launch for %s: cannot run %s %r: %s",
                    token_id,
                    what,
                    argv[0],
                    exc.strerror or exc,
                )
                self._record(EventKind.ERROR, f"auto-launch: cannot run {what} {argv[0]}", token_id)
                return None
            logger.info(
                "auto-launch for %s: started %s %r (pid %d)", token_id, what, argv[0], process.pid
            )
            try:
                async with asyncio.timeout(timeout):
                    status = await process.wait()
            except TimeoutError:
                _kill_group(process.pid)
                await process.wait()
                status = None
            except asyncio.CancelledError:
                _kill_group(process.pid)
                with contextlib.suppress(Exception):
                    await asyncio.shield(process.wait())
                raise
            text = await asyncio.to_thread(_tail, output)
        for line in text.splitlines()[-MAX_OUTPUT_LINES:]:
            logger.info("auto-launch for %s: %s output: %s", token_id, what, line)
        if status is None:
            logger.warning(
                "auto-launch for %s: %s %r did not finish in %g s; killed it",
                token_id,
                what,
                argv[0],
                timeout,
            )
            self._record(
                EventKind.ERROR, f"auto-launch: {what} killed after {timeout:g} s", token_id
            )
        elif status == 0:
            logger.info("auto-launch for %s: %s %r exited with status 0", token_id, what, argv[0])
            self._record(EventKind.LAUNCH, f"auto-launch: ran {what} (status 0)", token_id)
        else:
            logger.warning(
                "auto-launch for %s: %s %r exited with status %d", token_id, what, argv[0], status
            )
            self._record(
                EventKind.ERROR, f"auto-launch: {what} exited with status {status}", token_id
            )
        return status


def _tail(output: IO[bytes]) -> str:
    """The last ``MAX_OUTPUT`` bytes written to ``output``, as text."""
    # pread leaves the shared file offset alone: a child of the hook may still write.
    fd = output.fileno()
    size = os.fstat(fd).st_size
    start = max(0, size - MAX_OUTPUT)
    return os.pread(fd, size - start, start).decode("utf-8", "replace")


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class AutoLaunch:
    """Registry subscriber: once per insertion, suggest enrollment and launch when asked to."""

    def __init__(
        self,
        config: AutoLaunchConfig,
        launcher: Launcher,
        limiter: LaunchLimiter,
        *,
        announce: Callable[[TokenRecord, SuggestionReason], None],
        ui_agent_present: Callable[[], bool],
        phone_home_enabled: Callable[[], bool],
        token_path: Callable[[str], str],
        record: Record,
    ) -> None:
        self.config = config
        self.launcher = launcher
        self.limiter = limiter
        self._announce = announce
        self._ui_agent_present = ui_agent_present
        self._phone_home_enabled = phone_home_enabled
        self._token_path = token_path
        self._record = record
        #: Tokens inserted whose suggestion is still to be decided (waiting for phone home).
        self._pending: set[str] = set()

    def apply(self, config: AutoLaunchConfig) -> None:
        """A reloaded configuration."""
        self.config = config
        self.launcher.config = config
        self.limiter.min_interval = config.min_interval

    def observe(self, event: RegistryEvent) -> None:
        match event:
            case TokenAppeared(token=token):
                self._pending.add(token.token_id)
                self._consider(token)
            case TokenChanged(token=token) if token.token_id in self._pending:
                self._consider(token)
            case TokenGone(token=token):
                self._pending.discard(token.token_id)
            case _:
                pass

    def _settled(self, token: TokenRecord) -> bool:
        # Phone home runs for tokens with a CUID when enabled; its outcome decides between
        # reasons, and its URLs are what a launch may open, so the decision waits for it.
        if not token.cuid or not self._phone_home_enabled():
            return True
        return token.phone_home_state in _PHONE_HOME_DONE

    def _consider(self, token: TokenRecord) -> None:
        if not self._settled(token):
            return
        self._pending.discard(token.token_id)
        state = token.info.state
        reason = suggestion_for(
            self.config.policy,
            state,
            phone_home_failed=token.phone_home_state is PhoneHomeState.FAILED,
        )
        if reason is not None:
            self.suggest(token, reason, limited=True)
        elif (
            state is TokenState.ENROLLED
            and self.config.open_enrolled_token_url
            and token.enrolled_token_browser_url
            and self.limiter.allow(token.token_id)
        ):
            self.launcher.open_url(
                token.token_id, token.enrolled_token_browser_url, "enrolled-token page"
            )

    def suggest(self, token: TokenRecord, reason: SuggestionReason, *, limited: bool) -> bool:
        """Announce a suggested enrollment and launch a frontend unless a UI agent is there.

        ``limited`` applies the per-token rate limit (insertions); a user's explicit request
        (the notification's "Enroll…" action) is not limited. True when a launch started.
        """
        logger.info(
            "enrollment suggested for %s (%s)",
            token.token_id,
            reason.name.lower(),
            extra={"ESCD_TOKEN_CUID": token.cuid},
        )
        self._record(
            EventKind.LAUNCH, f"enrollment suggested ({reason.name.lower()})", token.token_id
        )
        self._announce(token, reason)
        if self._ui_agent_present():
            logger.info("a frontend with an enrollment UI is connected; nothing launched")
            return False
        request = LaunchRequest(
            token_id=token.token_id,
            cuid=token.cuid,
            state=token.info.state,
            reader=token.reader,
            token_path=self._token_path(token.token_id),
            reason=reason,
            enrollment_ui_url=token.enrollment_ui_url,
        )
        if not self.launcher.can_launch(request):
            return False
        if limited and not self.limiter.allow(token.token_id):
            logger.info(
                "auto-launch for %s: launched less than %g s ago; not again",
                token.token_id,
                self.config.min_interval,
            )
            return False
        return self.launcher.launch(request)

    def reason_for(self, token: TokenRecord) -> SuggestionReason | None:
        """Why enrollment would be suggested for this token under policy ``always``."""
        return suggestion_for(
            AutoLaunchPolicy.ALWAYS,
            token.info.state,
            phone_home_failed=token.phone_home_state is PhoneHomeState.FAILED,
        )
