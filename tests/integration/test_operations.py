# SPDX-License-Identifier: GPL-2.0-or-later
"""TPS operations as D-Bus jobs, in-process: the daemon, the simulated TPS and an agent.

The daemon is the real composition (registry, watcher, jobs, agent broker, operations,
D-Bus objects) over the simulator's in-process readers, talking HTTP to a
``SimulatedTps`` in the same loop; clients are separate bus connections (``EscdClient``
with escctl's ``AgentInterface`` answering from a script). Fast coverage of every path:
success, Busy, InvalidState, NoAgent, prompt timeout, an agent vanishing, cancel, a card
pulled at several points, the TPS dropping the connection, END_OP failures, renew and
unblock refused, job paths and the grace period. The real chain (pcscd, vpcd, TLS, the
daemon as a process, escctl) is ``tests/system/test_enrollment_e2e.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from dbus_fast import DBusError, Message, Variant
from dbus_fast.aio import MessageBus

from escd.card.apdu import CommandApdu
from escd.config import Config
from escd.ctl.agent import (
    ESCCTL_CAPABILITIES,
    AgentCanceled,
    Answer,
    PromptRequest,
    register_agent,
)
from escd.ctl.client import EscdClient, JobView, plain
from escd.daemon import Daemon
from escd.dbus_service.names import (
    BUS_NAME,
    DBUS_INTERFACE,
    DBUS_NAME,
    DBUS_PATH,
    ERROR_INVALID_ARGS,
    JOB_INTERFACE,
    JOB_PATH_PREFIX,
    MANAGER_INTERFACE,
    MANAGER_PATH,
    PROPERTIES_INTERFACE,
    TOKEN_INTERFACE,
    token_path,
)
from escd.errors import ERROR_PREFIX
from escd.log import TRAFFIC
from escd.model import TokenState
from escd.readers import CardSession, ReaderEvent
from escd.sim.bus import PrivateBus
from escd.sim.ca import CertificateAuthority
from escd.sim.card import SimulatedCard, blank_card, enrolled_card
from escd.sim.loadfile import COOLKEY_INSTANCE_AID
from escd.sim.reader import SimReaderBackend
from escd.sim.tps import SimulatedTps
from escd.sim.tps_config import Faults, TokenPolicy, TpsConfig
from escd.sim.tps_db import User, UserDirectory
from escd.trust import fetch_server_certificate, fingerprint
from tests.support.agents import ScriptedAgent
from tests.system.test_introspection import SHIPPED, interfaces

TIMEOUT = 10.0
PIN, NEW_PIN, PASSWORD = "135790", "246801", "pw-S3cret!"
SUCCEEDED, FAILED, CANCELED = 4, 5, 6
#: CoolKey GENERATE KEY (on-card RSA key generation).
INS_GENERATE_KEY = 0x0C


# -- a reader backend that pulls the card at a chosen APDU -------------------------------


class _PullingSession:
    """A simulated reader's session that pulls its own card before a chosen command."""

    def __init__(self, inner: CardSession, backend: PullingBackend) -> None:
        self._inner = inner
        self._backend = backend

    @property
    def reader(self) -> str:
        return self._inner.reader

    @property
    def atr(self) -> bytes:
        return self._inner.atr

    def transmit(self, apdu: bytes) -> bytes:
        self._backend.sent += 1
        trigger = self._backend.pull_before
        if trigger is not None and trigger(apdu, self._backend.sent):
            self._backend.pull_before = None
            self._backend.inner.remove(self.reader)
        return self._inner.transmit(apdu)

    def begin_transaction(self) -> None:
        self._inner.begin_transaction()

    def end_transaction(self) -> None:
        self._inner.end_transaction()

    def reset(self) -> None:
        self._inner.reset()

    def close(self) -> None:
        self._inner.close()


class PullingBackend:
    """The simulator's in-process readers; ``pull_before(apdu, n)`` pulls the card."""

    def __init__(self, inner: SimReaderBackend) -> None:
        self.inner = inner
        self.pull_before: Callable[[bytes, int], bool] | None = None
        self.sent = 0

    def start(self, on_event: Callable[[ReaderEvent], None]) -> None:
        self.inner.start(on_event)

    def stop(self) -> None:
        self.inner.stop()

    def connect(self, reader: str) -> CardSession:
        return _PullingSession(self.inner.connect(reader), self)


# -- the environment -------------------------------------------------------------------


