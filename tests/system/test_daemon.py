# SPDX-License-Identifier: GPL-2.0-or-later
"""The whole daemon as a subprocess, on the private session bus, over the private pcscd.

One daemon serves most of this module (started with a card already in slot 0); tests
that need a daemon of their own (second instance, SIGTERM and sd_notify, D-Bus
activation, pcscd absent or refusing, no readers) start one on a bus of their own.
Clients are independent processes where the point is independence: busctl, gdbus,
dbus-send and escctl. Every wait is for an event with a timeout, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType

from escd import __version__
from escd.ctl.client import EscdClient, WatchEvent
from escd.dbus_service.names import (
    BUS_NAME,
    DBUS_INTERFACE,
    DBUS_NAME,
    DBUS_PATH,
    MANAGER_INTERFACE,
    MANAGER_PATH,
    OBJECT_MANAGER_INTERFACE,
    PROPERTIES_INTERFACE,
    TOKEN_INTERFACE,
    token_path,
)
from escd.readers import PcscState
from escd.sim.bus import PrivateBus
from escd.sim.card import SimulatedCard, enrolled_card, formatted_card
from escd.sim.pcscd import PrivatePcscd
from escd.sim.vpcd import VpcdCard
from tests.support.escd_process import (
    ESCD,
    ROOT,
    EscdProcess,
    environment,
    process_alive,
    run_escctl,
)

TIMEOUT = 5.0
PHONE_HOME = "https://tps.example.com:7443/tps/phoneHome"


# -- fixtures ---------------------------------------------------------------------------


class Cards:
    """The module's two simulated cards, one per vpcd slot."""

    def __init__(self, pcscd: PrivatePcscd) -> None:
        self.a = VpcdCard(SimulatedCard(enrolled_card(phone_home_url=PHONE_HOME)), pcscd.port)
        self.b = VpcdCard(SimulatedCard(formatted_card()), pcscd.port + 1)

    @staticmethod
    def cuid(card: VpcdCard) -> str:
        return card.card.state.cuid.hex()

    def close(self) -> None:
        self.a.remove()
        self.b.remove()


@pytest.fixture(scope="module")
def cards(pcscd: PrivatePcscd) -> Iterator[Cards]:
    pcscd.start()
    held = Cards(pcscd)
    yield held
    held.close()


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_text("pcsc:\n  reconnect_initial_delay: 0.1\n  reconnect_max_delay: 0.5\n")
    return path


@pytest.fixture(scope="module")
def env(pcscd: PrivatePcscd, session_bus: PrivateBus) -> dict[str, str]:
    return environment()


@pytest.fixture(scope="module")
def daemon(env: dict[str, str], cards: Cards, config_file: Path) -> Iterator[EscdProcess]:
    cards.a.insert()
    assert cards.a.seen.wait(TIMEOUT)  # pcscd knows the card before escd starts
    process = EscdProcess(env, ["--config", str(config_file)]).start()
    yield process
    assert process.stop() == 0, process.output()


class Watch:
    """``EscdClient.watch`` on its own connection, subscribed before the test acts."""

    def __init__(self) -> None:
        self.client: EscdClient | None = None
        self.events: AsyncIterator[WatchEvent] | None = None

    async def __aenter__(self) -> Watch:
        self.client = await EscdClient.connect()
        self.events = self.client.watch()
        first = await anext(self.events)
        assert first.kind == "subscribed"
        return self

    async def until(
        self, match: Callable[[WatchEvent], bool], timeout: float = TIMEOUT
    ) -> WatchEvent:
        assert self.events is not None
        async with asyncio.timeout(timeout):
            async for event in self.events:
                if match(event):
                    return event
        raise AssertionError("the watch ended")

    async def until_all(
        self, *matches: Callable[[WatchEvent], bool], timeout: float = TIMEOUT
    ) -> None:
        """Wait until every matcher has matched some event, in any order."""
        assert self.events is not None
        pending = list(matches)
        async with asyncio.timeout(timeout):
            async for event in self.events:
                pending = [match for match in pending if not match(event)]
                if not pending:
                    return
        raise AssertionError("the watch ended")

    async def __aexit__(self, *exc: object) -> None:
        if self.events is not None:
            await self.events.aclose()  # type: ignore[attr-defined]
        if self.client is not None:
            self.client.close()


