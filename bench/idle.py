# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark: escd idle cost, start-up time and insertion latency, in one run.

Starts a private pcscd (two vpcd readers) and a private session bus, puts a simulated
enrolled card in the first reader, starts ``escd`` and measures:

* start-up: from exec to the bus name being owned (budget 0.5 s), with the bytecode
  compiled as in an installed escd: a first, unjudged start writes it into a private
  cache (``PYTHONPYCACHEPREFIX``), also where ``PYTHONDONTWRITEBYTECODE`` is set;
* idle: the daemon's CPU seconds (user + system, all threads) and RSS over ``--seconds``
  (default 30) with two readers and a card present (budget: CPU ~0, RSS < 40 MB);
* insertion latency: a card goes into the second reader ``--insertions`` times; for
  each, the time from the insertion to pyscard's own ``SCardGetStatusChange`` event (in
  this process) and to ``InterfacesAdded`` on the bus, and their difference and ratio
  (budget: InterfacesAdded within 20 ms of pyscard's event). Both clocks start at the
  same insertion, so pcscd's 400 ms presence poll cancels out of the difference.

Prints a report; not a test (nothing here asserts). Run: ``make bench`` or
``.venv/bin/python bench/idle.py [--seconds N] [--insertions N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dbus_fast import Message, MessageType  # noqa: E402
from dbus_fast.aio import MessageBus  # noqa: E402

from escd.dbus_service.names import (  # noqa: E402
    BUS_NAME,
    OBJECT_MANAGER_INTERFACE,
    ROOT_PATH,
    TOKEN_INTERFACE,
)
from escd.sim.bus import PrivateBus  # noqa: E402
from escd.sim.card import SimulatedCard, enrolled_card  # noqa: E402
from escd.sim.pcscd import PrivatePcscd  # noqa: E402
from escd.sim.vpcd import VpcdCard  # noqa: E402

ESCD = str(Path(sys.executable).with_name("escd"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PyscardWatcher:
    """pyscard's own view of one reader: the time of every insertion it reports."""

    def __init__(self, reader: str) -> None:
        from smartcard import scard

        self.scard = scard
        self.reader = reader
        _, self.context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        _, states = scard.SCardGetStatusChange(
            self.context, 0, [(reader, scard.SCARD_STATE_UNAWARE)]
        )
        self.state = states[0][1] & ~scard.SCARD_STATE_CHANGED
        self.inserted_at: list[float] = []
        self.event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        scard = self.scard
        while True:
            hresult, states = scard.SCardGetStatusChange(
                self.context, 0xFFFFFFFF, [(self.reader, self.state)]
            )
            if hresult != scard.SCARD_S_SUCCESS:
                return
            now = time.monotonic()
            new = states[0][1]
            if new & scard.SCARD_STATE_PRESENT and not self.state & scard.SCARD_STATE_PRESENT:
                self.inserted_at.append(now)
                self.event.set()
            self.state = new & ~scard.SCARD_STATE_CHANGED

    def close(self) -> None:
        self.scard.SCardCancel(self.context)
        self.thread.join(2)
        self.scard.SCardReleaseContext(self.context)


class BusWatcher:
    """The bus side: when the escd name is owned, when a token object is added."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.added: asyncio.Queue[float] = asyncio.Queue()
        self.removed: asyncio.Queue[float] = asyncio.Queue()
        self.owned: asyncio.Queue[float] = asyncio.Queue()
        bus.add_message_handler(self._handle)

    @classmethod
    async def connect(cls, address: str) -> BusWatcher:
        bus = await MessageBus(bus_address=address).connect()
        watcher = cls(bus)
        for rule in (
            f"type='signal',path='{ROOT_PATH}',interface='{OBJECT_MANAGER_INTERFACE}'",
            f"type='signal',member='NameOwnerChanged',arg0='{BUS_NAME}'",
        ):
            await bus.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member="AddMatch",
                    signature="s",
                    body=[rule],
                )
            )
        return watcher

    def _handle(self, message: Message) -> None:
        if message.message_type is not MessageType.SIGNAL:
            return
        now = time.monotonic()
        if message.member == "InterfacesAdded" and TOKEN_INTERFACE in message.body[1]:
            self.added.put_nowait(now)
        elif message.member == "InterfacesRemoved" and TOKEN_INTERFACE in message.body[1]:
            self.removed.put_nowait(now)
        elif message.member == "NameOwnerChanged" and message.body[2]:
            self.owned.put_nowait(now)


async def measure(seconds: float, insertions: int) -> None:
    with PrivatePcscd(reader_name="Bench") as pcscd, PrivateBus() as bus:
        os.environ.update(pcscd.env)
        env = dict(os.environ, **pcscd.env, **bus.env)
        present = VpcdCard(SimulatedCard(enrolled_card()), pcscd.port_for(0))
        present.insert()
        present.seen.wait(5)
        watcher = await BusWatcher.connect(bus.address)

        # An installed escd starts from compiled bytecode. A source tree run with
        # PYTHONDONTWRITEBYTECODE (CI sandboxes set it) compiles every module at every
        # start instead, which is not escd's start-up. So a first start writes the
        # bytecode into a private cache (its time is shown, not judged); the measured
        # start reads it, as an installed daemon would.
        cache = tempfile.mkdtemp(prefix="escd-bench-pycache-")
        env["PYTHONPYCACHEPREFIX"] = cache
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        started = time.monotonic()
        first = subprocess.Popen(
            [ESCD, "--log-level", "warning"], env=env, stdin=subprocess.DEVNULL
        )
        try:
            owned = await asyncio.wait_for(watcher.owned.get(), 15)
            await asyncio.wait_for(watcher.added.get(), 15)
        finally:
            first.terminate()
            first.wait(10)
        await asyncio.wait_for(watcher.removed.get(), 15)  # its token left with it
        print(f"first start, compiling bytecode: {(owned - started) * 1000:.0f} ms")

        started = time.monotonic()
        daemon = subprocess.Popen(
            [ESCD, "--log-level", "warning"], env=env, stdin=subprocess.DEVNULL
        )
        try:
            owned = await asyncio.wait_for(watcher.owned.get(), 15)
            await asyncio.wait_for(watcher.added.get(), 15)  # the card already present
            print(f"start-up to bus name owned: {(owned - started) * 1000:.0f} ms (budget 500)")

            # The idle window starts after start-up work (the first identification) is
            # done: that is what the token object on the bus says.
            cpu_before = cpu_seconds(daemon.pid)
            await asyncio.sleep(seconds)
            cpu = cpu_seconds(daemon.pid) - cpu_before
            print(
                f"idle {seconds:.0f} s, 2 readers, 1 card: CPU {cpu:.3f} s "
                f"({cpu / seconds * 100:.3f} % of a core), RSS {rss_mib(daemon.pid):.1f} MiB "
                f"(budget: CPU ~0, RSS < 40)"
            )

            pyscard = PyscardWatcher(pcscd.readers[1])
            card = VpcdCard(SimulatedCard(enrolled_card()), pcscd.port_for(1))
            rows = []
            for _ in range(insertions):
                pyscard.event.clear()
                inserted = time.monotonic()
                card.insert()
                on_bus = await asyncio.wait_for(watcher.added.get(), 15)
                await asyncio.to_thread(pyscard.event.wait, 15)
                seen = pyscard.inserted_at[-1]
                rows.append((seen - inserted, on_bus - inserted))
                card.remove()
                # The next insertion only once escd (hence pcscd) has seen this removal.
                await asyncio.wait_for(watcher.removed.get(), 15)
            pyscard.close()
            deltas = [bus_t - pcsc_t for pcsc_t, bus_t in rows]
            ratios = [bus_t / pcsc_t for pcsc_t, bus_t in rows if pcsc_t > 0]
            print(f"insertion latency over {insertions} insertions (ms from insertion):")
            print(
                f"  pyscard event      median {statistics.median(r[0] for r in rows) * 1000:6.1f}"
                f"  max {max(r[0] for r in rows) * 1000:6.1f}"
            )
            print(
                f"  InterfacesAdded    median {statistics.median(r[1] for r in rows) * 1000:6.1f}"
                f"  max {max(r[1] for r in rows) * 1000:6.1f}"
            )
            print(
                f"  difference         median {statistics.median(deltas) * 1000:6.1f}"
                f"  max {max(deltas) * 1000:6.1f}   (budget 20; includes identifying an "
                "enrolled card)"
            )
            print(f"  ratio bus/pyscard  median {statistics.median(ratios):6.2f}")
        finally:
            daemon.terminate()
            daemon.wait(10)
            present.remove()
            watcher.bus.disconnect()
            shutil.rmtree(cache, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="idle period (default 30)")
    parser.add_argument("--insertions", type=int, default=10, help="insertions (default 10)")
    args = parser.parse_args()
    asyncio.run(measure(args.seconds, args.insertions))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