@dataclasses.dataclass
class Env:
    daemon: Daemon
    readers: SimReaderBackend
    backend: PullingBackend
    tps: SimulatedTps
    client: EscdClient
    agent: ScriptedAgent
    changed: asyncio.Condition

    @property
    def reader(self) -> str:
        return self.readers.readers[0]

    async def insert(self, card: SimulatedCard, reader: int = 0) -> str:
        """Insert ``card`` and wait until escd has read it; its token path."""
        self.readers.insert(self.readers.readers[reader], card)
        cuid = card.state.cuid.hex()
        await self.wait(lambda: _present(self.daemon, cuid))
        return token_path(cuid)

    async def wait(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT), self.changed:
            await self.changed.wait_for(predicate)

    def state(self, path: str) -> TokenState:
        return self.daemon.registry.token(path.rsplit("/", 1)[1]).info.state

    async def run(
        self, path: str, method: str, handle_token: str = "t1", **options: Variant
    ) -> list[JobView]:
        """Start ``method`` on the token and follow its job to the end; every view seen."""
        job = self.client.job_path(handle_token)
        views: list[JobView] = []
        async with asyncio.timeout(TIMEOUT), self.client.watch_job(job) as watch:
            started = await self.client.start_operation(
                path, method, {"handle_token": Variant("s", handle_token), **options}
            )
            assert started == job
            async for view in watch.updates():
                views.append(view)
        return views

    async def start(self, path: str, method: str, **options: Variant) -> str:
        return await self.client.start_operation(path, method, options)

    async def completed(self, job: str) -> JobView:
        async with asyncio.timeout(TIMEOUT), self.client.watch_job(job) as watch:
            async for view in watch.updates():
                if view.completed:
                    return view
        raise AssertionError("no Completed")


def _present(daemon: Daemon, cuid: str) -> bool:
    try:
        daemon.registry.token(cuid)
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


MakeEnv = Callable[..., Awaitable[Env]]


@pytest.fixture
async def make_env(
    session_bus: PrivateBus, tmp_path: Path, ca: CertificateAuthority
) -> AsyncIterator[MakeEnv]:
    stack: list[Callable[[], Awaitable[None]]] = []

    async def make(
        tps_config: TpsConfig | None = None,
        config: dict[str, Any] | None = None,
        *,
        agent: ScriptedAgent | None = None,
        register: bool = True,
        users: UserDirectory | None = None,
    ) -> Env:
        tps = SimulatedTps(
            tps_config
            or TpsConfig(
                tls=False,
                default_policy=TokenPolicy(pin_reset=True),
                allow_multiple_active_tokens=True,
            ),
            ca=ca,
            users=users,
        )
        await tps.start()
        stack.append(tps.stop)
        settings: dict[str, Any] = {
            "tps": {
                "url": tps.url,
                "allow_http": [] if tps.config.tls else [tps.base_url],
                "message_timeout": 10,
            },
            "jobs": {"keep_finished": 30},
            # Phone home would hold connections to the same server; not the subject here.
            "phone_home": {"enabled": False},
        }
        for section, values in (config or {}).items():
            settings.setdefault(section, {}).update(values)
        loop = asyncio.get_running_loop()
        readers = SimReaderBackend(loop, 2)
        backend = PullingBackend(readers)
        daemon = Daemon(Config.from_mapping(settings), backend=backend, state=tmp_path / "state")
        task = asyncio.create_task(daemon.run())

        async def stop_daemon() -> None:
            daemon.request_stop()
            assert await asyncio.wait_for(task, TIMEOUT) == 0

        async with asyncio.timeout(TIMEOUT):
            await daemon.ready.wait()
        stack.append(stop_daemon)
        changed = asyncio.Condition()

        def notify(_event: object) -> None:
            async def wake() -> None:
                async with changed:
                    changed.notify_all()

            loop.create_task(wake())

        daemon.registry.subscribe(notify)
        daemon.jobs.subscribe(notify)
        client = await EscdClient.connect()
        stack.append(_closer(client.bus))
        scripted = agent or ScriptedAgent()
        scripted.answers.setdefault("new_pin", PIN)
        if register:
            await register_agent(client.bus, scripted)
        return Env(daemon, readers, backend, tps, client, scripted, changed)

    yield make
    for close in reversed(stack):
        await close()


def _closer(bus: MessageBus) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        bus.disconnect()

    return close


def blank() -> SimulatedCard:
    return SimulatedCard(blank_card())


def enrolled() -> SimulatedCard:
    return SimulatedCard(enrolled_card(key_bits=1024, pin=PIN))


def verify(card: SimulatedCard, pin: str) -> int:
    """VERIFY PIN straight on the card (after the job, outside escd)."""
    card.power_on()
    card.transmit(CommandApdu(0x00, 0xA4, 0x04, 0x00, COOLKEY_INSTANCE_AID).encode())
    answer = card.transmit(CommandApdu(0xB0, 0x42, 0x00, 0x00, pin.encode()).encode())
    return int.from_bytes(answer[-2:], "big")


def result_of(views: list[JobView]) -> dict[str, Any]:
    assert views[-1].completed, views[-1]
    return views[-1].result


def error_of(views: list[JobView]) -> str:
    return str(result_of(views)["error"])