def inserted(cuid: str) -> Callable[[WatchEvent], bool]:
    return lambda e: e.kind == "inserted" and e.token is not None and e.token.cuid == cuid


def removed(cuid: str) -> Callable[[WatchEvent], bool]:
    return lambda e: e.kind == "removed" and e.token is not None and e.token.cuid == cuid


def pcsc(state: PcscState) -> Callable[[WatchEvent], bool]:
    return lambda e: e.kind == "pcsc" and e.pcsc_state is state


class SnapshotCalls:
    """Counts the ``GetManagedObjects`` calls clients make to escd, seen by eavesdropping
    (the private bus allows it): a watching client asks for its starting state right
    after its match rules are in place, so from escd's answer on it misses nothing."""

    def __init__(self, client: EscdClient) -> None:
        self.client = client
        self._calls: asyncio.Queue[None] = asyncio.Queue()

    @classmethod
    async def start(cls) -> SnapshotCalls:
        calls = cls(await EscdClient.connect())
        calls.client.bus.add_message_handler(calls._handle)
        rule = (
            f"type='method_call',destination='{BUS_NAME}',member='GetManagedObjects',"
            f"interface='{OBJECT_MANAGER_INTERFACE}',eavesdrop='true'"
        )
        await calls.client.call(DBUS_PATH, DBUS_INTERFACE, "AddMatch", "s", [rule], DBUS_NAME)
        return calls

    def _handle(self, message: Message) -> bool:
        if message.message_type is not MessageType.METHOD_CALL:
            return False
        self._calls.put_nowait(None)
        return True  # a call to escd: never answered here

    async def wait_for(self, count: int) -> None:
        """Until ``count`` calls were made, then until escd has answered them (a call of
        our own is answered after those it received before)."""
        async with asyncio.timeout(TIMEOUT):
            for _ in range(count):
                await self._calls.get()
        await self.client.call(MANAGER_PATH, PROPERTIES_INTERFACE, "Get", "ss",
                               [MANAGER_INTERFACE, "Version"])  # fmt: skip

    def close(self) -> None:
        self.client.close()


def tool(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=15)


async def tokens_now() -> dict[str, Any]:
    client = await EscdClient.connect()
    try:
        snapshot = await client.snapshot()
    finally:
        client.close()
    return {token.cuid: token for token in snapshot.tokens.values()}


# -- the shared daemon ------------------------------------------------------------------


async def test_card_present_before_start_is_found(daemon: EscdProcess, cards: Cards) -> None:
    cuid = Cards.cuid(cards.a)
    daemon.wait_for(f"token {cuid} in .*: enrolled", TIMEOUT)
    token = (await tokens_now())[cuid]
    assert token.state.name == "ENROLLED"
    assert token.phone_home_url == PHONE_HOME
    assert len(token.certificates) == 1


async def test_inserted_card_appears_as_token_with_its_properties(
    daemon: EscdProcess, cards: Cards, pcscd: PrivatePcscd
) -> None:
    cuid = Cards.cuid(cards.b)
    async with Watch() as watch:
        cards.b.insert()
        event = await watch.until(inserted(cuid))
    token = event.token
    assert token is not None
    assert token.path == token_path(cuid)
    assert token.state.name == "UNINITIALIZED"
    assert token.applet.name == "COOLKEY"
    assert token.applet_version == (1, 1)
    assert token.atr == cards.b.card.atr.hex()
    assert token.reader_name == pcscd.readers[1]
    assert token.certificates == ()


async def test_two_readers_hold_two_tokens(daemon: EscdProcess, cards: Cards) -> None:
    tokens = await tokens_now()
    assert set(tokens) == {Cards.cuid(cards.a), Cards.cuid(cards.b)}
    assert len({token.reader for token in tokens.values()}) == 2


