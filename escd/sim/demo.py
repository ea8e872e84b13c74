# SPDX-License-Identifier: GPL-2.0-or-later
"""``escd-sim demo``: the whole chain on simulated hardware, end to end, in under a minute.

Starts a private session bus, a private pcscd with the vpcd driver, the simulated TPS
over TLS and the real ``escd`` (a subprocess with its own configuration and state
directories), trusts the TPS's CA with ``escctl trust import``, inserts a blank
simulated card, and then, each step announced in one line: waits for escd to phone
home, formats the card, enrolls it as the demo user with a demo PIN (printed: they are
the simulator's published demo values), shows ``escctl info`` and ``pkcs11-tool -O``
(OpenSC reading the new certificate), resets the PIN, and removes the card. Every step
is done by a separate ``escctl`` (or ``pkcs11-tool``) process, exactly as a user would
type it; the demo waits for escd's D-Bus signals between steps, never for a fixed time.

Everything is torn down at the end, on the first failure and on Ctrl-C or SIGTERM; the
exit status is 0 only when every step worked. ``--non-interactive`` (CI) never waits
for the user; otherwise the demo offers to keep everything running at the end, with
the commands to explore it from another terminal.

Must not: touch the user's own session bus, pcscd, configuration or state; print a
secret other than the published demo password and PINs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEMO_USER = "demo"
DEMO_PASSWORD = "demo"  # noqa: S105 - the simulated TPS's published demo login
DEMO_PIN = "123456"
DEMO_NEW_PIN = "654321"
EVENT_TIMEOUT = 30.0
STEP_TIMEOUT = 60.0
TOTAL_STEPS = 12
OPENSC_MODULES = (
    Path("/usr/lib/x86_64-linux-gnu/pkcs11/opensc-pkcs11.so"),
    Path("/usr/lib/aarch64-linux-gnu/pkcs11/opensc-pkcs11.so"),
    Path("/usr/lib/pkcs11/opensc-pkcs11.so"),
    Path("/usr/lib64/pkcs11/opensc-pkcs11.so"),
)


class DemoError(Exception):
    """A step failed; the message says which and why."""


def configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the whole chain on simulated hardware: a private bus and pcscd, the simulated "
        "TPS over TLS, the real escd, and a blank card that escd phones home for, formats, "
        "enrolls (user demo, PIN printed), shows, resets the PIN of and sees removed."
    )
    parser.add_argument(
        "--non-interactive",
        action="store_true",
        help="never wait for the user (for CI); tear everything down at once at the end",
    )
    parser.add_argument(
        "--keep-dir", type=Path, help="work in this directory and keep it (logs, state)"
    )


def run_demo(args: argparse.Namespace) -> int:
    previous = signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    try:
        with _work_dir(args.keep_dir) as root:
            demo = Demo(root, interactive=not args.non_interactive)
            try:
                asyncio.run(demo.run())
            except DemoError as err:
                print(f"\nescd-sim demo: FAILED: {err}", file=sys.stderr, flush=True)
                demo.show_logs()
                return 1
            except KeyboardInterrupt:
                print("\nescd-sim demo: interrupted; tearing down", flush=True)
                return 130
            finally:
                demo.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"demo finished in {time.monotonic() - started:.1f} s", flush=True)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _work_dir(keep: Path | None) -> Any:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="escd-demo-") as name:
        yield Path(name)


def opensc_module() -> Path | None:
    for path in OPENSC_MODULES:
        if path.is_file():
            return path
    return None


class Demo:
    """One demo run in ``root``: the environment, the steps and the teardown."""

    def __init__(self, root: Path, *, interactive: bool) -> None:
        self.root = root
        self.interactive = interactive
        self.step_number = 0
        self.env: dict[str, str] = {}
        self._cleanups: list[Callable[[], None]] = []
        self._daemon: subprocess.Popen[bytes] | None = None
        self.daemon_log = root / "escd.log"

    # -- presentation ---------------------------------------------------------------------

    def step(self, text: str) -> None:
        self.step_number += 1
        print(f"[{self.step_number:2}/{TOTAL_STEPS}] {text}", flush=True)

    @staticmethod
    def show(text: str) -> None:
        for line in text.rstrip().splitlines():
            print(f"        {line}", flush=True)

    def show_logs(self) -> None:
        if self.daemon_log.exists():
            tail = self.daemon_log.read_text(errors="replace").splitlines()[-30:]
            print("last lines of the escd log:", file=sys.stderr)
            for line in tail:
                print(f"  {line}", file=sys.stderr)

    # -- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        """Undo everything, newest first; never raises."""
        while self._cleanups:
            cleanup = self._cleanups.pop()
            try:
                cleanup()
            except Exception as exc:  # teardown goes on whatever one part does
                print(f"escd-sim demo: teardown: {exc}", file=sys.stderr)

    # -- tools ----------------------------------------------------------------------------

    async def tool(self, *argv: str, show: bool = True, input_text: str = "") -> str:
        """Run a command-line tool in the demo's environment; its output, or DemoError."""
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if input_text else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
        )
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                output, _ = await process.communicate(input_text.encode() or None)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise DemoError(f"{shlex.join(argv)} did not finish in {STEP_TIMEOUT:g} s") from None
        text = output.decode("utf-8", "replace")
        if show:
            self.show(text)
        if process.returncode != 0:
            if not show:
                self.show(text)
            raise DemoError(f"{shlex.join(argv)} exited with status {process.returncode}")
        return text

    def escctl(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).parent / "escctl"), *args]

    # -- the run --------------------------------------------------------------------------

    async def run(self) -> None:
        from escd.sim.bus import BusError, PrivateBus
        from escd.sim.pcscd import PcscdError, PrivatePcscd

        print(f"escd demo: everything runs privately under {self.root}", flush=True)
        self.step("starting a private D-Bus session bus")
        bus = PrivateBus(self.root / "bus")
        try:
            bus.start()
        except BusError as err:
            raise DemoError(str(err)) from err
        self._cleanups.append(bus.stop)

        self.step("starting a private pcscd with the vpcd driver (two virtual readers)")
        pcscd = PrivatePcscd(self.root / "pcscd", reader_name="escd demo")
        try:
            pcscd.start()
        except PcscdError as err:
            raise DemoError(str(err)) from err
        self._cleanups.append(pcscd.stop)
        home = self.root / "home"
        self.env = {
            **os.environ,
            **bus.env,
            **pcscd.env,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
        }
        for variable in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "INVOCATION_ID"):
            self.env.pop(variable, None)

        from escd.sim.tps import SimulatedTps
        from escd.sim.tps_config import TokenPolicy, TpsConfig

        self.step("starting the simulated Dogtag TPS over TLS (users: demo/demo)")
        tps = SimulatedTps(
            TpsConfig(default_policy=TokenPolicy.parse("PIN_RESET=YES"), key_size=1024),
            state_dir=self.root / "tps",
        )
        await tps.start()
        try:
            await self._with_tps(tps, pcscd)
        finally:
            await tps.stop()

    async def _with_tps(self, tps: Any, pcscd: Any) -> None:
        from escd.ctl.client import EscdClient
        from escd.sim.card import SimulatedCard, blank_card
        from escd.sim.vpcd import VpcdCard

        self.show(f"TPS {tps.url}\nphone home {tps.phone_home_url}")
        config = self.root / "escd.yaml"
        config.write_text(
            "phone_home:\n"
            f"  global_url: {tps.phone_home_url}\n"
            "  prompt_for_url: false\n"
            "notifications:\n"
            "  enabled: off\n"
        )
        self.step("starting escd on the private bus")
        client = await EscdClient.connect(self.env["DBUS_SESSION_BUS_ADDRESS"])
        self._cleanups.append(client.close)
        events = _Signals(client)
        await events.subscribe()
        mark = events.mark()
        self._start_daemon(config)
        await events.wait_for(_daemon_started, mark)
        await self.tool(*self.escctl("list"))

        self.step("trusting the TPS's CA: escctl trust import --yes ca-cert.pem")
        await self.tool(*self.escctl("trust", "import", "--yes", str(tps.ca_certificate_path)))

        self.step("inserting a blank simulated card; escd reads it and phones home")
        card = SimulatedCard(blank_card(), path=self.root / "card.json")
        vpcd = VpcdCard(card, pcscd.port_for(0))
        mark = events.mark()
        vpcd.insert()
        self._cleanups.append(vpcd.remove)
        added = await events.wait_for(_token_added, mark)
        path = str(added.body[0])
        cuid = card.state.cuid.hex()
        await events.wait_for(_phone_home_done(path), mark)
        await self.tool(*self.escctl("info", cuid))

        secrets = self.root / "secrets"
        secrets.mkdir(mode=0o700, exist_ok=True)
        password = secrets / "password"
        password.write_text(DEMO_PASSWORD + "\n")
        pin = secrets / "pin"
        pin.write_text(DEMO_PIN + "\n")
        new_pin = secrets / "new-pin"
        new_pin.write_text(DEMO_NEW_PIN + "\n")
        login = ["--user", DEMO_USER, "--password-file", str(password)]

        self.step("formatting the card (the TPS installs the CoolKey applet)")
        await self.tool(*self.escctl("format", cuid, "--yes", *login))

        self.step(f"enrolling the card as user {DEMO_USER!r} with PIN {DEMO_PIN}")
        await self.tool(*self.escctl("enroll", cuid, *login, "--pin-file", str(pin)))

        self.step("escctl info: the enrolled token")
        info = await self.tool(*self.escctl("info", cuid))
        if "enrolled" not in info:
            raise DemoError("escctl info does not show the token as enrolled")

        module = opensc_module()
        if module is None:
            raise DemoError("OpenSC (opensc-pkcs11.so) is not installed")
        self.step("pkcs11-tool -O (OpenSC) lists the new certificate and keys")
        listing = await self.tool("pkcs11-tool", "--module", str(module), "-O")
        if "Certificate Object" not in listing:
            raise DemoError("pkcs11-tool does not list a certificate")

        self.step(f"resetting the PIN to {DEMO_NEW_PIN}")
        await self.tool(*self.escctl("reset-pin", cuid, *login, "--pin-file", str(new_pin)))

        self.step("removing the card")
        mark = events.mark()
        vpcd.remove()
        await events.wait_for(_token_removed(path), mark)
        await self.tool(*self.escctl("list"))

        if self.interactive and sys.stdin.isatty():
            self._offer_to_explore(pcscd)

    def _start_daemon(self, config: Path) -> None:
        escd = str(Path(sys.executable).parent / "escd")
        log = open(self.daemon_log, "ab")
        self._daemon = subprocess.Popen(
            [escd, "--config", str(config), "--log-level", "info"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        self._cleanups.append(self._stop_daemon)

    def _stop_daemon(self) -> None:
        daemon, self._daemon = self._daemon, None
        if daemon is None or daemon.poll() is not None:
            return
        daemon.terminate()
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()

    def _offer_to_explore(self, pcscd: Any) -> None:
        address = shlex.quote(self.env["DBUS_SESSION_BUS_ADDRESS"])
        print(
            "\nThe demo's bus, pcscd, TPS and escd are still running. In another terminal:\n"
            f"  export DBUS_SESSION_BUS_ADDRESS={address}\n"
            f"  export PCSCLITE_CSOCK_NAME={shlex.quote(str(pcscd.socket_path))}\n"
            f"  {Path(sys.executable).parent / 'escctl'} diagnose\n"
            "Press Enter to tear everything down.",
            flush=True,
        )
        with contextlib.suppress(EOFError):
            input()


class _Signals:
    """escd's signals on the demo's client connection, waited for with a timeout."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.messages: list[Any] = []
        self._changed = asyncio.Condition()

    async def subscribe(self) -> None:
        from dbus_fast import MessageType

        from escd.dbus_service.names import BUS_NAME, DBUS_INTERFACE, DBUS_NAME, DBUS_PATH

        def handle(message: Any) -> None:
            if message.message_type is MessageType.SIGNAL:
                self.messages.append(message)
                asyncio.get_running_loop().create_task(self._notify())

        self._client.bus.add_message_handler(handle)
        for rule in (
            f"type='signal',sender='{BUS_NAME}'",
            f"type='signal',sender='{DBUS_NAME}',member='NameOwnerChanged',arg0='{BUS_NAME}'",
        ):
            await self._client.call(DBUS_PATH, DBUS_INTERFACE, "AddMatch", "s", [rule], DBUS_NAME)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def mark(self) -> int:
        return len(self.messages)

    async def wait_for(self, match: Callable[[Any], bool], start: int) -> Any:
        def found() -> Any:
            return next((m for m in self.messages[start:] if match(m)), None)

        try:
            async with asyncio.timeout(EVENT_TIMEOUT), self._changed:
                await self._changed.wait_for(lambda: found() is not None)
        except TimeoutError:
            raise DemoError(
                f"escd did not signal what was expected in {EVENT_TIMEOUT:g} s"
            ) from None
        return found()


def _daemon_started(message: Any) -> bool:
    return message.member == "NameOwnerChanged" and bool(message.body[2])


def _token_added(message: Any) -> bool:
    from escd.dbus_service.names import TOKEN_INTERFACE

    return message.member == "InterfacesAdded" and TOKEN_INTERFACE in message.body[1]


def _token_removed(path: str) -> Callable[[Any], bool]:
    return lambda m: m.member == "InterfacesRemoved" and m.body[0] == path


#: PhoneHomeState values after which phone home is over: FromCache, Fetched, Failed, NoUrl.
_PHONE_HOME_DONE = {2, 3, 4, 5}


def _phone_home_done(path: str) -> Callable[[Any], bool]:
    def match(message: Any) -> bool:
        if message.member != "PropertiesChanged" or message.path != path:
            return False
        state = message.body[1].get("PhoneHomeState")
        return state is not None and state.value in _PHONE_HOME_DONE

    return match