def tps_connections(port: int) -> int:
    """Established TCP connections to ``port`` from this process's side (client sockets)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01":
                count += 1
    return count


# -- success ---------------------------------------------------------------------------


async def test_blank_card_format_enroll_and_reset_pin_through_jobs(make_env: MakeEnv) -> None:
    env = await make_env()
    card = blank()
    path = await env.insert(card)
    assert env.state(path) is TokenState.NO_APPLET

    views = await env.run(path, "Format", handle_token="fmt")
    assert views[-1].state == SUCCEEDED and error_of(views) == ""
    assert result_of(views) == {
        "error": "",
        "tps_status": 0,
        "status_source": "tps",
        "message": "The operation completed successfully.",
    }
    assert env.agent.kinds()[:2] == ["confirm-format", "extended-login"]
    assert env.state(path) is TokenState.UNINITIALIZED  # re-read before Completed

    views = await env.run(path, "Enroll", handle_token="enr")
    assert error_of(views) == "", result_of(views)
    assert env.state(path) is TokenState.ENROLLED
    stages = [view.tps_stage for view in views if view.progress_valid]
    assert 100 in stages and any(0 < view.progress < 1 for view in views)
    assert any(view.tps_task == "PROGRESS_KEY_GENERATION" for view in views)
    new_pin = await env.agent.wait_asked("new-pin")
    (pin_field,) = new_pin.fields
    assert pin_field.type == "pin" and pin_field.confirm
    assert (pin_field.min_length, pin_field.max_length) == (4, 10)
    login = await env.agent.wait_asked("extended-login", 2)
    assert {f.id: f.type for f in login.fields} == {"UID": "text", "PASSWORD": "secret"}
    assert login.title == "LDAP Authentication"
    assert verify(card, PIN) == 0x9000

    token_props = await _get_all(env.client, path, TOKEN_INTERFACE)
    assert token_props["Job"] == "/"
    last = token_props["LastOperation"]
    assert last["operation"] == "enroll" and last["result"] == SUCCEEDED
    assert last["error"] == "" and last["status_source"] == "tps" and last["finished"] > 0

    env.agent.answers["new_pin"] = NEW_PIN
    views = await env.run(path, "ResetPin", handle_token="rst")
    assert error_of(views) == "", result_of(views)
    assert verify(card, NEW_PIN) == 0x9000
    assert verify(card, PIN) != 0x9000
    events = [record.message for record in env.daemon.ring.recent() if record.kind == "operation"]
    assert events[-1] == "reset-pin succeeded"
    assert any(message.startswith("enroll started by :") for message in events)


async def test_job_properties_and_path_follow_the_contract(make_env: MakeEnv) -> None:
    env = await make_env()
    path = await env.insert(blank())
    views = await env.run(path, "Format", handle_token="props_1")
    job = env.client.job_path("props_1")
    sender = env.client.unique_name.lstrip(":").replace(".", "_")
    assert job == f"{JOB_PATH_PREFIX}{sender}/props_1"
    props = await _get_all(env.client, job, JOB_INTERFACE)
    assert props["Operation"] == "format" and props["Token"] == path
    assert props["State"] == SUCCEEDED and props["Cancelable"] is False
    assert props["StartedBy"] == env.client.unique_name and props["StartTime"] > 0
    assert props["ProgressValid"] is True and props["Progress"] == 1.0
    assert props["TpsStage"] == 100 and props["TpsTask"] == "PROGRESS_DONE"
    assert props["Result"]["error"] == ""
    states = [view.state for view in views]
    assert 2 in states  # WaitingForInput while the agent was asked
    # Without handle_token: /job/<n>.
    numbered = await env.start(path, "Format", confirmed=Variant("b", True))
    assert numbered.startswith(JOB_PATH_PREFIX) and numbered.rsplit("/", 1)[1].isdigit()
    assert (await env.completed(numbered)).state == SUCCEEDED
    assert env.agent.kinds().count("confirm-format") == 1  # confirmed=true asks nothing


async def test_finished_job_leaves_the_bus_after_the_grace_period(make_env: MakeEnv) -> None:
    env = await make_env(config={"jobs": {"keep_finished": 0.2}})
    path = await env.insert(enrolled())
    removed = asyncio.Event()
    job = env.client.job_path("grace")

    def handler(message: Message) -> None:
        if message.member == "InterfacesRemoved" and message.body[0] == job:
            removed.set()

    env.client.bus.add_message_handler(handler)
    await _add_match(env.client, f"type='signal',sender='{BUS_NAME}',member='InterfacesRemoved'")
    views = await env.run(path, "Renew", handle_token="grace")
    assert views[-1].state == FAILED
    async with asyncio.timeout(TIMEOUT):
        await removed.wait()
    with pytest.raises(DBusError):
        await env.client.job(job)
    # The token keeps the result after the job is gone.
    last = (await _get_all(env.client, path, TOKEN_INTERFACE))["LastOperation"]
    assert last["operation"] == "renew"


# -- refusals at call time ---------------------------------------------------------------


async def test_a_second_operation_on_a_busy_token_is_busy(make_env: MakeEnv) -> None:
    env = await make_env(agent=ScriptedAgent(hang={"extended-login"}))
    path = await env.insert(blank())
    job = await env.start(path, "Format", confirmed=Variant("b", True))
    await env.agent.wait_asked("extended-login")
    with pytest.raises(DBusError) as caught:
        await env.start(path, "Enroll")
    assert caught.value.type == ERROR_PREFIX + "Busy"
    assert (await _get_all(env.client, path, TOKEN_INTERFACE))["Job"] == job
    with pytest.raises(DBusError) as refreshing:
        await env.client.call(path, TOKEN_INTERFACE, "Refresh")
    assert refreshing.value.type == ERROR_PREFIX + "Busy"
    await env.client.cancel_job(job)
    assert (await env.completed(job)).state == CANCELED


async def test_tokens_in_other_readers_run_in_parallel(make_env: MakeEnv) -> None:
    env = await make_env()
    first = await env.insert(enrolled(), 0)
    second = await env.insert(enrolled(), 1)
    jobs = [await env.start(path, "Unblock") for path in (first, second)]
    done = await asyncio.gather(*(env.completed(job) for job in jobs))
    assert [view.result["error"] for view in done] == [ERROR_PREFIX + "NotSupported"] * 2


@pytest.mark.parametrize("method", ["ResetPin", "Renew", "Unblock"])
async def test_operations_for_enrolled_tokens_refuse_others(make_env: MakeEnv, method: str) -> None:
    env = await make_env()
    path = await env.insert(blank())
    with pytest.raises(DBusError) as caught:
        await env.start(path, method)
    assert caught.value.type == ERROR_PREFIX + "InvalidState"
    assert "enrolled" in caught.value.text


async def test_format_is_refused_when_policy_denies_it(make_env: MakeEnv) -> None:
    env = await make_env(config={"policy": {"deny_format": True}})
    path = await env.insert(blank())
    with pytest.raises(DBusError) as caught:
        await env.start(path, "Format")
    assert caught.value.type == ERROR_PREFIX + "NotSupported"


async def test_no_tps_url_is_not_configured(make_env: MakeEnv) -> None:
    env = await make_env(config={"tps": {"url": ""}})
    path = await env.insert(blank())
    with pytest.raises(DBusError) as caught:
        await env.start(path, "Enroll")
    assert caught.value.type == ERROR_PREFIX + "NotConfigured"
    # --tps for one run: the caller's URL wins.
    views = await env.run(
        path, "Format", tps_url=Variant("s", env.tps.url), confirmed=Variant("b", True)
    )
    assert error_of(views) == ""


@pytest.mark.parametrize(
    "options",
    [
        {"colour": Variant("s", "red")},
        {"handle_token": Variant("s", "has-dash")},
        {"handle_token": Variant("u", 7)},
        {"confirmed": Variant("b", True)},  # Enroll takes no confirmation
    ],
    ids=["unknown", "bad-token", "wrong-type", "format-only"],
)
async def test_bad_options_are_invalid_args(make_env: MakeEnv, options: dict[str, Variant]) -> None:
    env = await make_env()
    path = await env.insert(blank())
    with pytest.raises(DBusError) as caught:
        await env.start(path, "Enroll", **options)
    assert caught.value.type == ERROR_INVALID_ARGS


async def test_plain_http_tps_is_refused_unless_allowed(make_env: MakeEnv) -> None:
    env = await make_env(config={"tps": {"allow_http": []}})
    path = await env.insert(blank())
    with pytest.raises(DBusError) as caught:
        await env.start(path, "Format")
    assert caught.value.type == ERROR_PREFIX + "Network"


# -- agents --------------------------------------------------------------------------------


async def test_without_an_agent_the_job_fails_with_no_agent(make_env: MakeEnv) -> None:
    env = await make_env(register=False)
    path = await env.insert(blank())
    views = await env.run(path, "Format")
    assert error_of(views) == ERROR_PREFIX + "NoAgent"
    assert result_of(views)["status_source"] == "local" and result_of(views)["tps_status"] == 8
    assert env.state(path) is TokenState.NO_APPLET


async def test_default_agent_answers_for_other_clients(make_env: MakeEnv) -> None:
    env = await make_env(register=False)
    other = await MessageBus().connect()
    try:
        helper = ScriptedAgent()
        await register_agent(other, helper, default=True)
        path = await env.insert(blank())
        views = await env.run(path, "Format")
        assert error_of(views) == ""
        assert helper.kinds()[0] == "confirm-format"
    finally:
        other.disconnect()


async def test_an_agent_without_the_capability_is_not_asked(make_env: MakeEnv) -> None:
    env = await make_env(register=False)
    await register_agent(env.client.bus, env.agent, capabilities=("confirm",))
    path = await env.insert(blank())
    views = await env.run(path, "Format")
    assert error_of(views) == ERROR_PREFIX + "NoAgent"
    assert env.agent.kinds() == ["confirm-format"]  # the login needed text and secret


async def test_prompt_timeout_withdraws_the_prompt(make_env: MakeEnv) -> None:
    env = await make_env(
        config={"agent": {"prompt_timeout": 1}}, agent=ScriptedAgent(hang={"extended-login"})
    )
    path = await env.insert(blank())
    views = await env.run(path, "Format", confirmed=Variant("b", True))
    assert error_of(views) == ERROR_PREFIX + "Timeout"
    login = await env.agent.wait_asked("extended-login")
    await env.agent.wait_withdrawn(login.request_id)
    assert tps_connections(env.tps.port) == 0


async def test_declined_prompt_cancels_the_job(make_env: MakeEnv) -> None:
    env = await make_env(agent=ScriptedAgent(decline={"confirm-format"}))
    path = await env.insert(blank())
    views = await env.run(path, "Format")
    assert views[-1].state == CANCELED and error_of(views) == ERROR_PREFIX + "Canceled"
    assert len(env.tps.sessions) == 0  # nothing was sent to the TPS


async def test_agent_vanishing_mid_prompt_is_no_agent_and_it_is_dropped(
    make_env: MakeEnv,
) -> None:
    env = await make_env(register=False)
    agent_bus = await MessageBus().connect()
    agent = ScriptedAgent(hang={"new-pin"})
    await register_agent(agent_bus, agent, default=True)
    path = await env.insert(blank())
    job = await env.start(path, "Enroll")
    await agent.wait_asked("new-pin")
    agent_bus.disconnect()
    view = await env.completed(job)
    assert view.result["error"] == ERROR_PREFIX + "NoAgent"
    await env.wait(lambda: not env.daemon.agents.agents())
    assert tps_connections(env.tps.port) == 0


async def test_register_agent_rules(make_env: MakeEnv) -> None:
    env = await make_env(register=False)

    async def manager(member: str, signature: str, body: list[Any]) -> None:
        await env.client.call(MANAGER_PATH, MANAGER_INTERFACE, member, signature, body)

    with pytest.raises(DBusError) as caught:
        await manager("RegisterAgent", "oa{sv}", ["/a", {"capabilities": Variant("as", ["x"])}])
    assert caught.value.type == ERROR_INVALID_ARGS
    await manager("RegisterAgent", "oa{sv}", ["/a", {}])
    await manager("RegisterAgent", "oa{sv}", ["/b", {"default": Variant("b", True)}])
    (agent,) = env.daemon.agents.agents()  # one per connection: /b replaced /a
    assert (agent.path, agent.default) == ("/b", True)
    with pytest.raises(DBusError) as wrong:
        await manager("UnregisterAgent", "o", ["/a"])
    assert wrong.value.type == ERROR_INVALID_ARGS
    await manager("UnregisterAgent", "o", ["/b"])
    assert env.daemon.agents.agents() == []


# -- cancel and client vanishing -----------------------------------------------------------


async def test_cancel_during_a_prompt_withdraws_it(make_env: MakeEnv) -> None:
    env = await make_env(agent=ScriptedAgent(hang={"new-pin"}))
    path = await env.insert(blank())
    job = await env.start(path, "Enroll")
    request = await env.agent.wait_asked("new-pin")
    await env.client.cancel_job(job)
    view = await env.completed(job)
    assert view.state == CANCELED and view.result["error"] == ERROR_PREFIX + "Canceled"
    await env.agent.wait_withdrawn(request.request_id)
    assert tps_connections(env.tps.port) == 0
    assert env.tps.sessions[-1].end_op is None


async def test_a_client_that_leaves_cancels_its_job(make_env: MakeEnv) -> None:
    env = await make_env(register=False)
    starter = await EscdClient.connect()
    agent = ScriptedAgent(hang={"extended-login"})
    await register_agent(starter.bus, agent)
    path = await env.insert(blank())
    job = await starter.start_operation(path, "Format", {"confirmed": Variant("b", True)})
    await agent.wait_asked("extended-login")
    async with asyncio.timeout(TIMEOUT), env.client.watch_job(job) as watch:
        starter.close()
        async for view in watch.updates():
            if view.completed:
                assert view.result["error"] == ERROR_PREFIX + "Canceled"
                break


# -- the card pulled -------------------------------------------------------------------------


def is_generate_key(apdu: bytes, _n: int) -> bool:
    return len(apdu) > 1 and apdu[1] == INS_GENERATE_KEY


async def test_card_pulled_during_key_generation_is_token_removed(make_env: MakeEnv) -> None:
    env = await make_env()
    card = SimulatedCard(blank_card())
    path = await env.insert(card)
    assert error_of(await env.run(path, "Format", handle_token="f")) == ""
    env.backend.pull_before = is_generate_key
    views = await env.run(path, "Enroll", handle_token="e")
    assert error_of(views) == ERROR_PREFIX + "TokenRemoved"
    assert result_of(views)["status_source"] == "local"
    assert tps_connections(env.tps.port) == 0
    # The daemon lives on and reads the card again when it comes back.
    await env.wait(lambda: not _present(env.daemon, card.state.cuid.hex()))
    again = await env.insert(card)
    assert env.state(again) is TokenState.UNINITIALIZED


async def test_card_pulled_during_a_prompt_withdraws_it(make_env: MakeEnv) -> None:
    env = await make_env(agent=ScriptedAgent(hang={"new-pin"}))
    path = await env.insert(blank())
    job = await env.start(path, "Enroll")
    request = await env.agent.wait_asked("new-pin")
    async with asyncio.timeout(TIMEOUT), env.client.watch_job(job) as watch:
        env.readers.remove(env.reader)
        async for view in watch.updates():
            if view.completed:
                assert view.result["error"] == ERROR_PREFIX + "TokenRemoved"
                break
    await env.agent.wait_withdrawn(request.request_id)
    assert tps_connections(env.tps.port) == 0


@pytest.mark.parametrize("apdu", [1, 20])
async def test_card_pulled_at_apdu_n_is_token_removed(make_env: MakeEnv, apdu: int) -> None:
    env = await make_env()
    path = await env.insert(blank())
    env.backend.sent = 0
    env.backend.pull_before = lambda _apdu, n: n == apdu
    views = await env.run(path, "Format", confirmed=Variant("b", True))
    assert error_of(views) == ERROR_PREFIX + "TokenRemoved"
    assert tps_connections(env.tps.port) == 0


async def test_a_card_another_program_holds_fails_the_job_in_time(make_env: MakeEnv) -> None:
    env = await make_env(config={"pcsc": {"identify_timeout": 0.5}})
    path = await env.insert(blank())
    other = env.readers.connect(env.reader)  # another PC/SC user, inside a transaction
    other.begin_transaction()
    try:
        views = await env.run(path, "Format", confirmed=Variant("b", True))
        assert error_of(views) == ERROR_PREFIX + "Card"
        assert (result_of(views)["status_source"], result_of(views)["tps_status"]) == ("local", 8)
        assert len(env.tps.sessions) == 0
    finally:
        other.end_transaction()
        other.close()
    assert env.state(path) is TokenState.NO_APPLET
    views = await env.run(path, "Format", handle_token="again", confirmed=Variant("b", True))
    assert error_of(views) == ""


async def test_an_untrusted_tps_certificate_is_tls_untrusted_with_its_fingerprint_logged(
    make_env: MakeEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="escd.operation")
    env = await make_env(TpsConfig(tls=True))  # its CA is in no trust store of escd's
    path = await env.insert(blank())
    views = await env.run(path, "Format", confirmed=Variant("b", True))
    assert error_of(views) == ERROR_PREFIX + "TlsUntrusted"
    assert (result_of(views)["status_source"], result_of(views)["tps_status"]) == ("local", 47)
    assert any("not trusted (SHA-256 " in record.getMessage() for record in caplog.records)
    assert len(env.tps.sessions) == 0


# -- an untrusted TPS: the tls-trust prompt (ESC's "Add Exception") ----------------------------


@dataclasses.dataclass
class TrustAgent(ScriptedAgent):
    """A scripted agent with ``tls-trust``: ``before_trust`` runs before it answers one;
    ``reject_trust`` answers it with ``Agent.Error.Rejected``."""

    before_trust: Callable[[], None] | None = None
    reject_trust: bool = False

    async def answer(self, request: PromptRequest) -> dict[str, Answer]:
        if request.kind == "tls-trust":
            if self.before_trust is not None:
                self.before_trust()
            if self.reject_trust:
                self.requests.append(request)
                raise AgentCanceled("the user said no", rejected=True)
        return await super().answer(request)


async def trust_env(make_env: MakeEnv, agent: ScriptedAgent, **kwargs: Any) -> Env:
    """An untrusted TLS TPS (its CA is in no trust store of escd's) and ``agent`` with
    escctl's capabilities (``tls-trust`` included)."""
    env = await make_env(TpsConfig(tls=True), agent=agent, register=False, **kwargs)
    await register_agent(env.client.bus, agent, capabilities=ESCCTL_CAPABILITIES)
    return env


async def presented(env: Env) -> str:
    """The SHA-256 the simulated TPS presents now, fetched outside escd."""
    return fingerprint(await fetch_server_certificate("127.0.0.1", env.tps.port, TIMEOUT))


async def list_trust(env: Env) -> list[dict[str, Any]]:
    (entries,) = await env.client.call(MANAGER_PATH, MANAGER_INTERFACE, "ListTrust")
    listed: list[dict[str, Any]] = plain(entries)
    return listed


async def test_an_untrusted_tps_the_user_trusts_is_pinned_and_the_operations_succeed(
    make_env: MakeEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="escd.trustprompt")
    agent = TrustAgent()
    agent.answers["trust"] = True
    env = await trust_env(make_env, agent)
    shown = await presented(env)
    path = await env.insert(blank())
    views = await env.run(path, "Format", handle_token="fmt", confirmed=Variant("b", True))
    assert error_of(views) == "", result_of(views)
    assert 2 in [view.state for view in views]  # WaitingForInput while the user decided
    assert env.state(path) is TokenState.UNINITIALIZED
    ask = await agent.wait_asked("tls-trust")
    assert ask.job == env.client.job_path("fmt")
    where = f"127.0.0.1:{env.tps.port}"
    assert ask.title == f"Untrusted certificate from the TPS {where}"
    reason = "self-signed certificate in certificate chain"  # OpenSSL's words
    assert where in ask.description and reason in ask.description
    [(field)] = ask.fields
    assert (field.id, field.type, field.label) == ("trust", "bool", "Trust this server")
    cert = ask.certificate
    assert cert["host"] == "127.0.0.1" and cert["port"] == env.tps.port
    assert cert["fingerprint"] == shown and shown in field.description
    assert "CN=127.0.0.1" in cert["subject"] and cert["issuer"] != cert["subject"]
    assert 0 < cert["not_before"] < cert["not_after"]
    assert cert["reason"] == reason
    assert fingerprint(x509.load_der_x509_certificate(bytes(cert["der"]))) == shown
    # Pinned, exactly that certificate for that host and port, as PinServer does.
    [entry] = await list_trust(env)
    assert (entry["kind"], entry["host"], entry["port"]) == ("server", "127.0.0.1", env.tps.port)
    assert entry["fingerprint"] == shown and entry["subject"] == cert["subject"]
    events = [r.message for r in env.daemon.ring.recent() if r.kind == "trust"]
    assert events == [f"server pinned: {where} {shown} (accepted in a tls-trust prompt)"]
    assert any(f"the user trusted {where}" in r.getMessage() for r in caplog.records)
    # From now on the TPS is trusted: the enrollment asks nothing about it.
    views = await env.run(path, "Enroll", handle_token="enr")
    assert error_of(views) == "", result_of(views)
    assert env.state(path) is TokenState.ENROLLED
    assert agent.kinds().count("tls-trust") == 1


@pytest.mark.parametrize("how", ["false", "missing", "rejected"])
async def test_an_untrusted_tps_the_user_declines_is_tls_untrusted_and_nothing_is_pinned(
    make_env: MakeEnv, how: str
) -> None:
    agent = TrustAgent(reject_trust=how == "rejected")
    if how == "false":
        agent.answers["trust"] = False
    env = await trust_env(make_env, agent)
    path = await env.insert(blank())
    views = await env.run(path, "Format", confirmed=Variant("b", True))
    assert views[-1].state == FAILED and error_of(views) == ERROR_PREFIX + "TlsUntrusted"
    assert (result_of(views)["status_source"], result_of(views)["tps_status"]) == ("local", 47)
    assert agent.kinds() == ["tls-trust"]
    assert await list_trust(env) == []
    assert len(env.tps.sessions) == 0
    events = [r.message for r in env.daemon.ring.recent() if r.kind == "trust"]
    assert events == [f"not trusted by the user: 127.0.0.1:{env.tps.port} {await presented(env)}"]


async def test_an_agent_without_tls_trust_is_not_asked_about_an_untrusted_tps(
    make_env: MakeEnv,
) -> None:
    agent = TrustAgent()
    agent.answers["trust"] = True  # it would say yes, but it did not register tls-trust
    env = await make_env(TpsConfig(tls=True), agent=agent)  # escctl's default capabilities
    path = await env.insert(blank())
    views = await env.run(path, "Format", confirmed=Variant("b", True))
    assert error_of(views) == ERROR_PREFIX + "TlsUntrusted"
    assert "tls-trust" not in agent.kinds() and agent.kinds() == []
    assert await list_trust(env) == []


async def test_a_certificate_changed_after_the_prompt_is_tls_untrusted_not_trusted(
    make_env: MakeEnv, ca: CertificateAuthority, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="escd.operation")

    def swap_certificate() -> None:
        # The server now presents another certificate (same CA, new key): the next
        # connection gets it, the one the user was shown is gone.
        credentials = ca.server_credentials(["127.0.0.1"])
        (tmp_path / "key.pem").write_bytes(credentials.key_pem)
        (tmp_path / "cert.pem").write_bytes(credentials.certificate_pem)
        server = env.tps._server
        assert server is not None and server.ssl_context is not None
        server.ssl_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")

    agent = TrustAgent(before_trust=swap_certificate)
    agent.answers["trust"] = True
    env = await trust_env(make_env, agent)
    first = await presented(env)
    path = await env.insert(blank())
    views = await env.run(path, "Format", confirmed=Variant("b", True))
    assert error_of(views) == ERROR_PREFIX + "TlsUntrusted"
    second = await presented(env)
    assert second != first
    assert agent.kinds() == ["tls-trust"]  # asked once, never about the new certificate
    [entry] = await list_trust(env)
    assert entry["fingerprint"] == first  # what was shown, and nothing else
    messages = [record.getMessage() for record in caplog.records]
    assert any(second in m and "not the certificate pinned" in m for m in messages), messages
    assert len(env.tps.sessions) == 0


async def test_an_unanswered_tls_trust_prompt_times_out_and_is_withdrawn(
    make_env: MakeEnv,
) -> None:
    agent = TrustAgent(hang={"tls-trust"})
    env = await trust_env(make_env, agent, config={"agent": {"prompt_timeout": 1}})
    path = await env.insert(blank())
    views = await env.run(path, "Format", confirmed=Variant("b", True))
    assert error_of(views) == ERROR_PREFIX + "Timeout"
    ask = await agent.wait_asked("tls-trust")
    await agent.wait_withdrawn(ask.request_id)
    assert await list_trust(env) == []


# -- the TPS misbehaving ---------------------------------------------------------------------


@pytest.mark.parametrize("message", [1, 2, 12, 40])
async def test_tps_dropping_the_connection_is_a_named_error(
    make_env: MakeEnv, message: int
) -> None:
    env = await make_env(TpsConfig(tls=False, faults=Faults(drop_at_message=message)))
    path = await env.insert(blank())
    views = await env.run(path, "Format", confirmed=Variant("b", True))
    assert error_of(views) == ERROR_PREFIX + "Network"
    assert (result_of(views)["status_source"], result_of(views)["tps_status"]) == ("local", 28)
    assert env.state(path) in (TokenState.NO_APPLET, TokenState.UNINITIALIZED)


async def test_end_op_failure_reports_the_tps_status(make_env: MakeEnv) -> None:
    env = await make_env(TpsConfig(tls=False, faults=Faults(fail_status=23, fail_at_message=5)))
    path = await env.insert(blank())
    views = await env.run(path, "Format", confirmed=Variant("b", True))
    result = result_of(views)
    assert result["error"] == ERROR_PREFIX + "Tps"
    assert (result["tps_status"], result["status_source"]) == (23, "tps")
    assert "misconfiguration" in result["message"]


async def test_wrong_password_is_tps_14_and_leaves_the_token_as_it_was(make_env: MakeEnv) -> None:
    env = await make_env()
    card = blank()
    path = await env.insert(card)
    assert error_of(await env.run(path, "Format", handle_token="f")) == ""
    before = card.state.to_json()
    env.agent.answers["PASSWORD"] = "wrong"
    views = await env.run(path, "Enroll", handle_token="e")
    assert error_of(views) == ERROR_PREFIX + "Tps"
    assert (result_of(views)["tps_status"], result_of(views)["status_source"]) == (14, "tps")
    assert card.state.to_json() == before
    assert env.state(path) is TokenState.UNINITIALIZED


@pytest.mark.parametrize("method", ["Renew", "Unblock"])
async def test_renew_and_unblock_refused_by_the_java_tps_are_not_supported(
    make_env: MakeEnv, method: str
) -> None:
    env = await make_env()
    path = await env.insert(enrolled())
    views = await env.run(path, method)
    result = result_of(views)
    assert result["error"] == ERROR_PREFIX + "NotSupported"
    assert (result["tps_status"], result["status_source"]) == (0, "tps")
    assert "refused the operation" in result["message"]


async def test_operation_logs_carry_no_secrets(
    make_env: MakeEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(TRAFFIC, logger="escd")
    users = UserDirectory([User("jdoe", PASSWORD, "John Doe")])
    answers = {"UID": "jdoe", "PASSWORD": PASSWORD, "new_pin": "86420975", "confirm": True}
    agent = ScriptedAgent(answers=dict(answers))
    env = await make_env(agent=agent, users=users)
    path = await env.insert(blank())
    assert error_of(await env.run(path, "Format", handle_token="f")) == ""
    assert error_of(await env.run(path, "Enroll", handle_token="e")) == ""
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "TOKEN_PDU_REQUEST" in text and "jdoe" in text  # traffic was logged, redacted
    for secret in ("86420975", PASSWORD, "pdu_data=", "%84%04"):
        assert secret not in text, secret


async def _get_all(client: EscdClient, path: str, interface: str) -> dict[str, Any]:
    (props,) = await client.call(path, PROPERTIES_INTERFACE, "GetAll", "s", [interface])
    return dict(plain(props))


async def _add_match(client: EscdClient, rule: str) -> None:
    await client.call(DBUS_PATH, DBUS_INTERFACE, "AddMatch", "s", [rule], DBUS_NAME)


async def test_job_introspection_equals_the_shipped_xml(make_env: MakeEnv) -> None:
    env = await make_env()
    path = await env.insert(enrolled())
    await env.run(path, "Renew", handle_token="intro")
    (xml,) = await env.client.call(
        env.client.job_path("intro"), "org.freedesktop.DBus.Introspectable", "Introspect"
    )
    shipped = interfaces(SHIPPED.read_text())
    # dbus-fast writes direction="out" on signal arguments; the file (like gdbus) does not.
    node = ET.fromstring(xml)
    for signal in node.iter("signal"):
        for arg in signal:
            arg.attrib.pop("direction", None)
    live = interfaces(ET.tostring(node, encoding="unicode"))
    assert live[JOB_INTERFACE] == shipped[JOB_INTERFACE]
    (token_xml,) = await env.client.call(path, "org.freedesktop.DBus.Introspectable", "Introspect")
    assert interfaces(token_xml)[TOKEN_INTERFACE] == shipped[TOKEN_INTERFACE]