def test_independent_clients_read_token_properties(
    daemon: EscdProcess, cards: Cards, env: dict[str, str]
) -> None:
    cuid = Cards.cuid(cards.a)
    path = token_path(cuid)
    busctl = tool(env, "busctl", "--user", "get-property", BUS_NAME, path, TOKEN_INTERFACE, "Cuid")
    assert busctl.stdout.strip() == f's "{cuid}"', busctl.stderr
    tree = tool(env, "busctl", "--user", "tree", BUS_NAME)
    assert path in tree.stdout
    gdbus = tool(
        env, "gdbus", "call", "--session", "--dest", BUS_NAME, "--object-path", path,
        "--method", "org.freedesktop.DBus.Properties.Get", TOKEN_INTERFACE, "State",
    )  # fmt: skip
    assert gdbus.stdout.strip() == "(<uint32 3>,)", gdbus.stderr
    dbus_send = tool(
        env, "dbus-send", "--session", "--print-reply", f"--dest={BUS_NAME}", path,
        "org.freedesktop.DBus.Properties.Get", f"string:{TOKEN_INTERFACE}",
        "string:PhoneHomeUrl",
    )  # fmt: skip
    assert PHONE_HOME in dbus_send.stdout, dbus_send.stderr
    version = tool(
        env, "busctl", "--user", "get-property", BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE,
        "Version",
    )  # fmt: skip
    assert version.stdout.strip() == f's "{__version__}"'


def test_independent_clients_get_named_errors(daemon: EscdProcess, env: dict[str, str]) -> None:
    dbus_send = tool(
        env, "dbus-send", "--session", "--print-reply", f"--dest={BUS_NAME}", MANAGER_PATH,
        f"{MANAGER_INTERFACE}.FindToken", "string:0000ffff",
    )  # fmt: skip
    assert dbus_send.returncode != 0
    assert dbus_send.stderr.startswith("Error io.github.escd.Escd1.Error.NoSuchToken: ")
    gdbus = tool(
        env, "gdbus", "call", "--session", "--dest", BUS_NAME, "--object-path", MANAGER_PATH,
        "--method", f"{MANAGER_INTERFACE}.GetDiagnostics", "{'colour': <'red'>}",
    )  # fmt: skip
    assert gdbus.returncode != 0
    assert "org.freedesktop.DBus.Error.InvalidArgs" in gdbus.stderr
    assert "unknown option 'colour'" in gdbus.stderr
    busctl = tool(
        env, "busctl", "--user", "call", BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE,
        "FindToken", "s", "0000ffff",
    )  # fmt: skip
    assert busctl.returncode != 0
    assert "no token matches" in busctl.stderr


def test_escctl_list_and_info(daemon: EscdProcess, cards: Cards, env: dict[str, str]) -> None:
    a, b = Cards.cuid(cards.a), Cards.cuid(cards.b)
    listing = run_escctl(env, "list")
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line.split()[1] for line in listing.stdout.splitlines()[1:]}
    assert rows == {a: "enrolled", b: "uninitialized"}
    as_json = json.loads(run_escctl(env, "list", "--json").stdout)
    assert as_json["pcsc_state"] == "ok"
    assert {t["cuid"] for t in as_json["tokens"]} == {a, b}
    info = run_escctl(env, "info", a[:14])
    assert info.returncode == 0, info.stderr
    assert f"CUID:           {a}" in info.stdout
    assert f"Phone Home URL: {PHONE_HOME}" in info.stdout
    by_reader = json.loads(run_escctl(env, "info", "--json", cards_reader(daemon, b)).stdout)
    assert by_reader["cuid"] == b


def cards_reader(daemon: EscdProcess, cuid: str) -> str:
    line = daemon.wait_for(f"token {cuid} in ")
    return line.split(" in ", 1)[1].rsplit(":", 1)[0]


def test_escctl_unknown_or_ambiguous_token(daemon: EscdProcess, env: dict[str, str]) -> None:
    unknown = run_escctl(env, "info", "ffff0000")
    assert unknown.returncode == 4
    assert unknown.stderr == "escctl: no token matches 'ffff0000'\n"
    ambiguous = run_escctl(env, "info")
    assert ambiguous.returncode == 4
    assert "2 tokens are present" in ambiguous.stderr


async def test_escctl_watch_shows_a_pulled_card_disappear(
    daemon: EscdProcess, cards: Cards, env: dict[str, str]
) -> None:
    cuid = Cards.cuid(cards.b)
    snapshots = await SnapshotCalls.start()
    text = await asyncio.create_subprocess_exec(
        str(Path(ESCD).with_name("escctl")), "watch", env=env, stdout=asyncio.subprocess.PIPE
    )
    as_json = await asyncio.create_subprocess_exec(
        str(Path(ESCD).with_name("escctl")), "watch", "--json", env=env,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert text.stdout is not None and as_json.stdout is not None
    try:
        async with asyncio.timeout(TIMEOUT):
            assert b"watching escd" in await text.stdout.readline()
        # The JSON watch prints nothing until something happens. Each watch subscribes,
        # then asks for the starting state: once escd has answered both, the card goes.
        await snapshots.wait_for(2)
        cards.b.remove()
        async with asyncio.timeout(TIMEOUT):
            while True:
                line = (await text.stdout.readline()).decode()
                if "removed" in line and cuid in line:
                    break
        async with asyncio.timeout(TIMEOUT):
            while True:
                event = json.loads(await as_json.stdout.readline())
                if event["event"] == "removed":
                    assert event["token"]["cuid"] == cuid
                    break
        cards.b.insert()
        async with asyncio.timeout(TIMEOUT):
            while True:
                event = json.loads(await as_json.stdout.readline())
                if event["event"] == "inserted":
                    assert event["token"]["cuid"] == cuid
                    assert event["token"]["state"] == "uninitialized"
                    break
    finally:
        snapshots.close()
        for process in (text, as_json):
            process.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0


async def test_pcscd_killed_and_restarted_with_a_card_in(
    daemon: EscdProcess, cards: Cards, pcscd: PrivatePcscd
) -> None:
    cuid = Cards.cuid(cards.a)
    async with Watch() as watch:
        pcscd.kill()
        await watch.until_all(pcsc(PcscState.SERVICE_UNAVAILABLE), removed(cuid))
        pcscd.start()
        for card in (cards.a, cards.b):  # their vpcd connections died with pcscd
            card.remove()
            card.insert()
        await watch.until_all(pcsc(PcscState.OK), inserted(cuid))
    assert daemon.alive
    assert Cards.cuid(cards.a) in await tokens_now()


def test_second_instance_refuses_with_one_line(daemon: EscdProcess, env: dict[str, str]) -> None:
    second = subprocess.run([ESCD], env=env, capture_output=True, text=True, timeout=15)
    assert second.returncode == 3
    (line,) = second.stderr.splitlines()
    assert line.startswith("escd: escd is already running on this session bus")
    assert f"pid {daemon.pid}" in line
    assert daemon.alive


def test_sighup_with_a_broken_file_keeps_running(
    daemon: EscdProcess, config_file: Path, env: dict[str, str]
) -> None:
    good = config_file.read_text()
    mark = daemon.mark()
    config_file.write_text("pcsc:\n  reconnect_max_delay: forever\n")
    daemon.send(signal.SIGHUP)
    line = daemon.wait_for("configuration not reloaded", start=mark)
    assert f"{config_file}: pcsc.reconnect_max_delay: expected a number" in line
    assert daemon.alive
    busctl = tool(env, "busctl", "--user", "get-property", BUS_NAME, MANAGER_PATH,
                  MANAGER_INTERFACE, "Policy")  # fmt: skip
    assert '"hide_format" b false' in busctl.stdout
    config_file.write_text(good + "policy:\n  hide_format: true\n")
    mark = daemon.mark()
    daemon.send(signal.SIGHUP)
    daemon.wait_for("configuration reloaded", start=mark)
    busctl = tool(env, "busctl", "--user", "get-property", BUS_NAME, MANAGER_PATH,
                  MANAGER_INTERFACE, "Policy")  # fmt: skip
    assert '"hide_format" b true' in busctl.stdout
    config_file.write_text(good)


# -- daemons of their own ---------------------------------------------------------------


def test_version_option() -> None:
    result = subprocess.run([ESCD, "--version"], capture_output=True, text=True, timeout=15)
    assert (result.returncode, result.stdout) == (0, f"escd {__version__}\n")


@pytest.fixture
def own_bus() -> Iterator[PrivateBus]:
    with PrivateBus() as bus:
        yield bus


def own_env(bus: PrivateBus, **extra: str) -> dict[str, str]:
    env = environment()
    env.update(bus.env)
    env.update(extra)
    return env


def test_sigterm_stops_within_a_second_and_talks_to_systemd(
    pcscd: PrivatePcscd, own_bus: PrivateBus
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        notify_path = os.path.join(directory, "notify")
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(notify_path)
        receiver.settimeout(TIMEOUT)
        try:
            process = EscdProcess(own_env(own_bus, NOTIFY_SOCKET=notify_path)).start()
            ready = receiver.recv(4096).decode()
            assert "READY=1" in ready.splitlines()
            assert any(line.startswith("STATUS=pcscd ") for line in ready.splitlines())
            started = time.monotonic()
            assert process.stop(signal.SIGTERM, timeout=TIMEOUT) == 0
            assert time.monotonic() - started < 1.0
            messages = []
            while "STOPPING=1" not in messages:
                messages.extend(receiver.recv(4096).decode().splitlines())
        finally:
            receiver.close()


def test_a_stale_notify_socket_is_tolerated(pcscd: PrivatePcscd, own_bus: PrivateBus) -> None:
    process = EscdProcess(own_env(own_bus, NOTIFY_SOCKET="/nonexistent/notify")).start()
    assert process.stop() == 0
    assert "Traceback" not in process.output()


def test_escctl_without_a_daemon_or_a_bus(own_bus: PrivateBus) -> None:
    absent = run_escctl(own_env(own_bus), "list")
    assert absent.returncode == 3
    assert absent.stderr.startswith("escctl: escd is not running on this session bus")
    no_bus = run_escctl(own_env(own_bus, DBUS_SESSION_BUS_ADDRESS="unix:path=/nonexistent"), "list")
    assert no_bus.returncode == 3
    assert no_bus.stderr.startswith("escctl: cannot connect to the session bus")


def test_dbus_activation_starts_the_daemon_on_first_call(
    pcscd: PrivatePcscd, own_bus: PrivateBus
) -> None:
    shipped = (ROOT / "dbus" / f"{BUS_NAME}.service").read_text()
    # The bus gives activated services its own environment: hand over the private pcscd.
    command = f"/usr/bin/env PCSCLITE_CSOCK_NAME={pcscd.socket_path} {ESCD}"
    lines = [
        f"Exec={command}" if line.startswith("Exec=") else line for line in shipped.splitlines()
    ]
    (own_bus.services_dir / f"{BUS_NAME}.service").write_text("\n".join(lines) + "\n")
    env = own_env(own_bus)
    version = tool(env, "busctl", "--user", "get-property", BUS_NAME, MANAGER_PATH,
                   MANAGER_INTERFACE, "Version")  # fmt: skip
    assert version.stdout.strip() == f's "{__version__}"', version.stderr
    status = tool(env, "busctl", "--user", "status", BUS_NAME)
    pid = int(next(line for line in status.stdout.splitlines() if line.startswith("PID="))[4:])
    assert run_escctl(env, "list").returncode == 0
    # Losing its bus makes the activated daemon exit by itself.
    pidfd = os.pidfd_open(pid)
    try:
        own_bus.stop()
        readable, _, _ = select.select([pidfd], [], [], TIMEOUT)
        assert readable, "the activated escd did not exit when its bus went away"
    finally:
        os.close(pidfd)
    assert not process_alive(pid)


class DenyingPcscd:
    """A pcscd socket that refuses every client the way pcscd's polkit check does.

    pcscd accepts the connection, reads the client's first message while polkit decides,
    then closes it: the client library reports ``SCARD_F_COMM_ERROR``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(8)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with client:
                client.recv(64)

    def close(self) -> None:
        self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()


async def pcsc_state_of(env: dict[str, str], wanted: PcscState) -> None:
    client = await EscdClient.connect(env["DBUS_SESSION_BUS_ADDRESS"])
    try:
        events = client.watch()
        await anext(events)
        snapshot = await client.snapshot()
        if snapshot.manager.pcsc_state is not wanted:
            async with asyncio.timeout(TIMEOUT):
                async for event in events:
                    if event.kind == "pcsc" and event.pcsc_state is wanted:
                        break
        await events.aclose()  # type: ignore[attr-defined]
    finally:
        client.close()


async def test_pcscd_absent_or_refusing_is_reported(own_bus: PrivateBus, tmp_path: Path) -> None:
    denying = DenyingPcscd(tmp_path / "pcscd.comm")
    try:
        for socket_path, state in (
            (str(tmp_path / "absent.comm"), PcscState.SERVICE_UNAVAILABLE),
            (str(denying.path), PcscState.ACCESS_DENIED),
        ):
            env = own_env(own_bus, PCSCLITE_CSOCK_NAME=socket_path)
            with EscdProcess(env).start() as process:
                await pcsc_state_of(env, state)
                listing = run_escctl(env, "list")
                assert listing.returncode == 0
                assert "warning: pcscd" in listing.stderr
                assert process.alive
    finally:
        denying.close()


async def test_pcscd_without_readers_is_no_readers(own_bus: PrivateBus) -> None:
    with PrivatePcscd(reader_name="none") as empty:
        empty.stop()
        (empty.conf_dir / "vpcd").unlink()
        empty.start()
        env = own_env(own_bus, **empty.env)
        with EscdProcess(env).start():
            await pcsc_state_of(env, PcscState.NO_READERS)


JOURNAL_SCRIPT = """
set -e
mkdir -p /run/systemd /run/log
mount -t tmpfs tmpfs /run/systemd
mount -t tmpfs tmpfs /run/log
# Keep the host's persistent journal out of reach too.
if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
# journald would answer NOTIFY_SOCKET itself: that socket is escd's.
env -u NOTIFY_SOCKET /lib/systemd/systemd-journald &
journal=$!
for _ in $(seq 200); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
"$ESCD" --config "$CONFIG" &
escd=$!
trap 'kill -TERM $escd' TERM
wait $escd || wait $escd || true
journalctl --no-pager -o json SYSLOG_IDENTIFIER=escd > "$OUT"
kill $journal
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/lib/systemd/systemd-journald").exists(),
    reason="a private journald needs root (mount namespace) and systemd-journald",
)
async def test_journal_gets_structured_fields(
    cards: Cards, own_bus: PrivateBus, tmp_path: Path
) -> None:
    """Under systemd escd logs to journald with ESCD_TOKEN_CUID."""
    cuid = Cards.cuid(cards.a)
    cards.a.insert()  # no-op when it is in already
    config = tmp_path / "config.yaml"
    config.write_text("log:\n  target: journal\n")
    out = tmp_path / "journal.json"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(15)
    env = own_env(
        own_bus, ESCD=ESCD, CONFIG=str(config), OUT=str(out), NOTIFY_SOCKET=str(tmp_path / "notify")
    )
    script = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", JOURNAL_SCRIPT],
        env=env, start_new_session=True,
    )  # fmt: skip
    try:
        with notify:
            assert "READY=1" in notify.recv(4096).decode()
        client = await EscdClient.connect(own_bus.address)
        try:
            events = client.watch()
            await anext(events)
            if cuid not in {t.cuid for t in (await client.snapshot()).tokens.values()}:
                async with asyncio.timeout(15):
                    async for event in events:
                        if inserted(cuid)(event):
                            break
            await events.aclose()  # type: ignore[attr-defined]
        finally:
            client.close()
    finally:
        script.send_signal(signal.SIGTERM)
        assert script.wait(15) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    token = [r for r in records if r.get("ESCD_TOKEN_CUID") == cuid]
    assert token, records
    assert cuid in token[0]["MESSAGE"] and token[0]["PRIORITY"] == "6"
    assert token[0]["LOGGER"] == "escd.cardwatch"
    assert any("is ready on the session bus" in r["MESSAGE"] for r in records)
